"""Node leases: one synchronizer per node at a time, across every process and machine.

A lease is taken by one conditional UPDATE whose rowcount decides, renewed while the session
works and released when it ends. Whoever takes a lease next (the sweep after a worker died, an
admin forcing or cancelling) first closes what the previous owner left running, with a
sentence saying what happened and who acted.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Collection
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Concat

from nodes.models import Node
from sync.clock import db_bool, db_now, db_now_plus, read_db_now
from sync.engine.failures import fail_desync
from sync.engine.tally import count_runs
from sync.engine.transient import retry_on_transient_errors
from sync.errors import FailureKind
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun

log = logging.getLogger("sync")


def new_worker_id(role: str = "worker") -> str:
    """A lease owner name that says where the work runs and is unique per session."""
    # Within the 100 characters of lease_owner and syncrun.worker, whoever the role names.
    return f"{role[:40]}@{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


def _lease_until() -> Combinable:
    return db_now_plus(settings.SYNC["lease_seconds"])


def free_lease(through: str = "") -> Q:
    """A lease nobody holds, or whose holder stopped renewing it (on the database's clock);
    ``through``: the path to the node (``"node__"`` from its desynchronizations)."""
    return Q(**{f"{through}lease_until__isnull": True}) | Q(
        **{f"{through}lease_until__lt": db_now()}
    )


@retry_on_transient_errors
def claim_node(
    node_id: int,
    worker: str,
    *,
    force: bool = False,
    recover: bool = False,
    acted_by: str = "",
    cancel: bool = False,
) -> bool:
    """Take the node's lease; True when this worker now runs the node.

    One conditional UPDATE decides, so it is correct across any number of processes and
    machines on SQLite and MariaDB alike. Whatever a previous owner left processing is
    recovered at once: it is ours to redo now (or, with ``cancel``, to fail and retry after
    its backoff). A lease that was released leaves nothing behind, so recovery is skipped
    then (``recover`` asks for it anyway: the sweep's orphans).
    """
    previous = (
        Node.objects.filter(pk=node_id)
        .annotate(live=db_bool(Q(lease_until__gt=db_now())))
        .values("lease_owner", "lease_until", "live")
        .first()
    )
    if previous is None:
        return False
    qs = Node.objects.filter(pk=node_id)
    if not force:
        qs = qs.filter(free_lease())
    if qs.update(lease_owner=worker, lease_until=_lease_until(), current_action_id=None) != 1:
        return False
    if not previous["lease_owner"] and not recover:
        return True
    recover_interrupted_runs(
        node_id,
        worker,
        forced=force and bool(previous["live"]),
        previous_owner=previous["lease_owner"],
        previous_until=previous["lease_until"],
        acted_by=acted_by,
        cancel=cancel,
    )
    return True


@retry_on_transient_errors
def renew_lease(node_id: int, worker: str) -> bool:
    """Extend the lease; False when another worker took it (forced) and we must stop."""
    return (
        Node.objects.filter(pk=node_id, lease_owner=worker).update(lease_until=_lease_until()) == 1
    )


@retry_on_transient_errors
def renew_leases(held: Collection[tuple[int, str]]) -> set[tuple[int, str]]:
    """Extend each (node, worker) lease the worker still holds, in one UPDATE; return the pairs
    still held (read after the UPDATE: a lease an admin took meanwhile is not ours any more)."""
    if not held:
        return set()
    mine = Q()
    for node_id, worker in held:
        mine |= Q(pk=node_id, lease_owner=worker)
    Node.objects.filter(mine).update(lease_until=_lease_until())
    return held_leases(held)


@retry_on_transient_errors
def held_leases(held: Collection[tuple[int, str]]) -> set[tuple[int, str]]:
    """The (node, worker) pairs whose worker still holds the node's lease: one read for many
    sessions, cheap enough to notice a cancel or a takeover within seconds."""
    owners = dict(
        Node.objects.filter(pk__in={node_id for node_id, _ in held}).values_list(
            "pk", "lease_owner"
        )
    )
    return {(node_id, worker) for node_id, worker in held if owners.get(node_id) == worker}


@retry_on_transient_errors
def release_node(node_id: int, worker: str) -> None:
    """Let the node go, only if this worker still holds it: a worker that was taken over must
    not free its successor's lease."""
    Node.objects.filter(pk=node_id, lease_owner=worker).update(
        lease_owner="", lease_until=None, current_action_id=None
    )


@retry_on_transient_errors
def recover_interrupted_runs(
    node_id: int,
    worker: str,
    *,
    forced: bool = False,
    previous_owner: str = "",
    previous_until: datetime | None = None,
    acted_by: str = "",
    cancel: bool = False,
) -> int:
    """Put back to pending what a previous lease owner left running; return how many runs.

    Called only by the new lease owner, so every run still marked running on this node is
    someone else's. Each one is closed with a sentence saying what happened and who acted.
    A cancelled run's type is held instead (``DesyncState.HELD``): cancel means stop, and
    running it again by itself would hang again.
    """
    runs = SyncRun.objects.filter(node_id=node_id, outcome=Outcome.RUNNING)
    if cancel:
        outcome = Outcome.CANCELLED
        why = (
            f"Cancelled by {acted_by or 'an admin'}: the run of {previous_owner or 'a worker'} "
            "was ended; the type is held until someone retries or forces it, or its data "
            "changes: it does not start again by itself."
        )
    elif forced:
        outcome = Outcome.FORCED
        why = (
            f"Forced to complete: {worker} took the node over from {previous_owner or 'nobody'} "
            f"(lease until {_fmt(previous_until)}); the type goes back to pending and runs again."
        )
    else:
        outcome = Outcome.LOST
        why = (
            f"Lost: the lease of {previous_owner or 'its worker'} expired at "
            f"{_fmt(previous_until)} (the worker died or hung); recovered by {worker}, "
            "the type goes back to pending and runs again."
        )
    with transaction.atomic(savepoint=False):  # no savepoint inside in_one_transaction
        if not Node.objects.filter(pk=node_id, lease_owner=worker).exists():
            return 0
        interrupted = list(
            runs.select_related("action").values_list(
                "pk", "action__name", "action_id", "generation", "started_at"
            )
        )
        if not interrupted:
            # Rows can be left processing without a run only by a crash between two writes.
            Node2Sync.objects.filter(node_id=node_id, state=DesyncState.PROCESSING).update(
                state=DesyncState.PENDING, next_attempt_at=db_now(), started_at=None, worker=""
            )
            return 0
        runs.update(
            outcome=outcome,
            finished_at=db_now(),
            log=Concat(F("log"), Value("\n" + why)),
            acted_by=acted_by,
        )
        now = read_db_now()
        count_runs(
            (name, outcome, (now - started).total_seconds())
            for _, name, _, _, started in interrupted
        )
        processing = Node2Sync.objects.filter(node_id=node_id, state=DesyncState.PROCESSING)
        if cancel:
            generations = {action_id: gen for _, _, action_id, gen, _ in interrupted}
            _fail_cancelled(
                node_id, processing, f"cancelled by {acted_by or 'an admin'}", generations
            )
        else:
            processing.update(
                state=DesyncState.PENDING, next_attempt_at=db_now(), started_at=None, worker=""
            )
    node_name = Node.objects.filter(pk=node_id).values_list("name", flat=True).first()
    for _, action_name, _, _, _ in interrupted:
        log.warning(
            "sync %s node=%s type=%s worker=%s %s",
            outcome,
            node_name,
            action_name,
            previous_owner,
            why,
        )
    return len(interrupted)


def _fail_cancelled(node_id: int, rows, error: str, generations: dict[int, int]) -> None:
    """Cancelled rows fail like a failed run (``failures``), held rather than backed off.

    ``generations`` maps each type to the generation its cancelled run started with: a type
    registered again since then runs again at once, as after any failure.
    """
    for row_id, action_id, generation, title, name in rows.values_list(
        "pk", "action_id", "generation", "action__title", "action__name"
    ):
        started = generations.get(action_id, generation)
        fail_desync(node_id, row_id, started, name, title, error, FailureKind.FAILED, held=True)


def _fmt(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else "unknown"


def recover_expired_leases() -> int:
    """Recover nodes whose lease expired (their worker died); return how many nodes."""
    expired = set(Node.objects.filter(lease_until__lt=db_now()).values_list("pk", flat=True))
    orphaned = set(
        Node2Sync.objects.filter(state=DesyncState.PROCESSING)
        .filter(Q(node__lease_until__isnull=True) | Q(node__lease_until__lt=db_now()))
        .values_list("node_id", flat=True)
    )
    recovered = 0
    sweeper = new_worker_id("sweeper")
    for node_id in sorted(expired | orphaned):
        if claim_node(node_id, sweeper, recover=True):
            release_node(node_id, sweeper)
            recovered += 1
    return recovered


@retry_on_transient_errors
def holds_lease(node_id: int, worker: str) -> bool:
    """Whether this worker still holds the lease: a read, cheap enough to notice a cancel or a
    takeover within seconds between renewals."""
    return Node.objects.filter(pk=node_id, lease_owner=worker).exists()

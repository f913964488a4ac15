"""The synchronization engine: every rule of the mechanism, in one place.

Nothing else writes ``node2sync`` or the node lease. The rules:

- Registering a desynchronization is an idempotent upsert; a row that is running gets its
  generation bumped so the finishing run cannot delete the newer desynchronization.
- A node's status is recomputed in the same transaction as every change to its rows.
- One synchronizer per node at a time: a worker runs a node only while it holds the node's
  lease, taken by one conditional UPDATE (rowcount decides), renewed while it works.
- A session runs the node's rows in priority order over one transport, and stops at the first
  failure: order is a dependency, later types wait.
- Failures back off exponentially (capped, jittered); a run past its type's timeout is
  cancelled and recorded as ``timeout``.
- Every time that workers compare (leases, backoff, "due now") is the database server's,
  computed inside the SQL (``sync.clock``): machines' clocks differ, the database's is shared.
- An expired lease (dead worker) is recovered: its rows go back to pending and its runs are
  recorded as ``lost``; a lease taken by force records them as ``forced``.

Database bookkeeping is plain synchronous code; the conversation with nodes is coroutines, so
one worker drives many node sessions on one event loop while they wait on the network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q, Value, Window
from django.db.models.expressions import Combinable
from django.db.models.functions import Concat, RowNumber

from nodes.models import Node
from nodes.transports import CommandFailed, Transport, TransportError, open_transport
from sync import conditions
from sync.clock import db_now, db_now_plus, read_db_now
from sync.context import RunContext
from sync.errors import FailureKind, describe_failure, printable, short
from sync.models import DesyncState, Node2Sync, Outcome, SyncAction, SyncRun, recompute_status
from sync.synchronizers import REGISTRY
from sync.watch import RunWatch, WatchedTransport, publish

log = logging.getLogger("sync")

# Errors after which the whole transaction was rolled back, so running it again is safe:
# MariaDB deadlock (1213) and lock wait timeout (1205) at once; a lost connection (server
# restarted: 2006 gone away, 2013 lost during query, 2002/2003 cannot connect) after a pause,
# for up to about a minute, on a new connection.
_CONTENTION_ERRORS = {1213, 1205}
_CONNECTION_ERRORS = {2002, 2003, 2006, 2013}
_CONNECTION_RETRY_SECONDS = 60


def _conf(key: str) -> int:
    return settings.SYNC[key]


def new_worker_id(role: str = "worker") -> str:
    """A lease owner name that says where the work runs and is unique per session."""
    # Within the 100 characters of lease_owner and syncrun.worker, whoever the role names.
    return f"{role[:40]}@{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


def retry_on_transient_errors(fn: Callable) -> Callable:
    """Run an engine transaction again after a deadlock or a lost database connection.

    Only outside the caller's own transaction: inside it, the caller's work was rolled back too
    and only the caller can redo it.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        deadline = time.monotonic() + _CONNECTION_RETRY_SECONDS
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except (OperationalError, InterfaceError) as e:
                attempt += 1
                code = e.args[0] if e.args else None
                if connection.in_atomic_block:
                    raise
                if code in _CONTENTION_ERRORS and attempt < 6:
                    time.sleep(0.05 * attempt * random.random())
                elif (
                    code in _CONNECTION_ERRORS or isinstance(e, InterfaceError)
                ) and time.monotonic() < deadline:
                    log.warning("database connection lost (%s); retrying %s", e, fn.__name__)
                    connection.close()
                    time.sleep(min(0.5 * attempt, 5))
                elif "database is locked" in str(e) and attempt < 6:
                    time.sleep(0.1 * attempt)
                else:
                    raise

    return wrapper


def _ids(objs: Iterable[Node | SyncAction | int]) -> list[int]:
    return sorted({o if isinstance(o, int) else o.pk for o in objs})


# --- Registration ---------------------------------------------------------------------------


@retry_on_transient_errors
def register_desync(
    nodes: Iterable[Node | int], actions: Iterable[SyncAction | int] | None = None
) -> int:
    """Mark ``nodes`` out of sync for ``actions`` (every type when None); return the pair count.

    Safe to call inside the caller's transaction (the data change and its desynchronization
    commit together). The nodes' sessions are started when the transaction commits.
    """
    node_ids = _ids(nodes)
    action_ids = _ids(actions) if actions is not None else _ids(SyncAction.objects.all())
    if not node_ids or not action_ids:
        return 0
    now = read_db_now()
    with transaction.atomic():
        # Lock the nodes first, in id order, as claiming and finishing do: one lock order
        # everywhere keeps MariaDB from deadlocking registrations against running sessions.
        list(Node.objects.select_for_update().filter(pk__in=node_ids).order_by("pk").values("pk"))
        rows = Node2Sync.objects.filter(node_id__in=node_ids, action_id__in=action_ids)
        rows.filter(state=DesyncState.PROCESSING).update(
            generation=F("generation") + 1, registered_at=now
        )
        rows.exclude(state=DesyncState.PROCESSING).update(
            state=DesyncState.PENDING, attempts=0, next_attempt_at=now, registered_at=now
        )
        Node2Sync.objects.bulk_create(
            [
                Node2Sync(node_id=n, action_id=a, registered_at=now, next_attempt_at=now)
                for n in node_ids
                for a in action_ids
            ],
            ignore_conflicts=True,
            batch_size=500,
        )
        recompute_status(Node.objects.filter(pk__in=node_ids))
        transaction.on_commit(lambda: kick(node_ids))
    return len(node_ids) * len(action_ids)


def kick(node_ids: Iterable[int]) -> None:
    """Enqueue node sessions on the django-q cluster, in batches that share one event loop.

    At least one batch per worker (when there are that many nodes), so a small registration
    still uses every worker's core; at most ``batch_size`` nodes per batch.
    """
    from sync.queue import enqueue_calls

    node_ids = list(node_ids)
    if not node_ids:
        return
    batches = max(settings.Q_CLUSTER["workers"], -(-len(node_ids) // _conf("batch_size")))
    batches = min(batches, len(node_ids))
    enqueue_calls("sync.tasks.run_node_sessions", [(node_ids[i::batches],) for i in range(batches)])


# --- Leases ---------------------------------------------------------------------------------


def _lease_until() -> Combinable:
    return db_now_plus(_conf("lease_seconds"))


def _free_lease() -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=db_now())


def _is(condition: Q) -> ExpressionWrapper:
    """A condition evaluated by the database (on its clock), as a selectable boolean."""
    return ExpressionWrapper(condition, output_field=BooleanField())


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
        .annotate(live=_is(Q(lease_until__gt=db_now())))
        .values("lease_owner", "lease_until", "live")
        .first()
    )
    if previous is None:
        return False
    qs = Node.objects.filter(pk=node_id)
    if not force:
        qs = qs.filter(_free_lease())
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
def release_node(node_id: int, worker: str) -> None:
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
    A cancelled run's type fails instead and waits for its backoff: running it again at once
    would hang again.
    """
    runs = SyncRun.objects.filter(node_id=node_id, outcome=Outcome.RUNNING)
    if cancel:
        outcome = Outcome.CANCELLED
        why = (
            f"Cancelled by {acted_by or 'an admin'}: the run of {previous_owner or 'a worker'} "
            "was ended; the type waits for its retry and is not started again at once."
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
    with transaction.atomic():
        if not Node.objects.filter(pk=node_id, lease_owner=worker).exists():
            return 0
        interrupted = list(
            runs.select_related("action").values_list("pk", "action__name", "action__title")
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
        processing = Node2Sync.objects.filter(node_id=node_id, state=DesyncState.PROCESSING)
        if cancel:
            _fail_cancelled(node_id, processing, f"cancelled by {acted_by or 'an admin'}")
        else:
            processing.update(
                state=DesyncState.PENDING, next_attempt_at=db_now(), started_at=None, worker=""
            )
    node_name = Node.objects.filter(pk=node_id).values_list("name", flat=True).first()
    for _, action_name, _ in interrupted:
        log.warning(
            "sync %s node=%s type=%s worker=%s %s",
            outcome,
            node_name,
            action_name,
            previous_owner,
            why,
        )
    return len(interrupted)


def _fail_cancelled(node_id: int, rows, error: str) -> None:
    """Cancelled rows fail like a failed run: attempts + 1, backoff, the reason kept."""
    now = read_db_now()
    for row_id, attempts, title, name in rows.values_list(
        "pk", "attempts", "action__title", "action__name"
    ):
        Node2Sync.objects.filter(pk=row_id).update(
            state=DesyncState.FAILED,
            attempts=attempts + 1,
            next_attempt_at=db_now_plus(backoff_seconds(attempts + 1)),
            last_error=error,
            started_at=None,
            worker="",
        )
        Node.objects.filter(pk=node_id).update(
            current_action_id=None, last_error=f"{title}: {error}"
        )
        conditions.after_failure(node_id, name, title, FailureKind.FAILED, error, now)


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


# --- Running one type -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunTicket:
    desync_id: int
    run_id: int
    node_id: int
    action: SyncAction
    generation: int


def backoff_seconds(attempts: int) -> float:
    """Delay before retry number ``attempts``: exponential, capped, with jitter.

    The jitter ("equal jitter": between half and all of the step) spreads the retries of many
    nodes that failed together, e.g. after a network outage.
    """
    step = min(_conf("backoff_cap_seconds"), _conf("backoff_base_seconds") * 2 ** (attempts - 1))
    return step / 2 + random.uniform(0, step / 2)


@retry_on_transient_errors
def start_next_run(
    node_id: int,
    worker: str,
    *,
    action_ids: list[int] | None = None,
    ignore_backoff: bool = False,
    ignore_maintenance: bool = False,
) -> RunTicket | None:
    """Mark the node's next desynchronization processing and open its run; None when done.

    The next one is the first in priority order. If it waits for a retry, nothing runs: the
    types after it depend on it. A node put in maintenance meanwhile runs nothing more: the
    admin's switch takes effect before the next type, not after the session.
    """
    with transaction.atomic():
        if not renew_lease(node_id, worker):
            return None
        if not ignore_maintenance and Node.objects.filter(pk=node_id, maintenance=True).exists():
            return None
        rows = (
            Node2Sync.objects.filter(node_id=node_id)
            .exclude(state=DesyncState.PROCESSING)
            .select_related("action")
            .annotate(due=_is(Q(next_attempt_at__lte=db_now())))
            .order_by("action__priority", "action_id")
        )
        if action_ids is not None:
            rows = rows.filter(action_id__in=action_ids)
        row = rows.first()
        if row is None or (not ignore_backoff and not row.due):
            return None
        Node2Sync.objects.filter(pk=row.pk).update(
            state=DesyncState.PROCESSING, started_at=db_now(), worker=worker
        )
        Node.objects.filter(pk=node_id).update(current_action_id=row.action_id)
        run = SyncRun.objects.create(
            node_id=node_id,
            action=row.action,
            worker=worker,
            started_at=db_now(),
            generation=row.generation,
        )
    return RunTicket(row.pk, run.pk, node_id, row.action, row.generation)


@retry_on_transient_errors
def finish_run(
    ticket: RunTicket,
    worker: str,
    outcome: Outcome,
    log_text: str,
    error: str,
    *,
    kind: FailureKind = FailureKind.FAILED,
    detail: str = "",
) -> bool:
    """Record the run's end and its effect on the row and the node; False if the lease was lost.

    ``error`` is the short text for the row, the node and the list; ``detail`` the whole
    error, kept in the run's log only. A lost lease means another worker took the node over
    (``nodesync --force``): it already closed this run and owns the row now, so nothing here
    may touch them.
    """
    error = short(error) if error else ""
    cap = _conf("log_cap_chars")
    if error or detail:
        shown = f"ERROR: {error}"
        if detail and detail.strip() != error:
            if len(detail) > cap:
                detail = detail[: cap // 2] + "\n[... error cut ...]\n" + detail[-cap // 2 :]
            shown += f"\n{printable(detail)}"
        log_text = f"{log_text}\n{shown}" if log_text else shown
    if len(log_text) > cap:
        log_text = log_text[: cap // 2] + "\n[... log cut ...]\n" + log_text[-cap // 2 :]
    with transaction.atomic():
        if not renew_lease(ticket.node_id, worker):
            return False
        SyncRun.objects.filter(pk=ticket.run_id).update(
            finished_at=db_now(),
            outcome=outcome,
            log=log_text,
            current_command="",
            current_output="",
        )
        row = Node2Sync.objects.filter(pk=ticket.desync_id)
        node = Node.objects.filter(pk=ticket.node_id)
        if outcome == Outcome.SUCCESS:
            if not row.filter(generation=ticket.generation).delete()[0]:
                # Registered again while it ran: newer data waits, run it again.
                row.update(
                    state=DesyncState.PENDING,
                    attempts=0,
                    next_attempt_at=db_now(),
                    started_at=None,
                    worker="",
                    last_error="",
                )
            still_failing = (
                Node2Sync.objects.filter(node_id=ticket.node_id, state=DesyncState.FAILED)
                .order_by("action__priority", "action_id")
                .values_list("action__name", "action__title", "last_error")
                .first()
            )
            cleared = {} if still_failing else {"last_error": ""}
            done = dict(current_action_id=None, last_sync_at=db_now(), **cleared)
            # The common case, a node with nothing wrong, in one UPDATE; conditions to clear
            # (or a type still failing to name) take the conditions' read and write.
            fine = node.filter(condition="", contact_failed_since__isnull=True).update(
                last_contact_at=db_now(), **done
            )
            if not fine or still_failing:
                node.update(**done)
                conditions.after_success(
                    ticket.node_id,
                    read_db_now(),
                    still_failing
                    and (still_failing[0], conditions.failing_message(*still_failing[1:])),
                )
        else:
            attempts = (row.values_list("attempts", flat=True).first() or 0) + 1
            failed = dict(attempts=attempts, last_error=error, started_at=None, worker="")
            if not row.filter(generation=ticket.generation).update(
                state=DesyncState.FAILED,
                next_attempt_at=db_now_plus(backoff_seconds(attempts)),
                **failed,
            ):
                # Registered again while it failed: the newer data may be the fix, run it now.
                row.update(state=DesyncState.PENDING, next_attempt_at=db_now(), **failed)
            node.update(current_action_id=None, last_error=f"{ticket.action.title}: {error}")
            conditions.after_failure(
                ticket.node_id, ticket.action.name, ticket.action.title, kind, error, read_db_now()
            )
        recompute_status(node)
    return True


@retry_on_transient_errors
def save_progress(run_id: int, worker: str, command: str, log_text: str, output: str) -> None:
    """Publish a running run's current command, its output and the log so far (``sync.watch``)."""
    SyncRun.objects.filter(pk=run_id, worker=worker, outcome=Outcome.RUNNING).update(
        current_command=command, log=log_text, current_output=output
    )


@retry_on_transient_errors
def has_due_work(node_id: int) -> bool:
    row = (
        Node2Sync.objects.filter(node_id=node_id, node__maintenance=False)
        .annotate(due=_is(Q(next_attempt_at__lte=db_now())))
        .order_by("action__priority", "action_id")
        .values("state", "due")
        .first()
    )
    return row is not None and row["state"] != DesyncState.PROCESSING and bool(row["due"])


# --- Node sessions --------------------------------------------------------------------------


@dataclass
class RunReport:
    """What a finished run tells the caller (``nodesync`` prints these as progress)."""

    node: str
    action: str
    outcome: Outcome
    seconds: float
    error: str


@dataclass
class SessionResult:
    node: Node
    claimed: bool = False
    completed: int = 0
    failed: bool = False
    lease_lost: bool = False
    budget_spent: bool = False


ProgressCallback = Callable[[RunReport], None]


def _db(fn: Callable) -> Callable:
    return sync_to_async(fn, thread_sensitive=True)


class _Connection:
    """The session's one transport, opened by the first run that needs it."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.transport: Transport | None = None
        self._watched: WatchedTransport | None = None

    async def get(self) -> Transport:
        if self.transport is None:
            self.transport = await open_transport(self.node)
        return self.transport

    async def watched(self, watch: RunWatch) -> WatchedTransport:
        """The transport as synchronizers see it: the same object for the whole session."""
        transport = await self.get()
        if self._watched is None or self._watched.transport is not transport:
            self._watched = WatchedTransport(transport, watch)
        self._watched.watch = watch
        return self._watched

    async def close(self) -> None:
        if self.transport is not None:
            transport, self.transport = self.transport, None
            try:
                await transport.close()
            except Exception:  # noqa: BLE001 - a broken connection must not hide the result
                log.debug("closing the transport of %s failed", self.node.name, exc_info=True)


@dataclass(frozen=True)
class Execution:
    """What one run of a synchronizer came to."""

    outcome: Outcome
    log: str
    error: str = ""  # short, for the row, the node and the list
    kind: FailureKind = FailureKind.FAILED
    detail: str = ""  # the whole error, for the run's log


# What a synchronizer raises when the node or the data says no: an expected failure, told in
# one line; anything else is a bug in the synchronizer, logged with its traceback.
EXPECTED_FAILURES = (TransportError, ValueError)


async def _execute(
    ticket: RunTicket, ctx_node: Node, conn: _Connection, watch: RunWatch
) -> Execution:
    """Run one synchronizer within its timeout; a failed run's log keeps what its last command
    printed (the reason a hung ``apt-get`` hangs is in its output)."""
    execution = await _run_type(ticket, ctx_node, conn, watch)
    note = watch.failure_note() if execution.outcome != Outcome.SUCCESS else ""
    if note:
        log_text = f"{execution.log}\n{note}" if execution.log else note
        execution = dataclasses.replace(execution, log=log_text)
    return execution


async def _run_type(
    ticket: RunTicket, ctx_node: Node, conn: _Connection, watch: RunWatch
) -> Execution:
    sync_type = REGISTRY.get(ticket.action.name)
    lines = watch.lines
    if sync_type is None:
        return Execution(
            Outcome.FAILED, "", f"type {ticket.action.name} has no code in this version"
        )
    timeout = ticket.action.timeout
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            transport = await conn.watched(watch)
            ctx = RunContext(node=ctx_node, transport=transport, lines=lines)
            await sync_type.run(ctx)
    except TimeoutError as e:
        await conn.close()  # the connection may be stuck mid-command
        if deadline.expired():
            error = f"timed out after {timeout} s"
            if watch.interrupted:
                error += f" while running `{watch.interrupted[:120]}`"
            return Execution(Outcome.TIMEOUT, "\n".join(lines), error, FailureKind.TIMEOUT)
        kind, error = describe_failure(e)
        return Execution(Outcome.FAILED, "\n".join(lines), error, kind, str(e))
    except EXPECTED_FAILURES as e:
        kind, error = describe_failure(e)
        detail = e.stderr if isinstance(e, CommandFailed) and e.stderr else str(e)
        return Execution(Outcome.FAILED, "\n".join(lines), error, kind, detail)
    except Exception as e:  # noqa: BLE001 - a synchronizer's bug fails its run, not the worker
        log.exception("synchronizer %s crashed on %s", ticket.action.name, ctx_node.name)
        error = f"the {ticket.action.title} synchronizer failed unexpectedly: {short(str(e))}"
        return Execution(Outcome.FAILED, "\n".join(lines), error, FailureKind.FAILED)
    return Execution(Outcome.SUCCESS, "\n".join(lines))


@retry_on_transient_errors
def holds_lease(node_id: int, worker: str) -> bool:
    return Node.objects.filter(pk=node_id, lease_owner=worker).exists()


async def _keep_lease(node_id: int, worker: str, lost: asyncio.Event) -> None:
    """Renew the lease, and notice soon when an admin took it (cancel, force).

    Renewing is a write, so it happens every third of the lease; checking who holds it is a
    cheap read, every ``cancel_check_seconds``, so a cancelled run ends within seconds.
    """
    renew_every = max(_conf("lease_seconds") / 3, 0.2)
    check_every = min(renew_every, float(settings.SYNC.get("cancel_check_seconds", 2)))
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(check_every)
        if time.monotonic() - renewed >= renew_every:
            held = await _db(renew_lease)(node_id, worker)
            renewed = time.monotonic()
        else:
            held = await _db(holds_lease)(node_id, worker)
        if not held:
            lost.set()
            return


async def _run_claimed(
    node: Node,
    worker: str,
    result: SessionResult,
    *,
    action_ids: list[int] | None,
    ignore_backoff: bool,
    ignore_maintenance: bool,
    progress: ProgressCallback | None,
) -> None:
    lost = asyncio.Event()
    heartbeat = asyncio.create_task(_keep_lease(node.pk, worker, lost))
    conn = _Connection(node)
    deadline = time.monotonic() + _conf("session_budget_seconds")
    try:
        while time.monotonic() < deadline:
            ticket = await _db(start_next_run)(
                node.pk,
                worker,
                action_ids=action_ids,
                ignore_backoff=ignore_backoff,
                ignore_maintenance=ignore_maintenance,
            )
            if ticket is None:
                return
            log.info("sync start node=%s type=%s worker=%s", node.name, ticket.action.name, worker)
            started = time.monotonic()
            watch = RunWatch([])
            publisher = asyncio.create_task(
                publish(
                    watch,
                    functools.partial(_db(save_progress), ticket.run_id, worker),
                    _conf("log_cap_chars"),
                )
            )
            run = asyncio.create_task(_execute(ticket, node, conn, watch))
            lost_wait = asyncio.create_task(lost.wait())
            await asyncio.wait({run, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            lost_wait.cancel()
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
                result.lease_lost = True
                log.warning(
                    "sync lease lost node=%s type=%s worker=%s: another worker took the node over",
                    node.name,
                    ticket.action.name,
                    worker,
                )
                return
            execution: Execution = run.result()
            outcome, error = execution.outcome, execution.error
            seconds = time.monotonic() - started
            if not await _db(finish_run)(
                ticket,
                worker,
                outcome,
                execution.log,
                error,
                kind=execution.kind,
                detail=execution.detail,
            ):
                result.lease_lost = True
                return
            if outcome == Outcome.SUCCESS:
                result.completed += 1
                log.info(
                    "sync end node=%s type=%s outcome=success seconds=%.2f",
                    node.name,
                    ticket.action.name,
                    seconds,
                )
            else:
                result.failed = True
                log.error(
                    "sync error node=%s type=%s outcome=%s seconds=%.2f error=%s",
                    node.name,
                    ticket.action.name,
                    outcome,
                    seconds,
                    error,
                )
            if progress:
                progress(RunReport(node.name, ticket.action.name, outcome, seconds, error))
            if result.failed:
                return
        result.budget_spent = True
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await conn.close()
        await _db(release_node)(node.pk, worker)


async def run_node_session(
    node: Node,
    *,
    action_ids: list[int] | None = None,
    ignore_backoff: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
    role: str = "worker",
) -> SessionResult:
    """Claim the node and run its due desynchronizations in order, until done or a failure.

    If work arrived after the last check but before the lease was released (its kick found
    the node busy), the session claims the node again rather than leave it to the sweep.
    """
    result = SessionResult(node)
    if node.maintenance and not force:
        return result  # an admin is working on the node: the panel keeps its hands off
    while True:
        worker = new_worker_id(role)
        if not await _db(claim_node)(node.pk, worker, force=force):
            return result
        result.claimed = True
        await _run_claimed(
            node,
            worker,
            result,
            action_ids=action_ids,
            ignore_backoff=ignore_backoff,
            ignore_maintenance=node.maintenance,  # forced by an admin (else not started)
            progress=progress,
        )
        if result.lease_lost or action_ids is not None:
            return result
        if result.budget_spent:
            # Leave the rest to a fresh task so one busy node cannot hold a worker for ever.
            await _db(kick)([node.pk])
            return result
        # After a failure the failed row comes first and waits for its retry, so this is
        # only true when it was registered again meanwhile.
        if not await _db(has_due_work)(node.pk):
            return result
        force = False
        result.failed = False


async def run_node_sessions(nodes: list[Node], **kwargs) -> list[SessionResult]:
    """Run many node sessions at once on this event loop: nodes wait on the network.

    A session that breaks (the database went away for too long) does not take the others
    down; its lease expires and the sweep recovers what it left.
    """
    outcomes = await asyncio.gather(
        *(run_node_session(n, **kwargs) for n in nodes), return_exceptions=True
    )
    results = []
    for node, outcome in zip(nodes, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.error("sync session of node=%s broke: %r", node.name, outcome)
            outcome = SessionResult(node, failed=True)
        results.append(outcome)
    return results


def run_nodes(node_ids: Iterable[int], **kwargs) -> list[SessionResult]:
    """Synchronous entry point (django-q tasks, commands): run these nodes' sessions now."""
    nodes = list(Node.objects.filter(pk__in=list(node_ids)))
    if not nodes:
        return []
    return async_to_sync(run_node_sessions)(nodes, **kwargs)


# --- What admins do ---------------------------------------------------------------------------


def retry_now(nodes: Iterable[Node | int]) -> int:
    """Make every desynchronization of these nodes due now, e.g. after fixing a node."""
    pairs = Node2Sync.objects.filter(node_id__in=_ids(nodes)).values_list("node_id", "action_id")
    by_node: dict[int, list[int]] = {}
    for node_id, action_id in pairs:
        by_node.setdefault(node_id, []).append(action_id)
    return sum(register_desync([node_id], actions) for node_id, actions in by_node.items())


def take_over_node(node: Node, by: str) -> bool:
    """Force a hanging synchronizer to complete: take the lease from whoever holds it.

    The interrupted run is recorded as ``forced`` (saying who did it), its row goes back to
    pending and the cluster runs it again; the old worker's late result is ignored.
    """
    worker = new_worker_id(f"forced-by-{by}")
    if not claim_node(node.pk, worker, force=True, acted_by=by):
        return False
    release_node(node.pk, worker)
    transaction.on_commit(lambda: kick([node.pk]))
    return True


def cancel_node(node: Node, by: str) -> list[str]:
    """End the synchronizer running on the node now; return the titles of the runs ended.

    The lease is taken from the worker (which notices within ``cancel_check_seconds`` and ends
    its remote commands); the run is recorded as ``cancelled`` naming who did it, and its row
    fails and waits for its backoff instead of starting again at once.
    """
    running = list(
        SyncRun.objects.filter(node=node, outcome=Outcome.RUNNING).values_list(
            "action__title", flat=True
        )
    )
    if not running:
        return []
    worker = new_worker_id(f"cancelled-by-{by}")
    if not claim_node(node.pk, worker, force=True, recover=True, acted_by=by, cancel=True):
        return []
    release_node(node.pk, worker)
    return running


@retry_on_transient_errors
def skip_desyncs(node: Node, action_ids: list[int] | None, by: str) -> list[str]:
    """Drop the node's desynchronizations without running them (work an admin did by hand).

    A type that is running is cancelled first. Each dropped row leaves a ``skipped`` run that
    names who skipped it. Returns the titles of the types dropped.
    """
    rows = Node2Sync.objects.filter(node=node)
    if action_ids is not None:
        rows = rows.filter(action_id__in=action_ids)
    if rows.filter(state=DesyncState.PROCESSING).exists():
        cancel_node(node, by)
    with transaction.atomic():
        list(Node.objects.select_for_update().filter(pk=node.pk).values("pk"))
        now = read_db_now()
        skipped = list(rows.select_related("action").order_by("action__priority", "action_id"))
        why = f"Skipped by {by}: dropped without running it (the work was done by hand)."
        SyncRun.objects.bulk_create(
            SyncRun(
                node=node,
                action=row.action,
                worker=f"skipped-by-{by}"[:100],
                started_at=now,
                finished_at=now,
                outcome=Outcome.SKIPPED,
                generation=row.generation,
                log=why,
                acted_by=by,
            )
            for row in skipped
        )
        rows.filter(pk__in=[r.pk for r in skipped]).delete()
        still_failing = (
            Node2Sync.objects.filter(node=node, state=DesyncState.FAILED)
            .order_by("action__priority", "action_id")
            .values_list("action__name", "action__title", "last_error")
            .first()
        )
        if not still_failing:
            Node.objects.filter(pk=node.pk).update(last_error="")
        conditions.failing_changed(
            node.pk,
            still_failing and (still_failing[0], conditions.failing_message(*still_failing[1:])),
            now,
        )
        recompute_status(Node.objects.filter(pk=node.pk))
    for row in skipped:
        log.warning("sync skipped node=%s type=%s by=%s", node.name, row.action.name, by)
    return [row.action.title for row in skipped]


def set_maintenance(nodes: Iterable[Node | int], on: bool) -> int:
    """Maintenance stops new sessions on the nodes; turning it off starts their waiting work."""
    node_ids = _ids(nodes)
    with transaction.atomic():
        changed = Node.objects.filter(pk__in=node_ids).update(maintenance=on)
        conditions.maintenance_changed(node_ids, on, read_db_now())
    if not on:
        transaction.on_commit(lambda: kick(node_ids))
    return changed


# --- The sweep ------------------------------------------------------------------------------


def due_node_ids() -> list[int]:
    """Nodes with a desynchronization due now and no live lease."""
    return list(
        Node.objects.filter(_free_lease(), maintenance=False)
        .filter(
            desyncs__state__in=[DesyncState.PENDING, DesyncState.FAILED],
            desyncs__next_attempt_at__lte=db_now(),
        )
        .order_by("pk")
        .values_list("pk", flat=True)
        .distinct()
    )


def refresh_stuck() -> int:
    """Mark ``stuck`` the nodes whose work has waited past the limit with no progress.

    Progress is any successful run since the work was registered; a node in maintenance is
    held on purpose and is not stuck. Returns how many nodes changed.
    """
    limit = conditions.stuck_after()
    cutoff = db_now_plus(-limit.total_seconds())
    waiting = (
        Node2Sync.objects.filter(registered_at__lt=cutoff, node__maintenance=False)
        .filter(Q(node__last_sync_at__isnull=True) | Q(node__last_sync_at__lt=cutoff))
        .order_by("node_id", "action__priority", "action_id")
        .values_list("node_id", "action__title", "state")
    )
    stuck: dict[int, str] = {}
    for node_id, title, state in waiting:
        if node_id not in stuck:
            minutes = int(limit.total_seconds() // 60)
            stuck[node_id] = (
                f"no progress for over {minutes} min: {title} is {DesyncState(state).label.lower()}"
            )
    return conditions.mark_stuck(stuck, read_db_now())


def sweep() -> dict[str, int]:
    """The safety net: recover dead workers' leases, then start every node that has due work."""
    recovered = recover_expired_leases()
    due = due_node_ids()
    if due:
        kick(due)
    if recovered or due:
        log.info("sweep recovered=%d enqueued=%d", recovered, len(due))
    return {"recovered": recovered, "enqueued": len(due)}


PROBE_TYPE = "probe"


def register_probes() -> int:
    """Register the health probe for every node not heard from within the probe interval.

    A node that dies while nothing changes must still be noticed, and through the engine like
    any type, so statuses and conditions change only from synchronizer results. Nodes that
    already have a probe waiting keep it (and its backoff); busy nodes need none, their runs
    are contact enough. Returns how many nodes were registered.
    """
    probe = SyncAction.objects.filter(name=PROBE_TYPE).first()
    if probe is None:
        return 0
    quiet_since = db_now_plus(-float(settings.SYNC.get("probe_seconds", 60)))
    node_ids = list(
        Node.objects.filter(maintenance=False)
        .filter(Q(last_contact_at__isnull=True) | Q(last_contact_at__lt=quiet_since))
        .exclude(desyncs__action=probe)
        .values_list("pk", flat=True)
    )
    return register_desync(node_ids, [probe]) if node_ids else 0


def prune_history(batch: int = 5000) -> int:
    """Keep the newest ``runs_kept_per_type`` runs of each node and type; return how many
    were deleted. The probe alone would otherwise add a row per node every minute, for ever.

    One ranking query (a window function, SQLite 3.25+ and MariaDB 10.2+) in the periodic
    pass, not a query per finished run; at most ``batch`` rows a pass.
    """
    keep = int(settings.SYNC.get("runs_kept_per_type", 50))
    ranked = SyncRun.objects.annotate(
        newer=Window(
            RowNumber(), partition_by=[F("node_id"), F("action_id")], order_by=F("id").desc()
        )
    )
    old = list(
        ranked.filter(newer__gt=keep)
        .exclude(outcome=Outcome.RUNNING)
        .values_list("pk", flat=True)[:batch]
    )
    if old:
        SyncRun.objects.filter(pk__in=old).delete()
    return len(old)


def check_health() -> dict[str, int]:
    """The periodic health pass beside the sweep: probes for quiet nodes, ``stuck`` marks,
    and the run history kept to its size."""
    probed = register_probes()
    stuck = refresh_stuck()
    pruned = prune_history()
    if probed or stuck or pruned:
        log.info("health probed=%d stuck-changed=%d runs-pruned=%d", probed, stuck, pruned)
    return {"probed": probed, "stuck_changed": stuck, "runs_pruned": pruned}

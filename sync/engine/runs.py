"""One run of one type: mark it started, record how it ended, and what that does to the node.

Every write here checks, in the same transaction, that the worker still holds the node's
lease: a worker whose node was taken over (forced, cancelled, recovered) must not touch rows
that are someone else's now. A finished row is deleted only if no newer registration bumped
its generation while it ran.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from nodes.models import Node
from nodes.transports.limits import printable
from sync import conditions
from sync.clock import db_now, read_db_now
from sync.engine.eligibility import RETRY_HOLDS, Hold, startable, store_truth, with_hold
from sync.engine.failures import fail_desync
from sync.engine.leases import renew_lease
from sync.engine.periodic import PROBE_TYPE
from sync.engine.transient import retry_on_transient_errors
from sync.errors import FailureKind, short
from sync.models import DesyncState, Node2Sync, Outcome, SyncAction, SyncRun, recompute_status


@dataclass(frozen=True)
class RunTicket:
    """What a started run carries to its finish; the generation tells whether the type was
    registered again while it ran."""

    desync_id: int
    run_id: int
    node_id: int
    action: SyncAction
    generation: int


@retry_on_transient_errors
def start_next_run(
    node_id: int,
    worker: str,
    *,
    action_ids: list[int] | None = None,
    ignore_backoff: bool = False,
    ignore_maintenance: bool = False,
    skip: Collection[int] = (),
) -> RunTicket | None:
    """Mark the node's next desynchronization processing and open its run; None when done.

    The next one is the first in priority order that the engine's one rule (``eligibility``)
    holds nothing back: a type that waits for its retry, or was cancelled, holds back the
    types that need it and no other; a node put in maintenance meanwhile runs nothing more (the
    admin's switch takes effect before the next type, not after the session).
    """
    with transaction.atomic():
        if not renew_lease(node_id, worker):
            return None
        return _start_next(node_id, worker, action_ids, ignore_backoff, ignore_maintenance, skip)


def _start_next(
    node_id: int,
    worker: str,
    action_ids: list[int] | None,
    ignore_backoff: bool,
    ignore_maintenance: bool,
    skip: Collection[int] = (),
) -> RunTicket | None:
    """``start_next_run`` inside the caller's transaction, the lease renewed there."""
    ignore = [Hold.MAINTENANCE] * ignore_maintenance + list(RETRY_HOLDS) * ignore_backoff
    nodes = with_hold(
        Node.objects.filter(pk=node_id), action_ids=action_ids, ignore=ignore, skip=skip
    )
    hold, desync_id = nodes.values_list("hold", "next_desync_id").first() or (Hold.NOTHING, 0)
    if hold:
        return None
    row = Node2Sync.objects.select_related("action").get(pk=desync_id)
    Node2Sync.objects.filter(pk=row.pk).update(
        state=DesyncState.PROCESSING, started_at=db_now(), worker=worker
    )
    if row.state in (DesyncState.FAILED, DesyncState.HELD):
        conditions.retrying(node_id, row.action.name, row.action.title)
        if row.state == DesyncState.HELD:  # a person let it go on: no longer Waiting
            store_truth(Node.objects.filter(pk=node_id))
    Node.objects.filter(pk=node_id).update(current_action_id=row.action_id)
    run = SyncRun.objects.create(
        node_id=node_id,
        action=row.action,
        worker=worker,
        started_at=db_now(),
        generation=row.generation,
    )
    return RunTicket(row.pk, run.pk, node_id, row.action, row.generation)


def _run_log(log_text: str, error: str, detail: str) -> str:
    """The run's log as kept: the error and its detail at the end, the whole capped."""
    cap = settings.SYNC["log_cap_chars"]
    if error or detail:
        shown = f"ERROR: {error}"
        if detail and detail.strip() != error:
            if len(detail) > cap:
                detail = detail[: cap // 2] + "\n[... error cut ...]\n" + detail[-cap // 2 :]
            shown += f"\n{printable(detail)}"
        log_text = f"{log_text}\n{shown}" if log_text else shown
    if len(log_text) > cap:
        log_text = log_text[: cap // 2] + "\n[... log cut ...]\n" + log_text[-cap // 2 :]
    return log_text


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
    log_text = _run_log(log_text, error, detail)
    with transaction.atomic():
        if not renew_lease(ticket.node_id, worker):
            return False
        _record_end(ticket, outcome, log_text, error, kind)
    return True


@retry_on_transient_errors
def finish_run_and_start_next(
    ticket: RunTicket,
    worker: str,
    outcome: Outcome,
    log_text: str,
    error: str,
    *,
    kind: FailureKind = FailureKind.FAILED,
    detail: str = "",
    action_ids: list[int] | None = None,
    ignore_backoff: bool = False,
    ignore_maintenance: bool = False,
    start_next: bool = True,
    skip: Collection[int] = (),
) -> tuple[bool, RunTicket | None]:
    """``finish_run``, then ``start_next_run``, in one transaction: a session's types follow
    one another with one commit between two runs, not two. After a failure the next type is
    one that does not need the failed one (``eligibility``).

    Returns (whether the lease was still held, the next run's ticket or None); with
    ``start_next`` False it only finishes (the session's budget is spent, or the node cannot
    be reached).
    """
    error = short(error) if error else ""
    log_text = _run_log(log_text, error, detail)
    with transaction.atomic():
        if not renew_lease(ticket.node_id, worker):
            return False, None
        _record_end(ticket, outcome, log_text, error, kind)
        if not start_next:
            return True, None
        return True, _start_next(
            ticket.node_id, worker, action_ids, ignore_backoff, ignore_maintenance, skip
        )


def _record_end(
    ticket: RunTicket, outcome: Outcome, log_text: str, error: str, kind: FailureKind
) -> None:
    """The run's end, on the run, the row and the node, inside the caller's transaction."""
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
        done = dict(current_action_id=None, **cleared)
        if ticket.action.name != PROBE_TYPE:
            # "Last synchronization" is the last synchronizer run, and the progress ``stuck``
            # measures: the health probe's answer is contact (``last_contact_at``), not that.
            done["last_sync_at"] = db_now()
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
        fail_desync(
            ticket.node_id,
            ticket.desync_id,
            ticket.generation,
            ticket.action.name,
            ticket.action.title,
            error,
            kind,
        )
    recompute_status(node)


@retry_on_transient_errors
def save_progress(run_id: int, worker: str, command: str, log_text: str, output: str) -> None:
    """Publish a running run's current command, its output and the log so far (``sync.watch``)."""
    SyncRun.objects.filter(pk=run_id, worker=worker, outcome=Outcome.RUNNING).update(
        current_command=command, log=log_text, current_output=output
    )


@retry_on_transient_errors
def has_due_work(node_id: int) -> bool:
    """Whether the node's next type may start now: work registered while the session ran,
    which the session takes on rather than leave to the sweep."""
    return startable(Node.objects.filter(pk=node_id)).exists()

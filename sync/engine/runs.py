"""One run of one type: mark it started, record how it ended, and what that does to the node.

Every write here checks, in the same transaction, that the worker still holds the node's
lease: a worker whose node was taken over (forced, cancelled, recovered) must not touch rows
that are someone else's now. A finished row is deleted only if no newer registration bumped
its generation while it ran.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Exists, OuterRef, QuerySet

from nodes.models import Node
from nodes.transports.limits import printable
from sync import conditions
from sync.clock import db_now, read_db_now
from sync.engine.eligibility import RETRY_HOLDS, Hold, node_hold, node_hold_sql, store_truth_of
from sync.engine.failures import fail_desync
from sync.engine.leases import _lease_until, renew_lease
from sync.engine.periodic import PROBE_TYPE
from sync.engine.tally import count_runs, counted_together
from sync.engine.transient import retry_on_transient_errors
from sync.errors import FailureKind, short
from sync.models import (
    DesyncState,
    Node2Sync,
    Outcome,
    SyncAction,
    SyncRun,
    desync_columns,
)

log = logging.getLogger("sync")
T = TypeVar("T")


@dataclass(frozen=True)
class RunTicket:
    """What a started run carries to its finish; the generation tells whether the type was
    registered again while it ran."""

    desync_id: int
    run_id: int
    node_id: int
    action: SyncAction
    generation: int
    # When it started on this worker's clock: its duration for the metrics, with no query.
    started: float = field(default_factory=time.monotonic, compare=False)


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
    with transaction.atomic(savepoint=False):  # no savepoint inside in_one_transaction
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
    *,
    recompute: bool = False,
) -> RunTicket | None:
    """``start_next_run`` inside the caller's transaction, the lease renewed there; with
    ``recompute``, the node's status is recomputed in the same UPDATE that names its running
    type (the caller changed its rows)."""
    ignore = [Hold.MAINTENANCE] * ignore_maintenance + list(RETRY_HOLDS) * ignore_backoff
    found = _next_desync(node_id, action_ids, ignore, skip)
    if found is None:
        if recompute:
            _recompute_status_of(node_id)
        return None
    desync_id, state, generation, action = found
    Node2Sync.objects.filter(pk=desync_id).update(
        state=DesyncState.PROCESSING, started_at=db_now(), worker=worker
    )
    if state in (DesyncState.FAILED, DesyncState.HELD):
        conditions.retrying(node_id, action.name, action.title)
    status = desync_columns() if recompute else {}
    Node.objects.filter(pk=node_id).update(current_action_id=action.pk, **status)
    if recompute or state == DesyncState.HELD:
        # The word and usability follow the status (``recompute_status`` does the same); a
        # held type a person let go on is no longer Waiting.
        store_truth_of(node_id)
    run = SyncRun.objects.create(
        node_id=node_id,
        action=action,
        worker=worker,
        started_at=db_now(),
        generation=generation,
    )
    return RunTicket(desync_id, run.pk, node_id, action, generation)


_ACTION_FIELDS = ("id", "name", "title", "priority", "node_status", "timeout", "needs_before")


def _next_desync(
    node_id: int,
    action_ids: list[int] | None,
    ignore: Collection[Hold],
    skip: Collection[int],
) -> tuple[int, str, int, SyncAction] | None:
    """The desynchronization that starts next (``eligibility.node_hold_sql``), with its row's
    state and generation and its type, in one query; None when something holds the node back.

    One round trip rather than three: a session asks this before every type it runs.
    """
    sql, params = node_hold_sql(node_id, action_ids=action_ids, ignore=ignore, skip=skip)
    connection = connections[router.db_for_write(Node2Sync)]
    with connection.cursor() as cursor:
        cursor.execute(next_desyncs_sql(connection, sql), params)
        found = cursor.fetchone()
    if found is None or found[0] or found[1] is None:
        return None  # the node is gone, or held back
    _, desync_id, state, generation, *action = found
    return desync_id, state, generation, action_of(connection, action)


def next_desyncs_sql(connection, holds_sql: str, *lead: str) -> str:
    """For a SELECT of nodes' ``hold`` and ``next_desync_id`` (``eligibility.with_hold``):
    the holds, the next rows' id, state and generation and their types' columns
    (``action_of``), after the columns ``lead`` of the holds' SELECT."""
    qn = connection.ops.quote_name
    rows, actions = qn(Node2Sync._meta.db_table), qn(SyncAction._meta.db_table)
    action_column = qn(Node2Sync._meta.get_field("action").column)
    columns = ", ".join(f"a.{qn(SyncAction._meta.get_field(f).column)}" for f in _ACTION_FIELDS)
    first = "".join(f"h.{qn(c)}, " for c in lead)
    return (
        f"SELECT {first}h.{qn('hold')}, r.{qn('id')}, r.{qn('state')}, r.{qn('generation')}, "
        f"{columns} FROM ({holds_sql}) h "
        f"LEFT JOIN {rows} r ON r.{qn('id')} = h.{qn('next_desync_id')} "
        f"LEFT JOIN {actions} a ON a.{qn('id')} = r.{action_column}"
    )


def action_of(connection, columns: Sequence) -> SyncAction:
    """The type of a row of ``next_desyncs_sql``, from its columns."""
    action = SyncAction(**dict(zip(_ACTION_FIELDS, columns, strict=True)))
    action.needs_before = bool(action.needs_before)
    action._state.adding, action._state.db = False, connection.alias
    return action


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
    with transaction.atomic(savepoint=False):  # no savepoint inside in_one_transaction
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
    with transaction.atomic(savepoint=False):  # no savepoint inside in_one_transaction
        # A success on a node with nothing wrong checks and renews the lease in the UPDATE
        # that records it; anything else checks the lease first, then writes.
        fine = outcome == Outcome.SUCCESS and bool(
            _success_on_fine_node(ticket.node_id, ticket.action, worker)
        )
        if not fine and not renew_lease(ticket.node_id, worker):
            return False, None
        _record_end(
            ticket,
            outcome,
            log_text,
            error,
            kind,
            recompute=not start_next,
            fine=fine if outcome == Outcome.SUCCESS else None,
        )
        if not start_next:
            return True, None
        return True, _start_next(
            ticket.node_id,
            worker,
            action_ids,
            ignore_backoff,
            ignore_maintenance,
            skip,
            recompute=True,
        )


def _synchronized(action: SyncAction) -> dict:
    """What a success writes of "Last synchronization": the time of a synchronizer run, and
    the progress ``stuck`` measures. The health probe's answer is contact
    (``last_contact_at``, "Last contact"), not that."""
    return {} if action.name == PROBE_TYPE else {"last_sync_at": db_now()}


def fine_nodes(nodes: QuerySet[Node]) -> QuerySet[Node]:
    """Of ``nodes``, those with nothing wrong and no type failing: a success on them writes
    only the node's row (``_success_on_fine_node``, and the same over many nodes in
    ``batch``)."""
    failing = Node2Sync.objects.filter(node_id=OuterRef("pk"), state=DesyncState.FAILED)
    return nodes.filter(condition="", contact_failed_since__isnull=True).exclude(Exists(failing))


def _success_on_fine_node(node_id: int, action: SyncAction, worker: str | None = None) -> int:
    """A success on a node with nothing wrong and no type failing, in one UPDATE of the node;
    0 when the node has a condition to clear or a type still failing. With ``worker``, only
    while that worker holds the lease, which it renews: the check that every engine write
    makes first (``finish_run_and_start_next``), done by the write itself."""
    nodes = fine_nodes(Node.objects.filter(pk=node_id))
    lease = {}
    if worker is not None:
        nodes, lease = nodes.filter(lease_owner=worker), {"lease_until": _lease_until()}
    return nodes.update(**fine_success(action), **lease)


def fine_success(action: SyncAction) -> dict:
    """What a success of ``action`` writes on a node with nothing wrong (``fine_nodes``)."""
    return dict(
        last_contact_at=db_now(), last_error="", current_action_id=None, **_synchronized(action)
    )


def _record_end(
    ticket: RunTicket,
    outcome: Outcome,
    log_text: str,
    error: str,
    kind: FailureKind,
    *,
    recompute: bool = True,
    fine: bool | None = None,
) -> None:
    """The run's end, on the run, the row and the node, inside the caller's transaction.

    ``recompute`` False leaves the node's status to the caller, who recomputes it in the
    transaction with its own write of the node (``_start_next``). ``fine``: whether the
    caller already recorded a success on a node with nothing wrong (``_success_on_fine_node``;
    False: it tried, the node has something to clear).
    """
    SyncRun.objects.filter(pk=ticket.run_id).update(
        finished_at=db_now(),
        outcome=outcome,
        log=log_text,
        current_command="",
        current_output="",
    )
    count_runs([(ticket.action.name, outcome, time.monotonic() - ticket.started)])
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
        # The common case, a node with nothing wrong and no type failing, in one UPDATE
        # (made by the caller already when ``fine`` is given); conditions to clear, or a type
        # still failing to name, take the conditions' read and write.
        if fine is None:
            fine = bool(_success_on_fine_node(ticket.node_id, ticket.action))
        if not fine:
            still_failing = (
                Node2Sync.objects.filter(node_id=ticket.node_id, state=DesyncState.FAILED)
                .order_by("action__priority", "action_id")
                .values_list("action__name", "action__title", "last_error")
                .first()
            )
            done = dict(current_action_id=None, **_synchronized(ticket.action))
            node.update(**done, **({} if still_failing else {"last_error": ""}))
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
    if recompute:
        _recompute_status_of(ticket.node_id)


def _recompute_status_of(node_id: int) -> None:
    """``recompute_status`` of one node (status and count), its word and usability through
    ``store_truth_of``."""
    Node.objects.filter(pk=node_id).update(**desync_columns())
    store_truth_of(node_id)


def in_one_transaction(calls: Sequence[tuple[int, Callable[[], T]]]) -> list[T | Exception]:
    """Run engine writes of several nodes (each under its own lease) in one transaction;
    return each one's result, or the exception it raised.

    The node sessions of one event loop share one database thread, so their writes wait for
    each other anyway; committing them together costs the database one log flush instead of
    one each, which is most of what a no-op run costs. The plain writes go first, several of
    a kind in one statement (``batch``), which locks its nodes in id order; the rest run in
    node order, the order in which claims and registrations lock nodes. A deadlock with
    another group is retried like any other failure: if any call raises, the whole group
    rolls back and each call runs again alone, in its own transaction with its own retries,
    as it would have without the group. A lone call runs alone at once, unless it is of a
    kind ``batch`` writes: its statements are built once.
    """
    from sync.engine.batch import LEFT, plain, write_together

    if len(calls) > 1 or (calls and plain(calls[0][1])):
        results: list[T | Exception] = [None] * len(calls)  # type: ignore[list-item]
        try:
            with transaction.atomic(), counted_together():
                # The plain writes first, several of a kind in a few statements for them all
                # (``batch``); what it leaves, one by one in node order.
                order = sorted(range(len(calls)), key=lambda i: calls[i][0])
                done = write_together([calls[i][1] for i in order])
                for i, outcome in zip(order, done, strict=True):
                    results[i] = calls[i][1]() if outcome is LEFT else outcome
            return results
        except Exception as e:  # noqa: BLE001 - each call is run again alone below
            log.info("engine writes of %d nodes run one by one after: %r", len(calls), e)
    return [_outcome(call) for _, call in calls]


def _outcome(call: Callable[[], T]) -> T | Exception:
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - handed to the session that asked
        return e


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
    return node_hold(node_id)[0] == ""

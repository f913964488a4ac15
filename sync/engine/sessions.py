"""Node sessions: claim a node, run its due types in order over one connection, let it go.

The database bookkeeping is synchronous and runs on the one database thread; the conversation
with the nodes is coroutines, so one django-q task drives a whole batch of node sessions on
one event loop while they wait on the network. One heartbeat per event loop keeps all its
sessions' leases and notices within seconds when an admin took a node (cancel, force), which
ends that run at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db.models import Q

from nodes.models import Node
from nodes.transports.warm import drop_stale_connections, warm_node_ids
from sync.clock import db_now, db_now_plus
from sync.engine.eligibility import startable
from sync.engine.execution import Execution, NodeConnection, execute
from sync.engine.leases import (
    claim_node,
    free_lease,
    held_leases,
    new_worker_id,
    release_node,
    renew_leases,
)
from sync.engine.registration import kick
from sync.engine.runs import (
    finish_run_and_start_next,
    has_due_work,
    in_one_transaction,
    save_progress,
    start_next_run,
)
from sync.engine.transient import retry_on_transient_errors
from sync.errors import FailureKind
from sync.models import DesyncState, Node2Sync, Outcome
from sync.watch import RunWatch, publish

log = logging.getLogger("sync")

# Failures of the connection, not of a type: the session's other types would fail the same way.
CONNECTION_FAILURES = (FailureKind.UNREACHABLE, FailureKind.HOST_KEY)


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
    """What one node session came to (the task and ``nodesync`` count these)."""

    node: Node
    claimed: bool = False
    completed: int = 0
    failed: bool = False
    lease_lost: bool = False
    budget_spent: bool = False


ProgressCallback = Callable[[RunReport], None]


def _db(fn: Callable) -> Callable:
    return sync_to_async(fn, thread_sensitive=True)


class LeaseKeeper:
    """The leases of every node session on one event loop, renewed and checked together.

    Renewing is a write, so it happens every third of the lease; checking who holds them is a
    read, every ``cancel_check_seconds``, so a cancelled run ends within seconds. One query
    does it for all the loop's sessions (up to a batch of 25), not one per busy node.
    """

    def __init__(self) -> None:
        self.renew_every = max(settings.SYNC["lease_seconds"] / 3, 0.2)
        self.check_every = min(
            self.renew_every, float(settings.SYNC.get("cancel_check_seconds", 2))
        )
        self.held: dict[tuple[int, str], asyncio.Event] = {}
        self.task: asyncio.Task | None = None

    def keep(self, node_id: int, worker: str) -> asyncio.Event:
        """Keep this session's lease; the event is set when another worker took the node."""
        lost = asyncio.Event()
        self.held[(node_id, worker)] = lost
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        return lost

    def drop(self, node_id: int, worker: str) -> None:
        self.held.pop((node_id, worker), None)
        if not self.held and self.task is not None:
            self.task.cancel()  # nothing left to keep: no task outlives the loop's sessions
            self.task = None

    async def _run(self) -> None:
        renewed = time.monotonic()
        while self.held:
            await asyncio.sleep(self.check_every)
            pairs = list(self.held)
            if time.monotonic() - renewed >= self.renew_every:
                still = await _db(renew_leases)(pairs)
                renewed = time.monotonic()
            else:
                still = await _db(held_leases)(pairs)
            for pair in pairs:
                if pair not in still and pair in self.held:
                    self.held.pop(pair).set()


_KEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LeaseKeeper] = (
    weakref.WeakKeyDictionary()
)


def _lease_keeper() -> LeaseKeeper:
    """This event loop's ``LeaseKeeper``."""
    loop = asyncio.get_running_loop()
    keeper = _KEEPERS.get(loop)
    if keeper is None:
        keeper = _KEEPERS[loop] = LeaseKeeper()
    return keeper


class Bookkeeper:
    """The engine writes of every node session on one event loop, committed together.

    A session hands its claim, its starts and finishes and its release here and waits for
    the result; whatever the loop's sessions asked meanwhile goes to the database thread as
    one transaction (``runs.in_one_transaction``). A lone session is served at once, as before;
    a busy loop of 25 sessions commits once for many runs instead of once per run.
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[int, Callable[[], Any], asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def write(self, node_id: int, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` for ``node_id``, in the next group's transaction."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((node_id, functools.partial(fn, *args, **kwargs), future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self.waiting:
            await asyncio.sleep(0)  # the sessions that are ready too add theirs
            group, self.waiting = self.waiting, []
            try:
                outcomes = await _db(in_one_transaction)([(n, call) for n, call, _ in group])
            except BaseException as e:  # noqa: BLE001 - every waiting session must hear it
                outcomes = [e] * len(group)
            for (_, _, future), outcome in zip(group, outcomes, strict=True):
                if future.done():
                    continue  # its session was cancelled meanwhile
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


_BOOKKEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bookkeeper] = (
    weakref.WeakKeyDictionary()
)


def _book(node_id: int, fn: Callable, *args: Any, **kwargs: Any) -> Awaitable[Any]:
    """``fn(*args, **kwargs)`` through this event loop's ``Bookkeeper``."""
    loop = asyncio.get_running_loop()
    keeper = _BOOKKEEPERS.get(loop)
    if keeper is None:
        keeper = _BOOKKEEPERS[loop] = Bookkeeper()
    return keeper.write(node_id, fn, *args, **kwargs)


async def _run_claimed(
    node: Node,
    worker: str,
    result: SessionResult,
    *,
    action_ids: list[int] | None,
    ignore_backoff: bool,
    ignore_maintenance: bool,
    progress: ProgressCallback | None,
    deadline: float | None,
    warm: bool,
) -> None:
    keeper = _lease_keeper()
    lost = keeper.keep(node.pk, worker)
    conn = NodeConnection(node, warm=warm)
    budget_end = time.monotonic() + settings.SYNC["session_budget_seconds"]
    deadline = budget_end if deadline is None else min(deadline, budget_end)
    starting = dict(
        action_ids=action_ids, ignore_backoff=ignore_backoff, ignore_maintenance=ignore_maintenance
    )
    failed_here: list[int] = []
    try:
        if time.monotonic() >= deadline:
            result.budget_spent = True
            return
        ticket = await _book(node.pk, start_next_run, node.pk, worker, **starting)
        while ticket is not None:
            log.info("sync start node=%s type=%s worker=%s", node.name, ticket.action.name, worker)
            started = time.monotonic()
            watch = RunWatch([])
            publisher = asyncio.create_task(
                publish(
                    watch,
                    functools.partial(_db(save_progress), ticket.run_id, worker),
                    settings.SYNC["log_cap_chars"],
                )
            )
            run = asyncio.create_task(execute(ticket, node, conn, watch))
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
            # The next type starts in the transaction that records this one's end, unless the
            # session's budget is spent (the rest goes to a fresh task) or the node cannot be
            # reached (every type would fail the same way). After a type's own failure the
            # types that do not need it go on (``eligibility``).
            unreachable = outcome != Outcome.SUCCESS and execution.kind in CONNECTION_FAILURES
            in_time = time.monotonic() < deadline
            go_on = not unreachable and in_time
            if outcome != Outcome.SUCCESS:
                failed_here.append(ticket.desync_id)  # not again in this session, even forced
            held, next_ticket = await _book(
                node.pk,
                finish_run_and_start_next,
                ticket,
                worker,
                outcome,
                execution.log,
                error,
                kind=execution.kind,
                detail=execution.detail,
                start_next=go_on,
                skip=failed_here,
                **starting,
            )
            if not held:
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
            if unreachable:
                return
            if not in_time:
                result.budget_spent = True
                return
            ticket = next_ticket
    finally:
        keeper.drop(node.pk, worker)
        await conn.close()
        await _book(node.pk, release_node, node.pk, worker)


async def run_node_session(
    node: Node,
    *,
    action_ids: list[int] | None = None,
    ignore_backoff: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
    role: str = "worker",
    deadline: float | None = None,
    warm: bool = False,
) -> SessionResult:
    """Claim the node and run its due desynchronizations in order, until none may start (a
    failure holds back only the types that need the failed one) or the node cannot be reached.

    ``warm``: an SSH node's connection is the process's warm one, kept for the next session
    (``nodes.transports.warm``): a worker's sessions; a command's connect anew, as the
    process ends with them.

    If work arrived after the last check but before the lease was released (its kick found
    the node busy), the session claims the node again rather than leave it to the sweep.
    No type starts after ``deadline`` (``time.monotonic()``) nor after the session's budget.
    """
    result = SessionResult(node)
    if node.maintenance and not force:
        return result  # an admin is working on the node: the panel keeps its hands off
    while True:
        worker = new_worker_id(role)
        if not await _book(node.pk, claim_node, node.pk, worker, force=force):
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
            deadline=deadline,
            warm=warm,
        )
        if result.lease_lost or action_ids is not None:
            return result
        if result.budget_spent:
            # Leave the rest to a fresh task so one busy node cannot hold a worker for ever.
            await _db(kick)([node.pk])
            return result
        # What could run ran (a failed row waits for its retry), so this is only true when
        # work was registered meanwhile.
        if not await _db(has_due_work)(node.pk):
            return result
        force = False
        result.failed = False


def _settled(node: Node, outcome: SessionResult | BaseException) -> SessionResult:
    """A session that broke (the database went away for too long) does not take the others
    down; its lease expires and the sweep recovers what it left."""
    if isinstance(outcome, BaseException):
        log.error("sync session of node=%s broke: %r", node.name, outcome)
        return SessionResult(node, failed=True)
    return outcome


async def run_node_sessions(nodes: list[Node], **kwargs) -> list[SessionResult]:
    """Run many node sessions at once on this event loop: nodes wait on the network."""
    outcomes = await asyncio.gather(
        *(run_node_session(n, **kwargs) for n in nodes), return_exceptions=True
    )
    return [_settled(node, outcome) for node, outcome in zip(nodes, outcomes, strict=True)]


@retry_on_transient_errors
def due_nodes_to_take(room: int, busy: Iterable[int], warm_here: Iterable[int] = ()) -> list[Node]:
    """Up to ``room`` nodes whose work may start now (``eligibility``), without a live lease,
    that have waited at least ``take_due_after_seconds``: the oldest due first.

    The wait leaves a node's own task (enqueued when its work was registered) the time to
    start it, so that the work of one registration still spreads over every worker; only what
    waits longer, behind busy workers, is taken by a task that has room. Nodes in
    ``warm_here`` (this worker keeps their connection warm) are taken without the wait: here
    they cost no login, in the worker their task went to they may.
    """
    waited = db_now_plus(-float(settings.SYNC["take_due_after_seconds"]))
    busy = list(busy)
    ready = Q(next_at__lte=waited)
    due_rows = Q(next_attempt_at__lte=waited)
    if warm_here := list(warm_here):
        ready |= Q(pk__in=warm_here)
        due_rows |= Q(node_id__in=warm_here, next_attempt_at__lte=db_now())
    # Candidates first, from the due index: nodes with no live lease whose oldest waiting row
    # is due. Only a necessary condition (the rule is ``startable``'s, below), but a cheap
    # one: the rule over every node of a large fleet with work queued costs seconds, and this
    # runs on the task's database thread, every ``take_due_every_seconds``, while its sessions
    # wait for that thread. A few times ``room`` candidates, so nodes held back for another
    # reason (a type they need was cancelled) do not crowd out the rest.
    rows = (
        Node2Sync.objects.filter(
            due_rows,
            state__in=[DesyncState.PENDING, DesyncState.FAILED],
            node__maintenance=False,
        )
        .filter(free_lease("node__"))
        .exclude(node_id__in=busy)
        .order_by("next_attempt_at")
        .values_list("node_id", flat=True)
    )
    candidates = list(dict.fromkeys(rows[: room * 8 + 50]))
    if not candidates:
        return []
    due = (
        startable(Node.objects.filter(free_lease(), pk__in=candidates))
        .filter(ready)
        .order_by("next_at", "pk")
    )
    return list(due[:room])


def _warm_elsewhere(node: Node, warm_here: set[int]) -> bool:
    """Whether another worker may keep ``node``'s connection warm: this one keeps others but
    not it, and the panel has reached it before. Its session then waits a moment, for a
    worker that keeps it to take it (``due_nodes_to_take``), before connecting here."""
    return bool(warm_here) and node.pk not in warm_here and node.last_contact_at is not None


async def run_batch(nodes: list[Node], *, warm: bool = False) -> list[SessionResult]:
    """A django-q task's work: the sessions of ``nodes``, then, while the batch has room, those
    of further due nodes, so how many nodes run at once does not depend on how the work
    arrived (fifty single-node registrations run like one registration of fifty nodes).

    The task takes no node after its budget (``session_budget_seconds`` from its start), and
    a session it took late ends its types by that time too: a task stays within django-q's
    timeout whatever it took on the way. A session taken here claims its node like any other,
    so two tasks that pick the same node run it once. ``warm``: see ``run_node_session``.
    """
    room_for = settings.SYNC["batch_size"]
    every = float(settings.SYNC["take_due_every_seconds"])
    deadline = time.monotonic() + settings.SYNC["session_budget_seconds"]
    running: dict[asyncio.Task, Node] = {}
    results: list[SessionResult] = []

    waiting: set[int] = set()  # nodes left a moment to a worker that keeps them warm

    def start(node: Node, wait: float = 0.0, **kwargs) -> None:
        async def session() -> SessionResult:
            if wait:
                waiting.add(node.pk)
                try:
                    await asyncio.sleep(wait)
                finally:
                    waiting.discard(node.pk)
            return await run_node_session(node, warm=warm, **kwargs)

        running[asyncio.create_task(session())] = node

    # Warm connections are a worker's own, and a task goes to whichever worker is free: a
    # node kept warm by another worker is left to it for a moment (twice the wait left to a
    # node's own task: that worker may be busy with its database queries), taking no room
    # meanwhile; and the due nodes this worker keeps warm are taken first, before the given
    # sessions queue their queries on the database thread.
    warm_here = await warm_node_ids() if warm else set()
    leave = 2 * float(settings.SYNC["take_due_after_seconds"])
    elsewhere = [n for n in nodes if _warm_elsewhere(n, warm_here)]
    room = room_for - (len(nodes) - len(elsewhere))
    if warm_here and room > 0:
        for node in await _db(due_nodes_to_take)(room, [n.pk for n in nodes], warm_here):
            start(node, deadline=deadline)
    for node in nodes:
        start(node, wait=leave if node in elsewhere else 0.0)
    while True:
        room = room_for - len(running) + len(waiting)
        if room > 0 and time.monotonic() < deadline:
            busy = [n.pk for n in running.values()]
            warm_here = await warm_node_ids() if warm else set()
            for node in await _db(due_nodes_to_take)(room, busy, warm_here):
                start(node, deadline=deadline)
        if not running:
            return results
        done, _ = await asyncio.wait(running, timeout=every, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            node = running.pop(task)
            results.append(_settled(node, task.exception() or task.result()))


def run_nodes(node_ids: Iterable[int], **kwargs) -> list[SessionResult]:
    """Synchronous entry point (commands, tests): run these nodes' sessions now."""
    nodes = list(Node.objects.filter(pk__in=list(node_ids)))
    if not nodes:
        return []
    return async_to_sync(run_node_sessions)(nodes, **kwargs)


def run_task_batch(node_ids: Iterable[int]) -> list[SessionResult]:
    """Synchronous entry point of the django-q task: ``run_batch`` of these nodes, on the
    worker's warm connections; those to nodes deleted, in maintenance or changed go first."""
    drop_stale_connections()
    nodes = list(Node.objects.filter(pk__in=list(node_ids)))
    return async_to_sync(run_batch)(nodes, warm=True)

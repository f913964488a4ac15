"""The engine writes of many node sessions, several of a kind in a few statements for them all.

The node sessions of one event loop hand their writes to one ``Bookkeeper`` (``sessions``),
which commits them together (``runs.in_one_transaction``). Nearly all of those writes are of
four kinds: a session's claim of its node, the start of its first type, a type that succeeded
on a node with nothing wrong followed by the start of the node's next type, and the release.
One at a time, a success and the next start are nine statements (``runs.
finish_run_and_start_next``); here they are about ten for the whole group, whatever its size:
each statement of the one-at-a-time path once, over all the group's nodes, built once per
shape (``compiled.many``).

Only the plain case is done here: a call of ``plain`` form (no option an admin gave), on a
node whose worker still holds its lease, with nothing to recover, no condition to clear and
no type failing (checked, and the nodes locked, in one statement first). The others are left
to the caller, who runs them one by one by the path that knows every case. Should the
database still differ from what the batch expects (a lease lost, a row registered again while
it ran), it raises ``NotPlain`` having counted nothing, and the caller's whole group rolls
back and runs one by one. The rules (what may start next, the status, the word) are the same
expressions the one-at-a-time path uses, over many nodes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.db import connections, router
from django.db.models import Case, F, OuterRef, Q, QuerySet, Subquery, Value, When

from nodes.models import Node
from sync import conditions
from sync.clock import db_now, read_db_now
from sync.engine.compiled import delete_sql, execute, fetch, many, select_sql, update_sql
from sync.engine.eligibility import store_truth_of, with_hold
from sync.engine.leases import _lease_until, claim_node, free_lease, release_node
from sync.engine.periodic import PROBE_TYPE
from sync.engine.runs import (
    RunTicket,
    _run_log,
    action_of,
    fine_nodes,
    fine_success,
    finish_run_and_start_next,
    next_desyncs_sql,
    start_next_run,
)
from sync.engine.tally import count_runs
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun, desync_columns


class NotPlain(Exception):  # noqa: N818 - a signal to the caller, not an error
    """The database is not as the batch expects: the group is written one by one."""


# What a plain call leaves as it is, by the function it calls (the keyword arguments of each;
# ``_ANY``: whatever it is).
_ANY = object()
_PLAIN_KWARGS: dict[Callable, dict[str, Any]] = {
    claim_node: {"force": False},
    start_next_run: {
        "action_ids": None,
        "ignore_backoff": False,
        "ignore_maintenance": False,
        "skip": (),
    },
    finish_run_and_start_next: {
        "kind": _ANY,  # a success's kind means nothing
        "detail": "",
        "action_ids": None,
        "ignore_backoff": False,
        "ignore_maintenance": False,
        "start_next": True,
        "skip": (),
    },
    release_node: {},
}
_ARGS = {claim_node: 2, start_next_run: 2, finish_run_and_start_next: 5, release_node: 2}

# A call ``write_together`` left to the caller.
LEFT = object()


def plain(call: Callable) -> Callable | None:
    """The engine function ``call`` calls, if it is one a group writes together in its plain
    form: a session's claim, its first start, a success with no error followed by the next
    start, and its release, with no option an admin gave."""
    if not isinstance(call, functools.partial) or call.func not in _PLAIN_KWARGS:
        return None
    defaults = _PLAIN_KWARGS[call.func]
    if len(call.args) != _ARGS[call.func]:
        return None
    for name, value in call.keywords.items():
        if name not in defaults:
            return None
        if defaults[name] is not _ANY and (value or None) != (defaults[name] or None):
            return None
    if call.func is finish_run_and_start_next:
        _ticket, _worker, outcome, _log, error = call.args
        if outcome != Outcome.SUCCESS or error:
            return None
    return call.func


def _node_of(call: functools.partial) -> int:
    first = call.args[0]
    return first.node_id if isinstance(first, RunTicket) else first


def write_together(calls: Sequence[Callable]) -> list[Any]:
    """The plain calls (``plain``) among ``calls``, those of a kind written in a few
    statements for them all, inside the caller's transaction; ``LEFT`` for the calls left to
    the caller, who runs them one by one (not plain, a node named twice, or a node that is
    not plain in the database: a lease to recover, a condition to clear, a failure to name).
    Raises ``NotPlain`` when the database is not as expected, having counted nothing: the
    caller rolls back and runs every call alone."""
    results: list[Any] = [LEFT] * len(calls)
    kinds: dict[Callable, list[int]] = {}
    seen: dict[int, int] = {}
    for i, call in enumerate(calls):
        if (func := plain(call)) is not None:
            kinds.setdefault(func, []).append(i)
            seen[_node_of(call)] = seen.get(_node_of(call), 0) + 1
    alias = router.db_for_write(Node)
    for func, writes in _WRITERS.items():
        indexes = [i for i in kinds.get(func, []) if seen[_node_of(calls[i])] == 1]
        if not indexes:
            continue
        for i, outcome in zip(indexes, writes([calls[i] for i in indexes], alias), strict=True):
            results[i] = outcome
    return results


def _any_of(**columns: list) -> Q:
    """Rows that match one of the tuples of ``columns`` (each a list, all as long)."""
    q = Q()
    for values in zip(*columns.values(), strict=True):
        q |= Q(**dict(zip(columns, values, strict=True)))
    return q


def _lease_seconds() -> float:
    """Part of the key of every statement that writes a lease's end: the length is built
    into the statement, and a setting changed (a test's) must not keep the old one."""
    return settings.SYNC["lease_seconds"]


def _pairs(calls: Sequence[functools.partial]) -> tuple[list[int], list[str]]:
    """The nodes and the workers of calls that take (node id, worker) first."""
    return [c.args[0] for c in calls], [c.args[1] for c in calls]


def _held(alias: str, node_ids: list[int], workers: list[str]) -> QuerySet[Node]:
    """A queryset for ``many``: the nodes whose worker holds their lease."""
    return Node.objects.using(alias).filter(_any_of(pk=node_ids, lease_owner=workers))


def _claim(calls: Sequence[functools.partial], alias: str) -> list[Any]:
    """``leases.claim_node`` of nodes no one holds: the free ones locked and read in one
    statement, those nobody held before taken in another (each by its worker: the lease
    owner). A free node whose lease lapsed (its runs to recover) is left to the caller; a
    node someone holds is not claimed."""
    node_ids, workers = _pairs(calls)
    nodes = Node.objects.using(alias)
    free = dict(
        fetch(
            alias,
            *many(
                ("free", alias),
                lambda ids: select_sql(
                    nodes.filter(free_lease(), pk__in=ids)
                    .select_for_update()
                    .order_by("pk")
                    .values_list("pk", "lease_owner")
                ),
                ("i", node_ids),
            ),
        )
    )
    taking = [i for i, node_id in enumerate(node_ids) if free.get(node_id) == ""]
    if taking:
        sql, params = many(
            ("claim", alias, _lease_seconds()),
            lambda ids, owners: update_sql(
                nodes.filter(pk__in=ids),
                dict(
                    lease_owner=Case(
                        *(When(pk=p, then=Value(w)) for p, w in zip(ids, owners, strict=True)),
                        default=Value(""),
                    ),
                    lease_until=_lease_until(),
                    current_action_id=None,
                ),
            ),
            ("i", [node_ids[i] for i in taking]),
            ("s", [workers[i] for i in taking]),
        )
        if execute(alias, sql, params) != len(taking):
            raise NotPlain("a free node was taken after it was locked")
    return [
        True if free.get(node_id) == "" else LEFT if node_id in free else False
        for node_id in node_ids
    ]


def _start(calls: Sequence[functools.partial], alias: str) -> list[Any]:
    """``runs.start_next_run`` of sessions' first types: the leases renewed in one UPDATE
    (``NotPlain`` if one was lost: rare, and the one-by-one path answers that session), then
    ``_start_many``."""
    node_ids, workers = _pairs(calls)
    sql, params = many(
        ("renew", alias, _lease_seconds()),
        lambda ids, owners: update_sql(_held(alias, ids, owners), {"lease_until": _lease_until()}),
        ("i", node_ids),
        ("s", workers),
    )
    if execute(alias, sql, params) != len(node_ids):
        raise NotPlain("a lease was lost")
    started = _start_many(alias, node_ids, workers, recompute=False)
    return [started.get(node_id) for node_id in node_ids]


def _release(calls: Sequence[functools.partial], alias: str) -> list[Any]:
    """``leases.release_node`` of many sessions' nodes, each only if its worker holds it."""
    node_ids, workers = _pairs(calls)
    sql, params = many(
        ("release", alias),
        lambda ids, owners: update_sql(
            _held(alias, ids, owners),
            {"lease_owner": "", "lease_until": None, "current_action_id": None},
        ),
        ("i", node_ids),
        ("s", workers),
    )
    execute(alias, sql, params)
    return [None] * len(calls)


def _success(calls: Sequence[functools.partial], alias: str) -> list[Any]:
    """``finish_run_and_start_next`` of the calls (each ``plain``) whose node has nothing
    wrong and no type failing; ``LEFT`` for the others (they have conditions to clear or a
    failure to name). The nodes are locked first, in one statement; the health probe's
    successes apart from the others' (they write other columns: ``runs._synchronized``)."""
    node_ids = [call.args[0].node_id for call in calls]
    # The lease is checked by the UPDATE that renews it (``_finish``): a lost one is rare.
    fine = {
        row[0]
        for row in fetch(
            alias,
            *many(
                ("fine?", alias),
                lambda ids: select_sql(
                    fine_nodes(Node.objects.using(alias).filter(pk__in=ids))
                    .select_for_update()
                    .order_by("pk")
                    .values_list("pk")
                ),
                ("i", node_ids),
            ),
        )
    }
    done: dict[int, Any] = {}
    for probe in (False, True):
        kept = [
            call
            for call in calls
            if call.args[0].node_id in fine and (call.args[0].action.name == PROBE_TYPE) == probe
        ]
        if kept:
            finished = _finish(kept, alias, probe=probe)
            done.update(zip([c.args[0].node_id for c in kept], finished, strict=True))
    return [done.get(node_id, LEFT) for node_id in node_ids]


def _finish(
    calls: Sequence[functools.partial], alias: str, *, probe: bool
) -> list[tuple[bool, RunTicket | None]]:
    """The plain successes of locked nodes with nothing wrong (of the probe or not): see
    ``_success``."""
    tickets: list[RunTicket] = [call.args[0] for call in calls]
    node_ids, workers = [t.node_id for t in tickets], [call.args[1] for call in calls]
    n = len(calls)
    # The success, under each worker's lease, which the same UPDATE renews.
    success = dict(fine_success(tickets[0].action), lease_until=_lease_until())
    sql, params = many(
        ("fine", alias, probe, _lease_seconds()),
        lambda ids, owners: update_sql(fine_nodes(_held(alias, ids, owners)), success),
        ("i", node_ids),
        ("s", workers),
    )
    if execute(alias, sql, params) != n:
        raise NotPlain("a lease was lost")
    # The runs' ends (``runs._record_end``): one log each, most often the same.
    logs = [_run_log(call.args[3], "", "") for call in calls]
    runs = SyncRun.objects.using(alias)
    ended = dict(
        finished_at=db_now(), outcome=Outcome.SUCCESS, current_command="", current_output=""
    )
    if len(set(logs)) == 1:
        sql, params = many(
            ("ended", alias),
            lambda ids, log: update_sql(runs.filter(pk__in=ids), dict(ended, log=log[0])),
            ("i", [t.run_id for t in tickets]),
            ("s", logs[:1]),
        )
    else:
        sql, params = many(
            ("ended-logs", alias),
            lambda ids, texts: update_sql(
                runs.filter(pk__in=ids),
                dict(
                    ended,
                    log=Case(
                        *(When(pk=r, then=Value(t)) for r, t in zip(ids, texts, strict=True)),
                        default=Value(""),
                    ),
                ),
            ),
            ("i", [t.run_id for t in tickets]),
            ("s", logs),
        )
    execute(alias, sql, params)
    sql, params = many(
        ("done", alias),
        lambda ids, generations: delete_sql(
            Node2Sync.objects.using(alias).filter(_any_of(pk=ids, generation=generations))
        ),
        ("i", [t.desync_id for t in tickets]),
        ("i", [t.generation for t in tickets]),
    )
    if execute(alias, sql, params) != n:
        raise NotPlain("a type was registered again while it ran")
    started = _start_many(alias, node_ids, workers, recompute=True)
    now = time.monotonic()
    count_runs([(t.action.name, Outcome.SUCCESS, now - t.started) for t in tickets])
    return [(True, started.get(node_id)) for node_id in node_ids]


def _start_many(
    alias: str, node_ids: list[int], workers: list[str], *, recompute: bool
) -> dict[int, RunTicket]:
    """``runs._start_next`` of these nodes (their leases checked by the caller), in a few
    statements: the next type of each that may start marked processing, its run opened;
    with ``recompute``, every node's status and count written too (the caller changed its
    rows). The tickets of the runs started, by node."""
    nodes = Node.objects.using(alias)
    connection = connections[alias]
    # What starts next on each node: the engine's one rule (``eligibility``), over them all,
    # with the next rows and their types (``runs.next_desyncs_sql``).
    sql, params = many(
        ("next", alias),
        lambda ids: select_sql(
            with_hold(nodes.filter(pk__in=ids))
            .annotate(node_pk=F("pk"))
            .values_list("node_pk", "hold", "next_desync_id")
        ),
        ("i", node_ids),
    )
    found = {}
    held = []  # a held type a person let go on: its word changes (``runs._start_next``)
    for node_id, hold, desync_id, state, generation, *columns in fetch(
        alias, next_desyncs_sql(connection, sql, "node_pk"), params
    ):
        if hold or desync_id is None or node_id in found:
            continue  # done, or held back (or a padded id seen again)
        found[node_id] = (desync_id, generation, action_of(connection, columns))
        if state in (DesyncState.FAILED, DesyncState.HELD):
            action = found[node_id][2]
            conditions.retrying(node_id, action.name, action.title)
        if state == DesyncState.HELD:
            held.append(node_id)
    starting = [node_id for node_id in node_ids if node_id in found]
    if starting:
        # Each row's worker is its node's lease owner: the session that starts it.
        owner = Node.objects.filter(pk=OuterRef("node_id")).values("lease_owner")[:1]
        sql, params = many(
            ("processing", alias),
            lambda ids: update_sql(
                Node2Sync.objects.using(alias).filter(pk__in=ids),
                dict(state=DesyncState.PROCESSING, started_at=db_now(), worker=Subquery(owner)),
            ),
            ("i", [found[node_id][0] for node_id in starting]),
        )
        execute(alias, sql, params)
    # The nodes' running type (the one their processing row names) and with ``recompute``
    # their status and count, then their word.
    changed = node_ids if recompute else starting
    if changed:
        running = Node2Sync.objects.filter(
            node_id=OuterRef("pk"), state=DesyncState.PROCESSING
        ).values("action_id")[:1]
        sql, params = many(
            ("running", alias, recompute),
            lambda ids: update_sql(
                nodes.filter(pk__in=ids),
                dict(
                    current_action_id=Subquery(running),
                    **(desync_columns() if recompute else {}),
                ),
            ),
            ("i", changed),
        )
        execute(alias, sql, params)
    if truth := (node_ids if recompute else held):
        store_truth_of(*truth)
    if not starting:
        return {}
    now = read_db_now()  # the runs' start on the database's clock, as ``db_now()`` writes
    worker_of = dict(zip(node_ids, workers, strict=True))
    new_runs = SyncRun.objects.using(alias).bulk_create(
        SyncRun(
            node_id=node_id,
            action=found[node_id][2],
            worker=worker_of[node_id],
            started_at=now,
            generation=found[node_id][1],
        )
        for node_id in starting
    )
    if any(run.pk is None for run in new_runs):
        raise NotPlain("this database does not return the new runs' ids")
    return {
        run.node_id: RunTicket(
            found[run.node_id][0], run.pk, run.node_id, run.action, run.generation
        )
        for run in new_runs
    }


# The kinds of call written together, in this order (each node appears once in a group).
_WRITERS: dict[Callable, Callable[[Sequence[functools.partial], str], list[Any]]] = {
    release_node: _release,
    claim_node: _claim,
    start_next_run: _start,
    finish_run_and_start_next: _success,
}

"""Many sessions' plain successes recorded, and their next types started, in a few statements.

The node sessions of one event loop hand their writes to one ``Bookkeeper``
(``sessions``), which commits them together (``runs.in_one_transaction``). The commonest of
those writes by far is a type that succeeded on a node with nothing wrong, followed by the
start of the node's next type. One at a time, that is nine statements per run
(``runs.finish_run_and_start_next``); here it is about nine for the whole group, whatever its
size: each statement of the one-at-a-time path once, over all the group's nodes.

Only the plain case is done here: a call of ``plain`` form, on a node whose worker still holds
its lease, with no condition to clear and no type failing (checked, and the nodes locked, in
one statement first). The others are left to the caller, who runs them one by one by the
path that knows every case. Should the database still differ from what the batch expects (a
row registered again while it ran), it raises ``NotPlain`` having counted nothing, and the
caller's whole group rolls back and runs one by one. The rules (what may start next, the
status, the word) are the same expressions the one-at-a-time path uses, over many nodes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, router
from django.db.models import Case, Exists, F, IntegerField, OuterRef, Q, QuerySet, Value, When

from nodes.models import Node
from sync import conditions
from sync.clock import db_now, read_db_now
from sync.engine.compiled import compiled, delete_sql, execute, fetch, select_sql, update_sql
from sync.engine.eligibility import store_truth_of, with_hold
from sync.engine.leases import _lease_until, claim_node, free_lease, release_node
from sync.engine.periodic import PROBE_TYPE
from sync.engine.runs import (
    RunTicket,
    _run_log,
    action_of,
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
    form: a session's claim, its first start, a success followed by the next start (not of
    the health probe, whose success writes other columns) and its release, with no option."""
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
        ticket, _worker, outcome, _log, error = call.args
        if outcome != Outcome.SUCCESS or error or ticket.action.name == PROBE_TYPE:
            return None
    return call.func


def _node_of(call: functools.partial) -> int:
    first = call.args[0]
    return first.node_id if isinstance(first, RunTicket) else first


def write_together(calls: Sequence[Callable]) -> list[Any]:
    """The plain calls (``plain``) among ``calls``, several of a kind written in a few
    statements for them all, inside the caller's transaction; ``LEFT`` for the calls left to
    the caller, who runs them one by one (not plain, alone of their kind, a node named twice,
    or a node that is not plain in the database: a lease to recover, a condition to clear, a
    failure to name). Raises ``NotPlain`` when the database is not as expected, having
    counted nothing: the caller rolls back and runs every call alone."""
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
        if len(indexes) < 2:
            continue
        for i, outcome in zip(indexes, writes([calls[i] for i in indexes], alias), strict=True):
            results[i] = outcome
    return results


def _pairs(calls: Sequence[functools.partial]) -> tuple[list[int], list[str]]:
    """The nodes and the workers of calls that take (node id, worker) first."""
    return [c.args[0] for c in calls], [c.args[1] for c in calls]


def _claim(calls: Sequence[functools.partial], alias: str) -> list[Any]:
    """``leases.claim_node`` of nodes no one holds: the free ones locked and read in one
    statement, those nobody held before taken in another. A free node whose lease expired
    (its runs to recover) is left to the caller; a node held by someone is not claimed."""
    node_ids, workers = _pairs(calls)
    n = len(calls)
    nodes = Node.objects.using(alias)
    statement = compiled(
        ("free", alias, n),
        "i" * n,
        lambda m: select_sql(
            nodes.filter(free_lease(), pk__in=m)
            .select_for_update()
            .order_by("pk")
            .values_list("pk", "lease_owner")
        ),
    )
    free = dict(fetch(alias, *statement(node_ids)))
    taking = [i for i, node_id in enumerate(node_ids) if free.get(node_id) == ""]
    if taking:
        t = len(taking)
        taken = execute(
            alias,
            *compiled(
                ("claim", alias, t),
                "i" * t + "s" * t,
                lambda m: update_sql(
                    nodes.filter(pk__in=m[:t]),
                    dict(
                        lease_owner=Case(
                            *(When(pk=p, then=Value(w)) for p, w in zip(m[:t], m[t:], strict=True)),
                            default=Value(""),
                        ),
                        lease_until=_lease_until(),
                        current_action_id=None,
                    ),
                ),
            )([node_ids[i] for i in taking] + [workers[i] for i in taking]),
        )
        if taken != t:
            raise NotPlain("a free node was taken after it was locked")
    return [
        True if free.get(node_id) == "" else LEFT if node_id in free else False
        for node_id in node_ids
    ]


def _renew(alias: str, node_ids: list[int], workers: list[str]) -> None:
    """Each worker's lease renewed in one UPDATE; ``NotPlain`` if one was lost (rare: the
    caller's one-by-one path answers that session)."""
    n = len(node_ids)
    statement = compiled(
        ("renew", alias, n),
        "i" * n + "s" * n,
        lambda m: update_sql(
            Node.objects.using(alias).filter(_any_of(pk=m[:n], lease_owner=m[n:])),
            {"lease_until": _lease_until()},
        ),
    )
    if execute(alias, *statement(node_ids + workers)) != n:
        raise NotPlain("a lease was lost")


def _start(calls: Sequence[functools.partial], alias: str) -> list[Any]:
    """``runs.start_next_run`` of a session's first type, for many sessions."""
    node_ids, workers = _pairs(calls)
    _renew(alias, node_ids, workers)
    started = _start_many(alias, node_ids, workers, recompute=False)
    return [started.get(node_id) for node_id in node_ids]


def _release(calls: Sequence[functools.partial], alias: str) -> list[Any]:
    """``leases.release_node`` of many sessions' nodes, each only if its worker holds it."""
    node_ids, workers = _pairs(calls)
    n = len(calls)
    statement = compiled(
        ("release", alias, n),
        "i" * n + "s" * n,
        lambda m: update_sql(
            Node.objects.using(alias).filter(_any_of(pk=m[:n], lease_owner=m[n:])),
            {"lease_owner": "", "lease_until": None, "current_action_id": None},
        ),
    )
    execute(alias, *statement(node_ids + workers))
    return [None] * n


def _any_of(**columns: list) -> Q:
    """Rows that match one of the tuples of ``columns`` (each a list, all as long)."""
    q = Q()
    for values in zip(*columns.values(), strict=True):
        q |= Q(**dict(zip(columns, values, strict=True)))
    return q


def _success(calls: Sequence[functools.partial], alias: str) -> list[Any]:
    """``finish_run_and_start_next`` of the calls (each ``plain``) whose node has nothing
    wrong and no type failing; ``LEFT`` for the others (they have conditions to clear or a
    failure to name).

    The nodes are locked first, in one statement; each statement is built once per number
    of nodes (``compiled``)."""
    node_ids = [call.args[0].node_id for call in calls]
    n = len(calls)
    # The lease is checked by the UPDATE that renews it (``_finish``): a lost one is rare.
    statement = compiled(
        ("fine?", alias, n),
        "i" * n,
        lambda m: select_sql(
            _fine(Node.objects.using(alias).filter(pk__in=m))
            .select_for_update()
            .order_by("pk")
            .values_list("pk")
        ),
    )
    fine = {row[0] for row in fetch(alias, *statement(node_ids))}
    kept = [call for call in calls if call.args[0].node_id in fine]
    done = dict(zip([c.args[0].node_id for c in kept], _finish(kept, alias), strict=True))
    return [done.get(node_id, LEFT) for node_id in node_ids]


def _fine(nodes: QuerySet[Node]) -> QuerySet[Node]:
    """Of ``nodes``, those with nothing wrong and no type failing: a success on them writes
    only the node's row (``runs._success_on_fine_node``)."""
    failing = Node2Sync.objects.filter(node_id=OuterRef("pk"), state=DesyncState.FAILED)
    return nodes.filter(condition="", contact_failed_since__isnull=True).exclude(Exists(failing))


def _finish(calls: Sequence[functools.partial], alias: str) -> list[tuple[bool, RunTicket | None]]:
    """The plain successes of locked nodes with nothing wrong: see there."""
    if not calls:
        return []
    tickets: list[RunTicket] = [call.args[0] for call in calls]
    workers: list[str] = [call.args[1] for call in calls]
    node_ids = [t.node_id for t in tickets]
    n = len(calls)
    nodes = Node.objects.using(alias)

    def run(name: str, kinds: str, build: Callable[[list], tuple[str, Sequence]], values) -> int:
        return execute(alias, *compiled((name, alias, n, len(kinds)), kinds, build)(values))

    # The success, under each worker's lease, which the same UPDATE renews.
    def fine_sql(m: list) -> tuple[str, Sequence]:
        return update_sql(
            _fine(nodes.filter(_any_of(pk=m[:n], lease_owner=m[n:]))),
            dict(
                last_contact_at=db_now(),
                last_error="",
                current_action_id=None,
                last_sync_at=db_now(),
                lease_until=_lease_until(),
            ),
        )

    if run("fine", "i" * n + "s" * n, fine_sql, node_ids + workers) != n:
        raise NotPlain("a lease was lost")

    # The runs' ends (``runs._record_end``): one log each, most often the same.
    logs = [_run_log(call.args[3], "", "") for call in calls]
    run_ids = [t.run_id for t in tickets]
    ended = dict(finished_at=db_now(), outcome=Outcome.SUCCESS, current_command="")
    runs = SyncRun.objects.using(alias)
    if len(set(logs)) == 1:
        run(
            "ended",
            "i" * n + "s",
            lambda m: update_sql(
                runs.filter(pk__in=m[:n]), dict(ended, log=m[n], current_output="")
            ),
            run_ids + logs[:1],
        )
    else:
        run(
            "ended-logs",
            "i" * n + "s" * n,
            lambda m: update_sql(
                runs.filter(pk__in=m[:n]),
                dict(
                    ended,
                    log=Case(
                        *(When(pk=r, then=Value(t)) for r, t in zip(m[:n], m[n:], strict=True)),
                        default=Value(""),
                    ),
                    current_output="",
                ),
            ),
            run_ids + logs,
        )
    gone = run(
        "done",
        "i" * (2 * n),
        lambda m: delete_sql(
            Node2Sync.objects.using(alias).filter(_any_of(pk=m[:n], generation=m[n:]))
        ),
        [t.desync_id for t in tickets] + [t.generation for t in tickets],
    )
    if gone != n:
        raise NotPlain("a type was registered again while it ran")

    started = _start_many(alias, node_ids, workers, recompute=True)
    now = time.monotonic()
    count_runs([(t.action.name, Outcome.SUCCESS, now - t.started) for t in tickets])
    return [(True, started.get(n_)) for n_ in node_ids]


def _start_many(
    alias: str, node_ids: list[int], workers: list[str], *, recompute: bool
) -> dict[int, RunTicket]:
    """``runs._start_next`` of these nodes (their leases checked by the caller), in a few
    statements: the next type of each that may start marked processing, its run opened;
    with ``recompute``, every node's status and count written too (the caller changed its
    rows). The tickets of the runs started, by node."""
    n = len(node_ids)
    nodes = Node.objects.using(alias)
    connection = connections[alias]
    # What starts next on each node: the engine's one rule (``eligibility``), over them all,
    # with the next rows and their types (``runs.next_desyncs_sql``).
    holds = compiled(
        ("next", alias, n),
        "i" * n,
        lambda m: select_sql(
            with_hold(nodes.filter(pk__in=m))
            .annotate(node_pk=F("pk"))
            .values_list("node_pk", "hold", "next_desync_id")
        ),
    )
    sql, params = holds(node_ids)
    found = {}
    held = []  # a held type a person let go on: its word changes (``runs._start_next``)
    for node_id, hold, desync_id, state, generation, *columns in fetch(
        alias, next_desyncs_sql(connection, sql, "node_pk"), params
    ):
        if hold or desync_id is None:
            continue  # done, or held back
        found[node_id] = (desync_id, generation, action_of(connection, columns))
        if state in (DesyncState.FAILED, DesyncState.HELD):
            action = found[node_id][2]
            conditions.retrying(node_id, action.name, action.title)
        if state == DesyncState.HELD:
            held.append(node_id)
    m = len(found)
    starting = [n_ for n_ in node_ids if n_ in found]
    worker_of = dict(zip(node_ids, workers, strict=True))
    if m:
        execute(
            alias,
            *compiled(
                ("processing", alias, m),
                "i" * m + "s" * m,
                lambda k: update_sql(
                    Node2Sync.objects.using(alias).filter(pk__in=k[:m]),
                    dict(
                        state=DesyncState.PROCESSING,
                        started_at=db_now(),
                        worker=Case(
                            *(When(pk=d, then=Value(w)) for d, w in zip(k[:m], k[m:], strict=True)),
                            default=Value(""),
                        ),
                    ),
                ),
            )([found[n_][0] for n_ in starting] + [worker_of[n_] for n_ in starting]),
        )
    # The nodes' running type (and with ``recompute`` their status and count), then their word.
    changed = node_ids if recompute else starting
    c = len(changed)
    if c:
        execute(
            alias,
            *compiled(
                ("running", alias, c, m, recompute),
                "i" * (c + 2 * m),
                lambda k: update_sql(
                    nodes.filter(pk__in=k[:c]),
                    dict(
                        current_action_id=Case(
                            *(
                                When(pk=p, then=Value(a))
                                for p, a in zip(k[c : c + m], k[c + m :], strict=True)
                            ),
                            default=None,
                            output_field=IntegerField(),
                        ),
                        **(desync_columns() if recompute else {}),
                    ),
                ),
            )(changed + starting + [found[n_][2].pk for n_ in starting]),
        )
    if truth := (node_ids if recompute else held):
        store_truth_of(*truth)
    if not m:
        return {}
    now = read_db_now()  # the runs' start on the database's clock, as ``db_now()`` writes
    new_runs = SyncRun.objects.using(alias).bulk_create(
        SyncRun(
            node_id=n_,
            action=found[n_][2],
            worker=worker_of[n_],
            started_at=now,
            generation=found[n_][1],
        )
        for n_ in starting
    )
    if any(r.pk is None for r in new_runs):
        raise NotPlain("this database does not return the new runs' ids")
    return {
        r.node_id: RunTicket(found[r.node_id][0], r.pk, r.node_id, r.action, r.generation)
        for r in new_runs
    }


# The kinds of call written together, in this order (each node appears once in a group).
_WRITERS: dict[Callable, Callable[[Sequence[functools.partial], str], list[Any]]] = {
    release_node: _release,
    claim_node: _claim,
    start_next_run: _start,
    finish_run_and_start_next: _success,
}

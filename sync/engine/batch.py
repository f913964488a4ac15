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

from django.db import connections, router
from django.db.models import Case, Exists, F, IntegerField, OuterRef, Q, QuerySet, Value, When

from nodes.models import Node
from sync import conditions
from sync.clock import db_now, read_db_now
from sync.engine.compiled import compiled, delete_sql, execute, fetch, select_sql, update_sql
from sync.engine.eligibility import store_truth_of, with_hold
from sync.engine.leases import _lease_until
from sync.engine.periodic import PROBE_TYPE
from sync.engine.runs import (
    RunTicket,
    _run_log,
    action_of,
    finish_run_and_start_next,
    next_desyncs_sql,
)
from sync.engine.tally import count_runs
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun, desync_columns


class NotPlain(Exception):  # noqa: N818 - a signal to the caller, not an error
    """The database is not as the batch expects: the group is written one by one."""


# The keyword arguments of ``finish_run_and_start_next`` that a plain call leaves as they are.
_PLAIN_KWARGS = {
    "detail": "",
    "action_ids": None,
    "ignore_backoff": False,
    "ignore_maintenance": False,
    "start_next": True,
    "skip": (),
}


def plain(call: Callable) -> bool:
    """Whether ``call`` is a ``finish_run_and_start_next`` of a success with no error, that
    starts the node's next type with no option (what a session asks after each type that
    went well), and not of the health probe (whose success writes other columns)."""
    if not isinstance(call, functools.partial) or call.func is not finish_run_and_start_next:
        return False
    if len(call.args) != 5:
        return False
    ticket, _worker, outcome, _log, error = call.args
    if outcome != Outcome.SUCCESS or error or ticket.action.name == PROBE_TYPE:
        return False
    for name, value in call.keywords.items():
        if name == "kind":
            continue  # a success's kind means nothing
        if name not in _PLAIN_KWARGS or (value or None) != (_PLAIN_KWARGS[name] or None):
            return False
    return True


def _any_of(**columns: list) -> Q:
    """Rows that match one of the tuples of ``columns`` (each a list, all as long)."""
    q = Q()
    for values in zip(*columns.values(), strict=True):
        q |= Q(**dict(zip(columns, values, strict=True)))
    return q


def finish_plain_and_start_next(
    calls: Sequence[functools.partial],
) -> list[tuple[bool, RunTicket | None] | None]:
    """``finish_run_and_start_next`` of the calls (each ``plain``) whose node has nothing
    wrong and no type failing, inside the caller's transaction; None for the others, which
    the caller runs one by one (they have conditions to clear or a failure to name). Raises
    ``NotPlain`` if the database is not as expected (a lease lost, a row registered again),
    having counted nothing: the caller's transaction rolls back and runs every call alone.

    The nodes are locked first, in one statement; each statement is built once per number
    of nodes (``compiled``)."""
    tickets: list[RunTicket] = [call.args[0] for call in calls]
    node_ids = [t.node_id for t in tickets]
    if len(set(node_ids)) != len(node_ids):
        return [None] * len(calls)
    n = len(calls)
    alias = router.db_for_write(Node)
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
    return [done.get(node_id) for node_id in node_ids]


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

    # What starts next on each node: the engine's one rule (``eligibility``), over them all,
    # with the next rows and their types (``runs.next_desyncs_sql``).
    connection = connections[alias]
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
    for node_id, hold, desync_id, state, generation, *columns in fetch(
        alias, next_desyncs_sql(connection, sql, "node_pk"), params
    ):
        if hold or desync_id is None:
            continue  # done, or held back
        found[node_id] = (desync_id, generation, action_of(connection, columns))
        if state in (DesyncState.FAILED, DesyncState.HELD):
            action = found[node_id][2]
            conditions.retrying(node_id, action.name, action.title)  # as ``runs._start_next``
    m = len(found)
    starting = [n_ for n_ in node_ids if n_ in found]
    desync_ids = [found[n_][0] for n_ in starting]
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
            )(desync_ids + [worker_of[n_] for n_ in starting]),
        )
    # The nodes' running type, status and count, then their word (``runs._start_next``).
    execute(
        alias,
        *compiled(
            ("status", alias, n, m),
            "i" * (n + 2 * m),
            lambda k: update_sql(
                nodes.filter(pk__in=k[:n]),
                dict(
                    current_action_id=Case(
                        *(
                            When(pk=p, then=Value(a))
                            for p, a in zip(k[n : n + m], k[n + m :], strict=True)
                        ),
                        default=None,
                        output_field=IntegerField(),
                    ),
                    **desync_columns(),
                ),
            ),
        )(node_ids + starting + [found[n_][2].pk for n_ in starting]),
    )
    store_truth_of(*node_ids)
    new_runs = []
    if m:
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
    started = {
        r.node_id: RunTicket(found[r.node_id][0], r.pk, r.node_id, r.action, r.generation)
        for r in new_runs
    }
    now = time.monotonic()
    count_runs([(t.action.name, Outcome.SUCCESS, now - t.started) for t in tickets])
    return [(True, started.get(n_)) for n_ in node_ids]

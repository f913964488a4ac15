"""Why work is not running now: one rule, written once in SQL, used everywhere.

Every path that starts work asks this module: the session's start of its next type
(``runs.start_next_run``), the session's look for work registered meanwhile
(``runs.has_due_work``), the sweep's choice of due nodes, and a task that takes further due
nodes while it has room (``sessions``); the pages ask it why each desynchronization waits. One
definition, so the sweep never enqueues a node that a session would then refuse to run, a task
never takes a node that the sweep would leave alone, and the page says what the engine does.

A type needs other types (``@synchronizer(needs=...)``; by default every type before it in
priority order). A desynchronization does not start now, for the first of these reasons:

- ``maintenance``: an admin took the node out of the panel's hands;
- ``host-key``: the node presented another host key; nothing can run until it is accepted;
- ``running``: it runs now; ``busy``: another type of the node runs now (one at a time);
- ``cancelled``: someone cancelled it; it waits for a person (retry, force) or new data;
- ``unreachable``: it failed because the node did not answer, and waits for its retry;
- ``backoff``: it failed and waits for its retry, on the database's clock;
- ``needs``: a type it needs is registered on the node and not done yet (failing, cancelled,
  held, or simply before it): it waits for that one, and only what needs it waits.

The node's next desynchronization is the first in priority order that nothing holds back; the
node is held back (``with_hold``) when there is none, for the reason of its first one.

Whether someone holds the node's lease is the claim's business (``leases.free_lease``), not a
reason here: a session asks this while it holds the lease itself.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence

from django.db import connections, models, router
from django.db.models import Case, Exists, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.lookups import Exact
from django.utils import timezone

from nodes.choices import NodeCondition, NodeShown, NodeStatus
from nodes.models import Node
from nodes.truth import truth_columns
from sync.clock import db_now
from sync.engine.compiled import compiled, execute, many, select_sql, update_sql
from sync.models import DesyncState, Node2Sync


class Hold(models.TextChoices):
    """Why a desynchronization (or a node's work) does not start now (none: it may)."""

    MAINTENANCE = "maintenance", "In maintenance"
    HOST_KEY = "host-key", "Host key changed"
    NOTHING = "nothing", "Nothing registered"
    RUNNING = "running", "Running now"
    BUSY = "busy", "Another type runs now"
    CANCELLED = "cancelled", "Cancelled"
    UNREACHABLE = "unreachable", "Unreachable: waiting for its retry"
    BACKOFF = "backoff", "Waiting for its retry"
    NEEDS = "needs", "Waiting for a type it needs"


# What an admin's "run it now" (``nodesync --force``, retry) overrides: the retry's wait and
# a cancellation, never a host key or a type that runs.
RETRY_HOLDS = (Hold.BACKOFF, Hold.UNREACHABLE, Hold.CANCELLED)


def _needed_rows(action_ids: Collection[int] | None) -> QuerySet[Node2Sync]:
    """The rows of the same node that the outer row's type needs (registered, so not done),
    first in priority order. Outer: a ``Node2Sync`` row."""
    before = Q(action__priority__lt=OuterRef("action__priority")) | Q(
        action__priority=OuterRef("action__priority"), action_id__lt=OuterRef("action_id")
    )
    needs_before = Exact(OuterRef("action__needs_before"), True)
    rows = Node2Sync.objects.filter(node_id=OuterRef("node_id")).filter(
        Q(action__needed_by=OuterRef("action_id")) | (Q(needs_before) & before)
    )
    if action_ids is not None:
        rows = rows.filter(action_id__in=list(action_ids))
    return rows.order_by("action__priority", "action_id")


def with_row_hold(
    rows: QuerySet[Node2Sync],
    *,
    action_ids: Collection[int] | None = None,
    ignore: Collection[Hold] = (),
) -> QuerySet[Node2Sync]:
    """``rows`` annotated with ``hold`` (a ``Hold`` value, "" when it may start now) and, for
    ``needs``, ``needed_title`` and ``needed_error``: the first type it waits for and why that
    one is not done (its error when it fails)."""
    needed = _needed_rows(action_ids)
    other_running = Node2Sync.objects.filter(
        node_id=OuterRef("node_id"), state=DesyncState.PROCESSING
    ).exclude(pk=OuterRef("pk"))
    waiting = Q(next_attempt_at__gt=db_now()) & ~Q(state=DesyncState.HELD)
    reasons = [
        (Hold.MAINTENANCE, Q(node__maintenance=True)),
        (Hold.HOST_KEY, Q(node__condition=NodeCondition.HOST_KEY_CHANGED)),
        (Hold.RUNNING, Q(state=DesyncState.PROCESSING)),
        (Hold.BUSY, Exists(other_running)),
        (Hold.CANCELLED, Q(state=DesyncState.HELD)),
        (Hold.UNREACHABLE, waiting & Q(node__contact_failed_since__isnull=False)),
        (Hold.BACKOFF, waiting),
        (Hold.NEEDS, Exists(needed)),
    ]
    whens = [When(q, then=Value(r.value)) for r, q in reasons if r not in ignore]
    return rows.annotate(
        hold=Case(*whens, default=Value(""), output_field=models.CharField()),
        needed_title=Subquery(needed.values("action__title")[:1]),
        needed_error=Subquery(needed.values("last_error")[:1]),
    )


def with_hold(
    nodes: QuerySet[Node],
    *,
    action_ids: Collection[int] | None = None,
    ignore: Collection[Hold] = (),
    skip: Collection[int] = (),
) -> QuerySet[Node]:
    """``nodes`` annotated with ``hold`` (a ``Hold`` value, "" when work may start now),
    ``next_desync_id`` (the desynchronization that would start: the first in priority order
    that nothing holds back) and ``next_at`` (since when it is due).

    ``action_ids`` limits the work to those types (``nodesync --action``); ``ignore`` drops
    reasons an admin overrides (``nodesync --force`` ignores maintenance and the retry's wait);
    ``skip`` names desynchronizations not to start again (those that failed in this session:
    a forced session runs each type once), though they still hold back what needs them.
    """
    if Hold.NOTHING in ignore or Hold.RUNNING in ignore or Hold.BUSY in ignore:
        raise ValueError("nothing registered, or running now, is never started")
    rows = Node2Sync.objects.filter(node=OuterRef("pk"))
    if action_ids is not None:
        rows = rows.filter(action_id__in=list(action_ids))
    rows = rows.exclude(pk__in=list(skip)).order_by("action__priority", "action_id")
    held = with_row_hold(rows, action_ids=action_ids, ignore=ignore)
    may_start = held.filter(hold="")
    running = Node2Sync.objects.filter(node=OuterRef("pk"), state=DesyncState.PROCESSING)
    node_reasons = [
        (Hold.MAINTENANCE, Q(maintenance=True)),
        (Hold.HOST_KEY, Q(condition=NodeCondition.HOST_KEY_CHANGED)),
        (Hold.NOTHING, ~Exists(rows)),
        (Hold.RUNNING, Exists(running)),
    ]
    whens = [When(q, then=Value(r.value)) for r, q in node_reasons if r not in ignore]
    return nodes.annotate(
        next_desync_id=Subquery(may_start.values("pk")[:1]),
        next_at=Subquery(may_start.values("next_attempt_at")[:1]),
    ).annotate(
        hold=Case(
            *whens,
            When(next_desync_id__isnull=False, then=Value("")),
            default=Subquery(held.values("hold")[:1]),
            output_field=models.CharField(),
        )
    )


def node_hold_sql(
    node_id: int,
    *,
    action_ids: Collection[int] | None = None,
    ignore: Collection[Hold] = (),
    skip: Collection[int] = (),
) -> tuple[str, list]:
    """The SQL and parameters of ``with_hold`` for one node, selecting (``hold``,
    ``next_desync_id``): no row when the node is gone.

    The same expression, but compiled once per shape (the types asked for, what is ignored,
    how many rows are skipped) and given the ids as parameters: building this expression
    tree costs Django several milliseconds, many times what the database takes to answer it,
    and a session asks it before every type it starts.
    """
    alias = router.db_for_read(Node)
    key = (
        "hold",
        alias,
        None if action_ids is None else tuple(sorted(action_ids)),
        tuple(sorted(ignore)),
        len(skip),
    )

    def build(marks: list) -> tuple[str, Sequence]:
        query = with_hold(
            Node.objects.using(alias).filter(pk=marks[0]),
            action_ids=action_ids,
            ignore=ignore,
            skip=marks[1:],
        ).values_list("hold", "next_desync_id")[:1]
        return select_sql(query)

    return compiled(key, "i" * (len(skip) + 1), build)([node_id, *skip])


def node_hold(
    node_id: int,
    *,
    action_ids: Collection[int] | None = None,
    ignore: Collection[Hold] = (),
    skip: Collection[int] = (),
) -> tuple[str, int | None]:
    """``with_hold`` for one node: (``hold``, ``next_desync_id``); ``Hold.NOTHING`` for a
    node that is gone. See ``node_hold_sql``."""
    sql, params = node_hold_sql(node_id, action_ids=action_ids, ignore=ignore, skip=skip)
    with connections[router.db_for_read(Node)].cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return Hold.NOTHING, None
    return row[0] or "", row[1]


# Holds that pass by themselves (a retry comes when it is due) or that the node's own word
# already says (maintenance, a changed host key lead the Status cell): what is left of a row's
# holds then waits for a person (cancelled, or held back by a type that is).
PASSING_HOLDS = (Hold.MAINTENANCE, Hold.HOST_KEY, Hold.UNREACHABLE, Hold.BACKOFF)
GOING_ON = ("", Hold.RUNNING, Hold.BUSY)


def goes_on() -> Q:
    """Whether a node's work goes on without a person, as a condition on nodes: one of its
    desynchronizations runs, may start, or starts by itself once its retry is due. The
    ``can_run`` of ``nodes.truth``.

    It is ``with_row_hold`` with the ``PASSING_HOLDS`` ignored, some row's hold among
    ``GOING_ON``, reduced to what decides it: a row runs (then every row is running or busy),
    or a row is not cancelled and needs no registered type (``_needed_rows``, the one
    definition of needs). The whole expression costs several times more to build for each
    write; ``tests/test_truth.py`` checks that the two agree. It does not depend on the clock
    (a backoff passes by itself), so the stored word stays true while time goes by, and it
    reads only ``node2sync`` and the types, never ``node``: MariaDB refuses an UPDATE of
    ``node`` that selects from it."""
    rows = Node2Sync.objects.filter(node_id=OuterRef("pk"))
    free = ~Q(state=DesyncState.HELD) & ~Exists(_needed_rows(None))
    return Q(Exists(rows.filter(Q(state=DesyncState.PROCESSING) | free)))


@functools.cache
def _truth_columns() -> dict:
    # Expressions are resolved afresh by each query, so they are built once.
    return truth_columns(goes_on())


def store_truth(nodes: QuerySet[Node]) -> int:
    """Write ``shown`` and ``usable`` of ``nodes`` by the one rule (``nodes.truth``), in one
    UPDATE. The engine calls it wherever the status, the conditions, maintenance or the
    desynchronizations change, in the same transaction."""
    return nodes.update(**_truth_columns())


def store_truth_of(*node_ids: int) -> int:
    """``store_truth`` of these nodes: the same UPDATE, built once per number of nodes
    (``compiled.many``) and run with their ids. The engine writes the word after every run, and
    building this expression costs Django many times what the database takes to run it."""
    alias = router.db_for_write(Node)
    sql, params = many(
        ("truth", alias),
        lambda ids: update_sql(Node.objects.using(alias).filter(pk__in=ids), _truth_columns()),
        ("i", node_ids),
    )
    return execute(alias, sql, params)


def startable(nodes: QuerySet[Node] | None = None) -> QuerySet[Node]:
    """The nodes (of ``nodes``, default all) whose next desynchronization may start now."""
    return with_hold(Node.objects.all() if nodes is None else nodes).filter(hold="")


def why_not_running(node_id: int) -> Hold | None:
    """Why the node's work does not start now; None when it may. The database evaluates the
    same expression the sweep filters on, so the answer and the sweep's choice agree."""
    hold = with_hold(Node.objects.filter(pk=node_id)).values_list("hold", flat=True).first()
    if hold is None:
        return Hold.NOTHING  # the node is gone
    return Hold(hold) if hold else None


# The synchronizer's words in the Status cell when its work does not go on now.
_WAITING_WORDS = {
    Hold.MAINTENANCE: "Waiting: maintenance",
    Hold.HOST_KEY: "Waiting: host key changed",
    Hold.CANCELLED: "Waiting: cancelled, until someone retries it",
    Hold.UNREACHABLE: "Waiting for its retry (unreachable)",
    Hold.BACKOFF: "Waiting for its retry",
    Hold.NEEDS: "Waiting for a type it needs",
}


def work_line(node: Node) -> str:
    """The synchronizer's part of the Status cell, after the lead word: the status while
    something can run ("Installation in progress"), else why nothing does ("Waiting: host key
    changed"); "" when the node's status is Ready or a type runs (the cell names it).

    ``node`` comes from ``with_hold`` (``hold``); without it, the stored truth says whether
    its work goes on."""
    if node.is_processing or node.status == NodeStatus.READY:
        return ""
    hold = getattr(node, "hold", None)
    if hold is None:
        if node.maintenance:
            hold = Hold.MAINTENANCE
        elif node.condition == NodeCondition.HOST_KEY_CHANGED:
            hold = Hold.HOST_KEY
        else:
            hold = Hold.CANCELLED if node.shown == NodeShown.WAITING else ""
    if hold in ("", Hold.RUNNING, Hold.BUSY, Hold.NOTHING):
        return str(NodeStatus(node.status).label)
    return _WAITING_WORDS[Hold(hold)]


def desync_holds(node: Node) -> QuerySet[Node2Sync]:
    """The node's desynchronizations in priority order, each with why it does not run now
    (``hold``, ``needed_title``, ``needed_error``): what the node page lists."""
    rows = Node2Sync.objects.filter(node=node).select_related("action")
    return with_row_hold(rows).order_by("action__priority", "action_id")


def why_waiting(row: Node2Sync) -> str:
    """The reason a row of ``with_row_hold`` does not run now, in the page's words; "" when it
    runs or may start. A type held back by another names it and why that one is not done:
    "Waiting for Software packages (failing: E: Unable to locate package nope)"."""
    hold = getattr(row, "hold", "")
    if hold == Hold.NEEDS:
        failing = f" (failing: {row.needed_error})" if row.needed_error else ""
        return f"Waiting for {row.needed_title}{failing}"
    if hold == Hold.CANCELLED:
        at = timezone.localtime(row.next_attempt_at).strftime("%H:%M")  # held since then
        who = row.last_error[:1].upper() + row.last_error[1:] if row.last_error else "Cancelled"
        return f"{who} at {at}"
    if hold in ("", Hold.RUNNING, Hold.BACKOFF):
        return ""  # the state and next attempt already say it
    return Hold(hold).label

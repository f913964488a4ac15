"""Why a node's work is not running now: one rule, written once in SQL, used everywhere.

Every path that starts work asks this module: the session's start of its next type
(``runs.start_next_run``), the session's look for work registered meanwhile
(``runs.has_due_work``), the sweep's choice of due nodes, and a task that takes further due
nodes while it has room (``sessions``). One definition, so the sweep never enqueues a node
that a session would then refuse to run, and a task never takes a node that the sweep would
leave alone.

A node's next desynchronization is its first in priority order (order is a dependency: the
types after it wait for it). The node's work is held back, for the first of these reasons:

- ``maintenance``: an admin took the node out of the panel's hands;
- ``nothing``: nothing is registered;
- ``running``: the next type runs now;
- ``backoff``: the next type failed (or was cancelled) and waits for its retry, on the
  database's clock.

Whether someone holds the node's lease is the claim's business (``leases.free_lease``), not a
reason here: a session asks this while it holds the lease itself.
"""

from __future__ import annotations

from collections.abc import Collection

from django.db import models
from django.db.models import Case, OuterRef, QuerySet, Subquery, Value, When

from nodes.models import Node
from sync.clock import db_now
from sync.models import DesyncState, Node2Sync


class Hold(models.TextChoices):
    """Why a node's next desynchronization does not start now (none: it may)."""

    MAINTENANCE = "maintenance", "In maintenance"
    NOTHING = "nothing", "Nothing registered"
    RUNNING = "running", "Running now"
    BACKOFF = "backoff", "Waiting for its retry"


def with_hold(
    nodes: QuerySet[Node],
    *,
    action_ids: Collection[int] | None = None,
    ignore: Collection[Hold] = (),
) -> QuerySet[Node]:
    """``nodes`` annotated with ``hold`` (a ``Hold`` value, "" when the work may start now)
    and ``next_desync_id`` (the desynchronization that would start).

    ``action_ids`` limits the work to those types (``nodesync --action``); ``ignore`` drops
    reasons an admin overrides (``nodesync --force`` ignores maintenance and backoff).
    """
    first = Node2Sync.objects.filter(node=OuterRef("pk"))
    if action_ids is not None:
        first = first.filter(action_id__in=list(action_ids))
    first = first.order_by("action__priority", "action_id")
    reasons = [
        (Hold.MAINTENANCE, When(maintenance=True, then=Value(Hold.MAINTENANCE.value))),
        (Hold.NOTHING, When(next_state__isnull=True, then=Value(Hold.NOTHING.value))),
        (Hold.RUNNING, When(next_state=DesyncState.PROCESSING, then=Value(Hold.RUNNING.value))),
        (Hold.BACKOFF, When(next_at__gt=db_now(), then=Value(Hold.BACKOFF.value))),
    ]
    if Hold.NOTHING in ignore or Hold.RUNNING in ignore:
        raise ValueError("nothing registered, or running now, is never started")
    whens = [when for reason, when in reasons if reason not in ignore]
    return nodes.annotate(
        next_desync_id=Subquery(first.values("pk")[:1]),
        next_state=Subquery(first.values("state")[:1]),
        next_at=Subquery(first.values("next_attempt_at")[:1]),
    ).annotate(hold=Case(*whens, default=Value(""), output_field=models.CharField()))


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

"""Actions on the inventory: maintenance, deleting nodes (adding, editing, roles and host
keys follow the same shape).

Each checks rights first, does its network steps (none here), then writes its rows and its
audit entry in one transaction, and returns an ``ActionResult``.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from nodes.models import Node
from sync import engine
from sync.actions.results import Act, ActionResult, NodeOutcome
from sync.actions.rules import check_delete, check_work
from sync.actor import Actor
from sync.audit import node_targets, record
from sync.engine import retry_on_transient_errors
from sync.models import SyncRun, with_running_title


@retry_on_transient_errors
def set_maintenance(
    actor: Actor, nodes: Sequence[Node], on: bool, *, stop_running: bool = False
) -> ActionResult:
    """Maintenance on (no new sessions) or off (waiting work runs).

    Turning it on, the caller chooses what happens to a run going on: it finishes (the
    default), or with ``stop_running`` it is cancelled now (held, like any cancel), so that
    "the panel runs nothing here" is true at once. Each node's outcome says what it was and
    is: ``on``, ``on, run stopped``, ``off``, ``already on``/``already off``; ``titles`` names
    the run still finishing (or stopped) on a node put in maintenance.
    """
    check_work(actor, nodes)
    act = Act.MAINTENANCE_ON if on else Act.MAINTENANCE_OFF
    ids = [n.pk for n in nodes]
    with transaction.atomic():
        rows = list(with_running_title(Node.objects.filter(pk__in=ids)).order_by("pk"))
        before = {r.name: r.maintenance for r in rows}
        engine.set_maintenance(rows, on)
        stopped = set()
        if on and stop_running:
            stopped = {r.pk for r in rows if r.running_title and engine.cancel_node(r, actor.label)}
        state = "on" if on else "off"
        outcomes = tuple(
            NodeOutcome(
                r.pk,
                r.name,
                (state if r.maintenance != on else f"already {state}")
                + (", run stopped" if r.pk in stopped else ""),
                (r.running_title,) if on and r.running_title else (),
            )
            for r in rows
        )
        entry = record(
            actor,
            act,
            node_targets(rows),
            summary=f"Maintenance {state}."
            + (f" Stopped the running type on {len(stopped)} node(s)." if stopped else ""),
            before={"maintenance": before},
            after={"maintenance": {name: on for name in before}},
        )
    return ActionResult(act, entry.pk, outcomes, count=len(rows))


# What a deletion keeps of each node's run history, in its audit entry (the runs themselves go
# with the node): enough to read why it was deleted, bounded for a bulk delete of a fleet.
RUNS_KEPT_ON_DELETE = 20
LOG_TAIL_KEPT_ON_DELETE = 1000


def run_history(node: Node) -> list[dict]:
    """The node's newest runs as the deletion's entry keeps them: type, outcome, times, who
    ended it by hand, and the tail of the log."""
    runs = SyncRun.objects.filter(node=node).select_related("action")[:RUNS_KEPT_ON_DELETE]
    return [
        {
            "type": run.action.name,
            "outcome": run.outcome,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "acted_by": run.acted_by,
            "log_tail": run.log[-LOG_TAIL_KEPT_ON_DELETE:],
        }
        for run in runs
    ]


@retry_on_transient_errors
def delete_nodes(actor: Actor, nodes: Sequence[Node]) -> ActionResult:
    """Delete nodes. The entry keeps each node's id, name, address, roles and newest runs as
    text: it outlives them, and the node's history stays readable there."""
    check_delete(actor, nodes)
    ids = [n.pk for n in nodes]
    with transaction.atomic():
        rows = list(Node.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
        gone = {
            r.name: {
                "id": r.pk,
                "address": r.address,
                "transport": r.transport,
                "roles": sorted(r.roles.values_list("name", flat=True)),
                "runs": run_history(r),
            }
            for r in rows
        }
        Node.objects.filter(pk__in=[r.pk for r in rows]).delete()
        entry = record(
            actor,
            Act.NODE_DELETE,
            node_targets(rows),
            summary=f"Deleted {len(rows)} node(s).",
            before={"nodes": gone},
        )
    return ActionResult(
        Act.NODE_DELETE,
        entry.pk,
        tuple(NodeOutcome(r.pk, r.name, "deleted") for r in rows),
        count=len(rows),
    )

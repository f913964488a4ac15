"""Actions on a node's synchronization work: register, retry, force, cancel, skip.

Each wraps the engine's rule (``sync.engine``: nothing else writes ``node2sync`` or the lease)
with the acting user, the rights check and the audit entry, in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from nodes.models import Node
from sync import engine
from sync.actions.results import Act, ActionResult, NodeOutcome
from sync.actions.rules import check_work
from sync.actor import Actor
from sync.audit import Target, node_targets, record
from sync.engine import retry_on_transient_errors
from sync.models import Outcome, SyncAction, SyncRun


def _types_text(actions: Sequence[SyncAction] | None) -> str:
    return "every type" if actions is None else ", ".join(a.name for a in actions)


@retry_on_transient_errors
def register_work(
    actor: Actor, nodes: Sequence[Node], actions: Sequence[SyncAction] | None = None
) -> ActionResult:
    """Synchronize again: register ``actions`` (every type when None) for ``nodes``."""
    check_work(actor, nodes)
    with transaction.atomic():
        count = engine.register_desync(nodes, actions)
        entry = record(
            actor,
            Act.REGISTER,
            node_targets(nodes) + [Target("type", a.pk, a.name) for a in actions or ()],
            summary=f"Registered {_types_text(actions)} ({count} desynchronizations).",
        )
    return ActionResult(
        Act.REGISTER,
        entry.pk,
        tuple(NodeOutcome(n.pk, n.name, "registered") for n in nodes),
        count=count,
    )


@retry_on_transient_errors
def retry_work(actor: Actor, nodes: Sequence[Node]) -> ActionResult:
    """Retry now: the nodes' failed desynchronizations stop waiting for their backoff."""
    check_work(actor, nodes)
    with transaction.atomic():
        count = engine.retry_now(nodes)
        entry = record(
            actor, Act.RETRY, node_targets(nodes), summary=f"{count} desynchronization(s) due now."
        )
    return ActionResult(
        Act.RETRY,
        entry.pk,
        tuple(NodeOutcome(n.pk, n.name, "due now") for n in nodes),
        count=count,
    )


@retry_on_transient_errors
def force_work(actor: Actor, node: Node, hand_to_cluster: bool = True) -> ActionResult:
    """Force completion: take the node from a worker that hangs; its run is recorded as forced.

    ``hand_to_cluster`` False: the caller runs the node's work itself (``nodesync --force``).
    The outcome is ``forced`` (with the titles of the runs the engine recorded as forced),
    ``nothing running`` or ``busy`` (the lease could not be taken: try again).
    """
    check_work(actor, [node])
    with transaction.atomic():
        running = list(
            SyncRun.objects.filter(node=node, outcome=Outcome.RUNNING).values_list("pk", flat=True)
        )
        taken = engine.take_over_node(node, actor.label[:30], hand_to_cluster)
        forced = tuple(
            SyncRun.objects.filter(pk__in=running, outcome=Outcome.FORCED)
            .order_by("pk")
            .values_list("action__title", flat=True)
        )
        outcome = "busy" if not taken else "forced" if forced else "nothing running"
        entry = record(
            actor,
            Act.FORCE,
            node_targets([node]),
            summary=f"{outcome}: {', '.join(forced)}" if forced else outcome,
        )
    return ActionResult(Act.FORCE, entry.pk, (NodeOutcome(node.pk, node.name, outcome, forced),))


@retry_on_transient_errors
def cancel_work(actor: Actor, node: Node) -> ActionResult:
    """End the synchronizer running on the node now; its type fails and waits for its retry."""
    check_work(actor, [node])
    with transaction.atomic():
        ended = tuple(engine.cancel_node(node, actor.label))
        outcome = "cancelled" if ended else "nothing running"
        entry = record(
            actor,
            Act.CANCEL,
            node_targets([node]),
            summary=f"{outcome}: {', '.join(ended)}" if ended else outcome,
        )
    return ActionResult(Act.CANCEL, entry.pk, (NodeOutcome(node.pk, node.name, outcome, ended),))


@retry_on_transient_errors
def skip_work(
    actor: Actor, node: Node, actions: Sequence[SyncAction] | None = None
) -> ActionResult:
    """Drop the node's desynchronizations (only ``actions``'s when given) without running them."""
    check_work(actor, [node])
    with transaction.atomic():
        ids = [a.pk for a in actions] if actions is not None else None
        skipped = tuple(engine.skip_desyncs(node, ids, actor.label))
        outcome = "skipped" if skipped else "nothing to skip"
        entry = record(
            actor,
            Act.SKIP,
            node_targets([node]) + [Target("type", a.pk, a.name) for a in actions or ()],
            summary=f"{outcome}: {', '.join(skipped)}" if skipped else outcome,
        )
    return ActionResult(Act.SKIP, entry.pk, (NodeOutcome(node.pk, node.name, outcome, skipped),))

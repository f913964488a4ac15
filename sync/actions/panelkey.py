"""Rotating the panel's SSH key on the fleet, as an action: who rotated it, from which key to
which, and how each node ended.

The rotation itself is ``nodes.keyrotation`` (network steps, each node's state recorded as it
goes, so that an interrupted rotation never leaves a node without a working key: those writes
cannot wait for the end). The entry is written once it is over, naming every node tried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.core.exceptions import PermissionDenied
from django.db import transaction

from nodes.keyrotation import NodeRotation, RotationResult, rotate
from nodes.models import Node
from sync.actions.results import Act, ActionResult, NodeOutcome
from sync.actor import Actor
from sync.audit import Target, record


def rotate_panel_key(
    actor: Actor,
    *,
    from_addresses: Sequence[str] = (),
    template: str,
    parallel: int,
    on_node: Callable[[NodeRotation, int, int], None] | None = None,
) -> ActionResult:
    """Replace the panel's key on every SSH node (``nodes.keyrotation.rotate``); one entry.

    Raises what ``rotate`` raises (bad input, a rotation already running); nothing is
    recorded then. ``extra["rotation"]`` is the ``RotationResult``.
    """
    if not getattr(actor.subject, "is_superuser", False):
        raise PermissionDenied("Only a superuser may rotate the panel's SSH key.")
    result: RotationResult = rotate(
        from_addresses=from_addresses, template=template, parallel=parallel, on_node=on_node
    )
    ids = dict(
        Node.objects.filter(name__in=[n.node for n in result.nodes]).values_list("name", "pk")
    )
    with transaction.atomic():
        entry = record(
            actor,
            Act.ROTATE_KEY,
            [Target("node", ids.get(n.node), n.node) for n in result.nodes],
            summary=(
                f"{len(result.nodes) - len(result.left)} node(s) rotated, "
                f"{len(result.left)} left"
                + ("; old key removed." if result.old_key_removed else ".")
            ),
            before={"panel_key": result.old_fingerprint},
            after={
                "panel_key": result.new_fingerprint,
                "nodes": {n.node: n.state for n in result.nodes},
            },
        )
    return ActionResult(
        Act.ROTATE_KEY,
        entry.pk,
        tuple(NodeOutcome(ids.get(n.node, 0), n.node, n.state) for n in result.nodes),
        extra={"rotation": result},
    )

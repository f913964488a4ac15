"""The rights every action asks before it changes anything: the permission of the kind of
action, then the rules of ``sync.rights`` where the action changes what a node is or gets.

Raises PermissionDenied naming why; pages answer 403, the admin an error, commands never
meet it (a command acts with every right).
"""

from __future__ import annotations

from collections.abc import Iterable

from nodes.access import CHANGE, DELETE, check_perms
from nodes.models import Node
from sync.actor import Actor
from sync.rights import NodeChange, check_node_change


def check_work(actor: Actor, nodes: Iterable[Node]) -> None:
    """Running, stopping, skipping work and maintenance: Operators' ``change_node``. They
    change nothing that lands on a node, so the panel's own server is no exception."""
    check_perms(actor.subject, CHANGE)


def check_delete(actor: Actor, nodes: Iterable[Node]) -> None:
    """``delete_node``, and nobody but a superuser deletes the panel's own server."""
    check_perms(actor.subject, DELETE)
    for node in nodes:
        check_node_change(actor.subject, node, NodeChange(deleting=True))

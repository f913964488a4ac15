"""Adding a node with its registrations: the rule the add action (``sync.actions.add_node``)
builds on.

A node that is saved without its desynchronizations would sit Ready and never be set up, so
the save, the roles and the registrations go together. Accepting a host key is the action
``sync.actions.accept_host_key`` itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from nodes.models import Node, Role
from sync.actor import Actor
from sync.engine import register_desync
from sync.panelhost import flag_if_panel_host
from sync.rights import NodeChange, check_node_change


def add_node(node: Node, roles: Iterable[Role] = (), *, by: Actor) -> int:
    """Validate and save a new ``node``, set its roles and register every type for it.

    ``by`` is who acts: the rights rules (``sync.rights``) are asked again here, whatever
    the caller checked, and PermissionDenied says why not.
    Raises ``django.core.exceptions.ValidationError`` when the node is invalid (nothing is
    saved then). SSH nodes must carry their pinned ``host_key`` already: the caller shows the
    fingerprint and checks the login first (``nodes.hostkeys``). A node that is the panel's
    own server (local, or pinning this machine's key) is flagged so. Returns the number of
    (node, type) pairs registered; their sessions start when the transaction commits.
    """
    node.full_clean()
    roles = list(roles)
    check_node_change(
        by.subject, node, NodeChange(adding=True, roles=tuple(roles), host_key=node.host_key)
    )
    flag_if_panel_host(node)
    with transaction.atomic():
        node.save()
        if roles:
            node.roles.set(roles)
        return register_desync([node])

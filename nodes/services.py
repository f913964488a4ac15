"""Adding a node, one way for every caller (the web form, ``addnode``, ``bootstrap``).

A node that is saved without its desynchronizations would sit Ready and never be set up, so
the save, its roles and the registration of every synchronizer type commit together or not
at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from nodes.models import Node, Role
from sync.engine import register_desync


def add_node(node: Node, roles: Iterable[Role] = ()) -> int:
    """Validate and save a new ``node``, set its roles and register every type for it.

    Raises ``django.core.exceptions.ValidationError`` when the node is invalid (nothing is
    saved then). SSH nodes must carry their pinned ``host_key`` already: the caller shows the
    fingerprint and checks the login first (``nodes.hostkeys``). Returns the number of
    (node, type) pairs registered; their sessions start when the transaction commits.
    """
    node.full_clean()
    with transaction.atomic():
        node.save()
        roles = list(roles)
        if roles:
            node.roles.set(roles)
        return register_desync([node])

"""Changes to the inventory that concern the synchronization: adding a node, accepting a key.

One way for every caller (the web pages, ``addnode``, ``acceptkey``, ``bootstrap``): a node
that is saved without its desynchronizations would sit Ready and never be set up, and a node
whose new host key is pinned must get its waiting synchronizers going again, in the same
transaction as the change.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from nodes.hostkeys import HostKeyChange, pin_host_key
from nodes.models import Node, Role
from sync.conditions import host_key_accepted
from sync.engine import register_desync, retry_now


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


def accept_host_key(node: Node, key: str) -> HostKeyChange:
    """Pin ``key`` once the node proved it holds it, then run its waiting synchronizers.

    The desynchronizations that failed on the old key are registered again, which makes them
    due now instead of after their backoff, and the ``host-key-changed`` condition clears.
    Raises what ``nodes.hostkeys.pin_host_key`` raises; nothing changes then.
    """
    with transaction.atomic():
        change = pin_host_key(node, key)
        host_key_accepted(node.pk)
        retry_now([node])
    return change

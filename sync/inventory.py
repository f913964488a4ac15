"""Changes to the inventory that concern the synchronization: adding a node, accepting a key.

One way for every caller (the web pages, ``addnode``, ``acceptkey``, ``bootstrap``): a node
that is saved without its desynchronizations would sit Ready and never be set up, and a node
whose new host key is pinned must get its waiting synchronizers going again, in the same
transaction as the change.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from nodes.hostkeys import HostKeyChange, parse_host_key, pin_proved_key, prove_host_key
from nodes.models import Node, Role
from sync.actor import Actor
from sync.conditions import host_key_accepted
from sync.engine import register_desync, retry_now
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


def accept_host_key(node: Node, key: str, *, by: Actor) -> HostKeyChange:
    """Pin ``key`` once the node proved it holds it, then run its waiting synchronizers.

    ``by`` may accept it (``sync.rights``: the panel's own server and the data the node's
    roles carry), else PermissionDenied. The proof talks to the node and happens first,
    outside any transaction: a node that stalls holds no database lock (SQLite's is the
    whole database). Then, in one transaction, the key is pinned if the node still has the
    address it was proved at, the desynchronizations that failed on the old key are
    registered again (due now instead of after their backoff) and the ``host-key-changed``
    condition clears. Raises what ``nodes.hostkeys.pin_host_key`` raises; nothing changes then.
    """
    new_key = parse_host_key(key)
    check_node_change(by.subject, node, NodeChange(accepting_key=True, host_key=new_key))
    prove_host_key(node, new_key)
    with transaction.atomic():
        change = pin_proved_key(node, new_key)
        if flag_if_panel_host(node):
            Node.objects.filter(pk=node.pk).update(is_panel_host=True)
        host_key_accepted(node.pk)
        retry_now([node])
    return change

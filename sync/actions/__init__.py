"""Every operator action, one function each: the only way pages, commands and the admin
change nodes, their work and the fleet's data.

Each takes the acting ``sync.actor.Actor`` (a user with their address, a command with the
operating-system user, or the cluster), checks rights (``sync.actions.rules``, which asks
``sync.rights``), does its network steps first, then writes every row and its audit entry
(``sync.audit``) in one transaction, and returns an ``ActionResult``: the entry, and each
node it touched with how that ended. Callers format the result; they never write the tables.
"""

from sync.actions.inventory import (
    KeyNotConfirmed,
    accept_host_key,
    add_node,
    add_nodes,
    change_roles,
    edit_node,
    scan_confirmed_key,
)
from sync.actions.nodes import delete_nodes, set_maintenance
from sync.actions.results import Act, ActionResult, NodeOutcome
from sync.actions.tokens import create_token, revoke_token
from sync.actions.work import cancel_work, force_work, register_work, retry_work, skip_work

__all__ = [
    "Act",
    "KeyNotConfirmed",
    "ActionResult",
    "NodeOutcome",
    "accept_host_key",
    "add_node",
    "add_nodes",
    "change_roles",
    "create_token",
    "revoke_token",
    "edit_node",
    "cancel_work",
    "delete_nodes",
    "force_work",
    "register_work",
    "retry_work",
    "scan_confirmed_key",
    "set_maintenance",
    "skip_work",
]

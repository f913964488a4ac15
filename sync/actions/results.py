"""What an action returns: the entry it wrote and, per node it touched, how that ended.

Pages, commands and the admin format this; none of them queries again to learn what
happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Act:
    """The names of the actions, as the audit trail records them (and its filter offers)."""

    NODE_ADD = "node.add"
    NODE_EDIT = "node.edit"
    NODE_DELETE = "node.delete"
    NODE_ROLES = "node.roles"
    ACCEPT_KEY = "node.accept-key"
    MAINTENANCE_ON = "node.maintenance-on"
    MAINTENANCE_OFF = "node.maintenance-off"
    REGISTER = "work.register"
    RETRY = "work.retry"
    FORCE = "work.force"
    CANCEL = "work.cancel"
    SKIP = "work.skip"
    DATA_ADD = "data.add"
    DATA_CHANGE = "data.change"
    DATA_DELETE = "data.delete"
    ROTATE_KEY = "panel.rotate-key"
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"

    @classmethod
    def all(cls) -> list[str]:
        return [v for k, v in vars(cls).items() if k.isupper()]


@dataclass(frozen=True)
class NodeOutcome:
    """One node an action touched: what happened there, and the types concerned by title."""

    node_id: int
    name: str
    outcome: str
    titles: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActionResult:
    action: str
    entry_id: int
    nodes: tuple[NodeOutcome, ...] = ()
    count: int = 0  # desynchronizations registered, rows changed: the action says which
    extra: dict = field(default_factory=dict)

    @property
    def node_ids(self) -> list[int]:
        return [n.node_id for n in self.nodes]

    @property
    def first(self) -> NodeOutcome:
        return self.nodes[0]

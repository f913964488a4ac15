"""Every node status in one place: its slug (stored in ``node.status``), label, icon and colour.

The Status cell, the node page, the commands and the admin all read these, so a status looks
and reads the same everywhere.
"""

from django.db import models


class NodeStatus(models.TextChoices):
    READY = "ready", "Ready"
    SYNCHRONIZING = "synchronizing", "Synchronizing"
    INSTALLING = "installing", "Installation in progress"

    @property
    def icon(self) -> str:
        """Name of the icon (static/icons.svg symbol); each status has its own shape."""
        return _ICONS[self]

    @property
    def css(self) -> str:
        return _CSS[self]


_ICONS = {
    NodeStatus.READY: "check-circle",
    NodeStatus.SYNCHRONIZING: "arrows-rotate",
    NodeStatus.INSTALLING: "box",
}
_CSS = {
    NodeStatus.READY: "status-ready",
    NodeStatus.SYNCHRONIZING: "status-synchronizing",
    NodeStatus.INSTALLING: "status-installing",
}


class Transport(models.TextChoices):
    SSH = "ssh", "SSH"
    LOCAL = "local", "Local (the panel's own server)"


class NodeCondition(models.TextChoices):
    """What is wrong with a node, beside its status (which keeps its own meaning).

    Declared from the most severe down: the Status cell shows the first one a node has.
    ``blocks_use`` marks the conditions that make a Ready node unusable for user requests.
    """

    HOST_KEY_CHANGED = "host-key-changed", "Host key changed"
    UNREACHABLE = "unreachable", "Unreachable"
    STUCK = "stuck", "Stuck"
    FAILING = "failing", "Failing"
    MAINTENANCE = "maintenance", "Maintenance"

    @property
    def icon(self) -> str:
        return _CONDITION_ICONS[self]

    @property
    def css(self) -> str:
        return f"condition-{self.value}"

    @property
    def severity(self) -> int:
        """0 is the most severe."""
        return list(NodeCondition).index(self)

    @property
    def blocks_use(self) -> bool:
        return self in _BLOCKS_USE


_CONDITION_ICONS = {
    NodeCondition.HOST_KEY_CHANGED: "key",
    NodeCondition.UNREACHABLE: "x-circle",
    NodeCondition.STUCK: "hourglass",
    NodeCondition.FAILING: "alert-triangle",
    NodeCondition.MAINTENANCE: "wrench",
}
_BLOCKS_USE = {
    NodeCondition.HOST_KEY_CHANGED,
    NodeCondition.UNREACHABLE,
    NodeCondition.MAINTENANCE,
}

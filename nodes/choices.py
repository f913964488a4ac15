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

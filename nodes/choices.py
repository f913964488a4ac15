"""The node's choice sets, each value with its label, icon and CSS class in one place.

The Status cell, the node page, the commands and the admin all read these, so a status looks
and reads the same everywhere. Every choice set the pages draw follows the same pattern (also
``sync.models.DesyncState`` and ``sync.models.Outcome``): a ``LookChoices`` with the members
and their labels, then ``__looks__`` (a dunder name, so not a member): each value's icon, a
symbol of ``static/icons.svg``, and CSS class. Each value has its own icon shape: colour is
never the only signal.
"""

from django.db import models


class LookChoices(models.TextChoices):
    """A choice set whose values carry an icon and a CSS class beside their label."""

    @property
    def icon(self) -> str:
        return type(self).__looks__[self.value][0]

    @property
    def css(self) -> str:
        return type(self).__looks__[self.value][1]


class NodeStatus(LookChoices):
    READY = "ready", "Ready"
    SYNCHRONIZING = "synchronizing", "Synchronizing"
    INSTALLING = "installing", "Installation in progress"

    __looks__ = {
        "ready": ("check-circle", "status-ready"),
        "synchronizing": ("arrows-rotate", "status-synchronizing"),
        "installing": ("box", "status-installing"),
    }


class Transport(models.TextChoices):
    SSH = "ssh", "SSH"
    LOCAL = "local", "Local (the panel's own server)"


class NodeCondition(LookChoices):
    """What is wrong with a node, beside its status (which keeps its own meaning).

    Declared from the most severe down: the Status cell shows the first one a node has.
    Which of them make a node unusable is the rule of ``nodes.truth`` (it reads the most
    severe one: host key changed and unreachable must stay the two most severe).
    """

    HOST_KEY_CHANGED = "host-key-changed", "Host key changed"
    UNREACHABLE = "unreachable", "Unreachable"
    STUCK = "stuck", "Stuck"
    FAILING = "failing", "Failing"
    MAINTENANCE = "maintenance", "Maintenance"

    __looks__ = {
        "host-key-changed": ("key", "condition-host-key-changed"),
        "unreachable": ("x-circle", "condition-unreachable"),
        "stuck": ("hourglass", "condition-stuck"),
        "failing": ("alert-triangle", "condition-failing"),
        "maintenance": ("wrench", "condition-maintenance"),
    }
    # Maintenance is a person's deliberate act (the audit trail has it), not news: every other
    # condition, and any added later, is alerted about when a node enters or leaves it.
    __quiet = ("maintenance",)

    @property
    def severity(self) -> int:
        """0 is the most severe."""
        return list(NodeCondition).index(self)

    @property
    def alerts(self) -> bool:
        """Entering or leaving it is a change that alert digests report (``sync.alerts``)."""
        return self.value not in self.__quiet


class NodeShown(LookChoices):
    """The word a node's Status cell leads with, stored on the node (``Node.shown``).

    What stops a node from being usable comes first (``nodes.truth`` decides which, from
    the status, the most severe condition, maintenance and whether its work can go on); a
    usable node reads Ready; a node whose work goes on reads its status; one whose work waits
    for a person reads Waiting. Every ``NodeStatus`` value is a value here too, with its label.
    """

    READY = "ready", "Ready"
    SYNCHRONIZING = "synchronizing", "Synchronizing"
    INSTALLING = "installing", "Installation in progress"
    WAITING = "waiting", "Waiting"
    HOST_KEY_CHANGED = "host-key-changed", "Host key changed"
    UNREACHABLE = "unreachable", "Unreachable"
    MAINTENANCE = "maintenance", "Maintenance"
    STUCK = "stuck", "Stuck"
    FAILING = "failing", "Failing"

    __looks__ = {
        **NodeStatus.__looks__,
        "waiting": ("hourglass", "status-waiting"),
        **NodeCondition.__looks__,
    }

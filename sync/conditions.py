"""Node conditions: what is wrong with a node, derived from synchronizer results.

The status keeps its one meaning (the pending desynchronizations' node statuses); conditions
stand beside it so the page never shows a broken node as fine:

- ``host-key-changed``: the node presented another key; an admin must accept it.
- ``unreachable``: the last connection failed and the panel has not reached the node for
  longer than the grace period (one lost connection is not an outage).
- ``stuck``: work has waited longer than a limit with no progress (set by the sweep).
- ``failing``: a type failed after connecting; which type, and the short cause.
- ``maintenance``: an admin took the node out of the panel's hands.

Only the engine calls these, inside its transactions, with the node row locked; the list
page reads the stored result and costs no extra query.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings

from nodes.choices import NodeCondition
from nodes.models import Node, has_condition_q
from sync.alerts.changes import record_node_changes
from sync.errors import FailureKind
from sync.models import SyncAction


def _setting(key: str, default: int) -> int:
    return int(settings.SYNC.get(key, default))


def unreachable_grace() -> timedelta:
    return timedelta(seconds=_setting("unreachable_grace_seconds", 40))


def stuck_after() -> timedelta:
    return timedelta(seconds=_setting("stuck_seconds", 1800))


@dataclass
class NodeConditions:
    """A node's conditions and contact times, changed in memory, then saved in one UPDATE."""

    node_id: int
    items: list[dict] = field(default_factory=list)
    last_contact_at: datetime | None = None
    contact_failed_since: datetime | None = None
    # The conditions as read (``locked``): ``save`` writes a change row for each condition
    # entered or left since, for the alerts.
    before: list[dict] = field(default_factory=list, repr=False)

    @classmethod
    def locked(cls, node_id: int) -> NodeConditions:
        """Read the node's conditions with its row locked (the caller's transaction)."""
        row = (
            Node.objects.select_for_update()
            .filter(pk=node_id)
            .values("conditions", "last_contact_at", "contact_failed_since")
            .first()
        ) or {"conditions": [], "last_contact_at": None, "contact_failed_since": None}
        items = list(row["conditions"])
        return cls(
            node_id,
            items,
            row["last_contact_at"],
            row["contact_failed_since"],
            before=copy.deepcopy(items),
        )

    def has(self, condition: NodeCondition) -> bool:
        return any(c["type"] == condition for c in self.items)

    def set(self, condition: NodeCondition, message: str, now: datetime, **extra: str) -> None:
        """Add the condition, or update its message; ``since`` stays when it already held."""
        for item in self.items:
            if item["type"] == condition:
                item.update(message=message, **extra)
                return
        self.items.append(
            {"type": condition.value, "since": now.isoformat(), "message": message, **extra}
        )

    def clear(self, *conditions: NodeCondition) -> None:
        self.items = [c for c in self.items if c["type"] not in conditions]

    def save(self) -> None:
        self.items.sort(key=lambda c: NodeCondition(c["type"]).severity)
        saved = Node.objects.filter(pk=self.node_id).update(
            conditions=self.items,
            condition=self.items[0]["type"] if self.items else "",
            last_contact_at=self.last_contact_at,
            contact_failed_since=self.contact_failed_since,
        )
        # Entering or leaving a condition is a change row in this same transaction (alerts).
        if saved:
            record_node_changes(self.node_id, self.before, self.items)
        self.before = copy.deepcopy(self.items)
        # The node's word and usability follow its conditions (the engine's rule: imported
        # when it runs, the engine imports this module).
        from sync.engine.eligibility import store_truth_of

        store_truth_of(self.node_id)


def after_success(node_id: int, now: datetime, still_failing: tuple[str, str] | None) -> None:
    """A type ran: the node is reachable and its key is right.

    ``still_failing`` is the first type that still waits for a retry after a failure
    (action name, the node's error text), if any: the ``failing`` condition names it.
    """
    conditions = NodeConditions.locked(node_id)
    conditions.last_contact_at, conditions.contact_failed_since = now, None
    conditions.clear(NodeCondition.UNREACHABLE, NodeCondition.HOST_KEY_CHANGED)
    conditions.clear(NodeCondition.STUCK, NodeCondition.FAILING)
    if still_failing:
        _set_failing(conditions, *still_failing, now)
    conditions.save()


def failing_changed(node_id: int, still_failing: tuple[str, str] | None, now: datetime) -> None:
    """Rows were dropped by hand: ``failing`` names the first type still failing, if any."""
    conditions = NodeConditions.locked(node_id)
    conditions.clear(NodeCondition.FAILING, NodeCondition.STUCK)
    if still_failing:
        _set_failing(conditions, *still_failing, now)
    conditions.save()


def after_failure(
    node_id: int,
    action_name: str,
    action_title: str,
    kind: FailureKind,
    message: str,
    now: datetime,
) -> None:
    """A type failed: say why, as the condition that fits how it failed."""
    conditions = NodeConditions.locked(node_id)
    if kind == FailureKind.UNREACHABLE:
        conditions.contact_failed_since = conditions.contact_failed_since or now
        down_since = conditions.last_contact_at or conditions.contact_failed_since
        if now - down_since >= unreachable_grace():
            conditions.set(NodeCondition.UNREACHABLE, message, now)
    else:
        # The panel reached the node (it answered, with the wrong key or a failure).
        conditions.last_contact_at, conditions.contact_failed_since = now, None
        conditions.clear(NodeCondition.UNREACHABLE)
        if kind == FailureKind.HOST_KEY:
            conditions.set(NodeCondition.HOST_KEY_CHANGED, message, now)
        else:
            conditions.clear(NodeCondition.HOST_KEY_CHANGED)
            conditions.set(
                NodeCondition.FAILING,
                failing_message(action_title, message),
                now,
                action=action_name,
                title=action_title,
            )
    conditions.save()


def retrying(node_id: int, action_name: str, action_title: str) -> None:
    """A failing (or cancelled) type runs again: ``failing`` says so while it runs, rather
    than keep the old failure's words as if they were about this run."""
    conditions = NodeConditions.locked(node_id)
    for item in conditions.items:
        if item["type"] == NodeCondition.FAILING and item.get("action") == action_name:
            item["message"] = f"{action_title}: retrying (the last attempt failed)"
            conditions.save()
            return


def _set_failing(conditions: NodeConditions, action_name: str, message: str, now: datetime) -> None:
    """``failing`` names the type that fails, by its name and its title (the Status cell
    leads with "Failing: Software packages")."""
    title = SyncAction.objects.filter(name=action_name).values_list("title", flat=True).first()
    conditions.set(NodeCondition.FAILING, message, now, action=action_name, title=title or "")


def failing_message(action_title: str, message: str) -> str:
    return f"{action_title} failing: {message}"


def host_key_accepted(node_id: int) -> None:
    conditions = NodeConditions.locked(node_id)
    conditions.clear(NodeCondition.HOST_KEY_CHANGED)
    conditions.save()


def maintenance_changed(node_ids: list[int], on: bool, now: datetime) -> None:
    for node_id in node_ids:
        conditions = NodeConditions.locked(node_id)
        if on:
            conditions.set(
                NodeCondition.MAINTENANCE, "In maintenance: the panel runs nothing here", now
            )
        else:
            conditions.clear(NodeCondition.MAINTENANCE)
        conditions.save()


def mark_stuck(stuck: dict[int, str], now: datetime) -> int:
    """Set ``stuck`` on these nodes (id -> message) and clear it on every other node."""
    changed = 0
    marked = Node.objects.filter(has_condition_q(NodeCondition.STUCK.value))
    for node_id in marked.exclude(pk__in=stuck).values_list("pk", flat=True):
        conditions = NodeConditions.locked(node_id)
        if conditions.has(NodeCondition.STUCK):
            conditions.clear(NodeCondition.STUCK)
            conditions.save()
            changed += 1
    for node_id, message in stuck.items():
        conditions = NodeConditions.locked(node_id)
        if not conditions.has(NodeCondition.STUCK):
            conditions.set(NodeCondition.STUCK, message, now)
            conditions.save()
            changed += 1
    return changed

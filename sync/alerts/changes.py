"""Which condition changes a save of a node's conditions makes, and writing them as rows.

Called by ``sync.conditions.NodeConditions.save`` with the conditions as they were read (under
the node's row lock) and as they are saved, inside the caller's transaction: the change row
commits or rolls back with the condition itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodes.choices import NodeCondition
from nodes.models import Node
from sync.clock import read_db_now
from sync.models import ConditionChange


def alerted(condition_type: str) -> bool:
    """Every condition is alerted about but the quiet ones (maintenance): one added later
    too, even before this code knows its name."""
    try:
        return NodeCondition(condition_type).alerts
    except ValueError:
        return True


@dataclass(frozen=True)
class Change:
    condition: str
    entered: bool
    message: str


def node_changes(before: list[dict], after: list[dict]) -> list[Change]:
    """The alerted conditions the node entered or left between ``before`` and ``after``.

    A failing node that now fails in another type enters ``failing`` again (the condition
    names one type, the first still failing); a new message for the same type (its error
    text, "retrying") is no change.
    """
    old = {c["type"]: c for c in before}
    new = {c["type"]: c for c in after}
    changes = [
        Change(kind, True, item.get("message", ""))
        for kind, item in new.items()
        if alerted(kind) and (kind not in old or old[kind].get("action") != item.get("action"))
    ]
    changes += [
        Change(kind, False, item.get("message", ""))
        for kind, item in old.items()
        if alerted(kind) and kind not in new
    ]
    return changes


def record_node_changes(node_id: int, before: list[dict], after: list[dict]) -> int:
    """Write a row for each change between ``before`` and ``after``; how many.

    Costs nothing when nothing changed (most saves); otherwise two reads (the node's name,
    the database's clock) and one INSERT.
    """
    changes = node_changes(before, after)
    if not changes:
        return 0
    name = Node.objects.filter(pk=node_id).values_list("name", flat=True).first() or ""
    now = read_db_now()
    ConditionChange.objects.bulk_create(
        ConditionChange(
            at=now,
            node_id=node_id,
            node_name=name,
            condition=change.condition,
            entered=change.entered,
            message=change.message[:500],
        )
        for change in changes
    )
    return len(changes)

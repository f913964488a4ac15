"""Which actions the node page offers: each once, and only where it applies.

The Actions card leads with the one action that fixes the node's most severe condition
(``fix``); the rest of the card offers the other actions that can do something now and never
the one already offered first. The page and its live refresh draw from the same answer, so an
action appears and goes as the node changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodes.choices import NodeCondition
from nodes.models import Node
from sync.models import DesyncState, Node2Sync

ACCEPT_KEY = "accept-key"
MAINTENANCE_OFF = "maintenance-off"
CANCEL = "cancel"
RETRY = "retry"


@dataclass(frozen=True)
class Offers:
    """``fix`` is the action shown first (one of the names above, or ""); the booleans are
    the card's other actions."""

    fix: str
    retry: bool
    maintenance: bool
    cancel: bool
    force: bool
    skip: bool
    accept_key: bool


def _fix(node: Node) -> str:
    condition = node.condition
    if condition == NodeCondition.HOST_KEY_CHANGED:
        return ACCEPT_KEY
    if condition == NodeCondition.MAINTENANCE:
        return MAINTENANCE_OFF
    if condition == NodeCondition.STUCK and node.is_processing:
        return CANCEL
    return RETRY if condition else ""


def offers(node: Node, desyncs: list[Node2Sync], panel_host_locked: bool) -> Offers:
    """What the node page offers for ``node`` with its desynchronizations ``desyncs``."""
    fix = _fix(node)
    waiting_retry = any(d.state in (DesyncState.FAILED, DesyncState.HELD) for d in desyncs)
    key_changed = node.has_condition(NodeCondition.HOST_KEY_CHANGED)
    return Offers(
        fix=fix,
        retry=waiting_retry and fix != RETRY,
        maintenance=fix != MAINTENANCE_OFF,
        cancel=node.is_processing and fix != CANCEL,
        force=bool(desyncs),
        skip=bool(desyncs),
        accept_key=(
            key_changed and fix != ACCEPT_KEY and node.transport == "ssh" and not panel_host_locked
        ),
    )

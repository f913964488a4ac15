"""What was sent: the queries the node page and the audit page share (views stay thin)."""

from __future__ import annotations

from django.db.models import QuerySet

from nodes.models import Node
from sync.alerts.channels import BadChannel, configured_channels
from sync.models import AlertDigest, ConditionChange


def node_changes(node: Node, limit: int = 10) -> list[ConditionChange]:
    """The node's newest condition changes, each with its digest and that digest's deliveries
    (three queries)."""
    return list(
        ConditionChange.objects.filter(node=node)
        .select_related("digest")
        .prefetch_related("digest__deliveries")
        .order_by("-at", "-id")[:limit]
    )


def digests(node: str = "") -> QuerySet[AlertDigest]:
    """Digests, newest first, with their deliveries; ``node``: only those that name it."""
    qs = AlertDigest.objects.prefetch_related("deliveries")
    if node:
        qs = qs.filter(changes__node_name=node).distinct()
    return qs.order_by("-made_at", "-id")


def channel_labels() -> tuple[list[str], str]:
    """The configured channels as shown (masked), or the reason the setting is refused."""
    try:
        return [channel.label for channel in configured_channels()], ""
    except BadChannel as e:
        return [], str(e)

"""Facts refresh: the node information collected again on a schedule, the node staying Ready.

``nodeinfo`` is Synchronizing on purpose: a new node's other types need its facts first.
Registering it every hour would take every node out of Ready for its run, so the refresh is a
type of its own, Ready-state, needing nothing and run last (a failing type never holds it
back, and it never delays real work). The health pass registers it (``engine.periodic.
register_fact_refreshes``) for the nodes whose facts are older than ``PANEL_FACTS_SECONDS``.
"""

from __future__ import annotations

from django.db.models import F

from nodes.choices import NodeStatus
from sync.context import RunContext
from sync.synchronizers import synchronizer
from sync.synchronizers.nodeinfo import collect_facts

FACTS_REFRESH_TYPE = "facts"


@synchronizer(
    name=FACTS_REFRESH_TYPE,
    title="Facts refresh",
    priority=90,
    node_status=NodeStatus.READY,
    timeout=60,
    needs=(),
)
async def refresh_facts(ctx: RunContext) -> None:
    if await ctx.db(_collected_since_registered, ctx.node.pk):
        # Adding a node (or "every type") registers this with ``nodeinfo``, which has just
        # collected them: a second round trip would say the same.
        ctx.log("facts already collected since this refresh was asked for")
        return
    await collect_facts(ctx)


def _collected_since_registered(node_id: int) -> bool:
    from sync.models import Node2Sync

    return Node2Sync.objects.filter(
        node_id=node_id,
        action__name=FACTS_REFRESH_TYPE,
        node__facts_at__gte=F("registered_at"),
    ).exists()

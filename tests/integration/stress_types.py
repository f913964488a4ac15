"""Test-only synchronizer types with random short durations, loaded by the stress test's
clusters through PANEL_SYNCHRONIZER_MODULES."""

import asyncio
import random

from nodes.choices import NodeStatus
from sync.synchronizers import synchronizer
from tests.integration.cluster_type_names import SLOW_TYPE


async def _work(ctx) -> None:
    await asyncio.sleep(random.uniform(0.005, 0.06))
    ctx.log("done")


synchronizer(
    name="stress-a", title="Stress A", priority=1001, node_status=NodeStatus.INSTALLING, timeout=30
)(_work)
synchronizer(
    name="stress-b",
    title="Stress B",
    priority=1002,
    node_status=NodeStatus.SYNCHRONIZING,
    timeout=30,
)(_work)
synchronizer(
    name="stress-c", title="Stress C", priority=1003, node_status=NodeStatus.READY, timeout=30
)(_work)


async def _slow(ctx) -> None:
    ctx.log("working slowly")
    await asyncio.sleep(float(ctx.node.facts.get("slow_seconds", 1.5)))


synchronizer(
    name=SLOW_TYPE,
    title="Stress slow",
    priority=1000,
    node_status=NodeStatus.SYNCHRONIZING,
    timeout=30,
)(_slow)

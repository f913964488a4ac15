"""A test-only synchronizer type that runs, on the node, the command the test put in the
node's facts (``facts["work"]``): loaded in processes started by tests through
PANEL_SYNCHRONIZER_MODULES, and in the test's own process by the ``node_work`` fixture."""

from nodes.choices import NodeStatus
from sync.synchronizers import synchronizer

NODE_WORK = "node-work"
NODE_WORK_TIMEOUT = 4


@synchronizer(
    name=NODE_WORK,
    title="Node work",
    priority=1100,
    node_status=NodeStatus.SYNCHRONIZING,
    timeout=NODE_WORK_TIMEOUT,
)
async def node_work(ctx) -> None:
    ctx.log("starting the node's work")
    await ctx.transport.run(ctx.node.facts["work"])
    ctx.log("the node's work is done")

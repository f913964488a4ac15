"""Test-only synchronizer types for the several-machines test: loaded by the machines'
clusters through PANEL_SYNCHRONIZER_MODULES, and in the test's own process by its fixture
(so that ``syncactions`` has their rows).

Each run appends one line, its type's name, to the marker file named in the node's facts
(``facts["marker"]``), and only at its very end, on the node: one line is one run that
completed there. A run whose machine dies first is ended on the node with its SSH channel, so
it leaves no line.
"""

from nodes.choices import NodeStatus
from sync.synchronizers import synchronizer
from tests.integration.distributed_type_names import DIST_NOTE, DIST_WORK, WORK_SECONDS

# $1 seconds of work, then the line $2 appended to the file $3.
_SCRIPT = 'sleep "$1" && printf "%s\\n" "$2" >> "$3"'


async def _on_node(ctx, name: str, seconds: float) -> None:
    ctx.log(f"working on the node for {seconds} s")
    await ctx.transport.run(
        ["sh", "-c", _SCRIPT, "sh", str(seconds), name, ctx.node.facts["marker"]]
    )
    ctx.log("done")


@synchronizer(
    name=DIST_WORK,
    title="Distributed work",
    priority=1200,
    node_status=NodeStatus.SYNCHRONIZING,
    timeout=30,
)
async def dist_work(ctx) -> None:
    await _on_node(ctx, DIST_WORK, WORK_SECONDS)


@synchronizer(
    name=DIST_NOTE,
    title="Distributed note",
    priority=1201,
    node_status=NodeStatus.SYNCHRONIZING,
    timeout=30,
)
async def dist_note(ctx) -> None:
    await _on_node(ctx, DIST_NOTE, 0)

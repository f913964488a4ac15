"""The benchmarks' synchronizer types, loaded through PANEL_SYNCHRONIZER_MODULES."""

from bench.converge import STEPS
from nodes.choices import NodeStatus
from sync.synchronizers import synchronizer


@synchronizer(
    name="bench-steps",
    title="Benchmark steps",
    priority=1000,
    node_status=NodeStatus.SYNCHRONIZING,
    timeout=300,
)
async def run_steps(ctx) -> None:
    for argv in STEPS:
        await ctx.transport.run(argv)


@synchronizer(
    name="bench-noop",
    title="Benchmark no-op",
    priority=1001,
    node_status=NodeStatus.READY,
    timeout=30,
)
async def do_nothing(ctx) -> None:
    pass


def noop_task() -> None:
    """A raw django-q task that does nothing: the dispatch benchmark's yardstick."""

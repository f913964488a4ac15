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


# The dispatch benchmark's six types per node: five more no-ops after ``bench-noop``, one of
# them not Ready-state (the node's status changes while it waits, as with real types) and
# declaring what it needs, so the real start rules (``eligibility``) decide every start; the
# others need every type before them, the default.
DISPATCH_TYPES = ["bench-noop"] + [f"bench-noop-{i}" for i in range(2, 7)]
for _i, _name in enumerate(DISPATCH_TYPES[1:], start=2):
    synchronizer(
        name=_name,
        title=f"Benchmark no-op {_i}",
        priority=1000 + _i,
        node_status=NodeStatus.SYNCHRONIZING if _i == 2 else NodeStatus.READY,
        timeout=30,
        needs=["bench-noop"] if _i == 2 else None,
    )(do_nothing)


def noop_task() -> None:
    """A raw django-q task that does nothing: the dispatch benchmark's yardstick."""

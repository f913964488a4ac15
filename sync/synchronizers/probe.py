"""The health probe: the cheapest proof that the panel can still reach and run on a node.

Registered by the periodic health pass (``engine.register_probes``) for every node that has
not been heard from within ``PANEL_PROBE_SECONDS``, it runs through the engine like any type:
a node that stopped answering turns ``unreachable`` after the grace period, and back when it
answers. Lowest priority number, so a failed type waiting for its retry never holds it up.
It runs on the worker's warm connection to the node, but on a new one when that is older
than ``PANEL_PROBE_FRESH_SECONDS``: a connection that stays open proves nothing about an sshd
that died since (``fresh_connection``).
"""

from __future__ import annotations

from nodes.choices import NodeStatus
from sync.context import RunContext
from sync.synchronizers import synchronizer


@synchronizer(
    name="probe",
    title="Health check",
    priority=1,
    node_status=NodeStatus.READY,
    timeout=30,
    needs=(),
    fresh_connection=True,
)
async def probe_node(ctx: RunContext) -> None:
    await ctx.transport.run(["true"])
    ctx.log("the node answered")

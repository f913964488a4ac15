"""django-q tasks: thin entry points into the engine."""

from nodes.transports.warm import drop_stale_connections, watch_stale_connections
from sync import engine


def run_node_sessions(node_ids: list[int]) -> dict[str, int]:
    """Run these nodes' sessions, and further due nodes while the batch has room; a duplicate
    or re-delivered task finds the leases taken. The worker watches its warm connections from
    its first task on (``watch_stale_connections``)."""
    watch_stale_connections()
    results = engine.run_task_batch(node_ids)
    return {
        "claimed": sum(r.claimed for r in results),
        "completed": sum(r.completed for r in results),
        "failed": sum(r.failed for r in results),
    }


def sweep() -> dict[str, int]:
    """The scheduled safety net: leases and due work, then the nodes' health; the worker's
    warm connections to nodes deleted, in maintenance or changed are closed."""
    drop_stale_connections()
    return {**engine.sweep(), **engine.check_health()}

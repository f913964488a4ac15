"""Registering work and starting it: what the data changes, the views and the commands call.

Registration is an idempotent upsert inside the caller's transaction, so a data change and
its desynchronization commit (or roll back) together; the sessions start on commit.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import F

from nodes.models import Node
from sync import conditions
from sync.clock import read_db_now
from sync.engine.transient import retry_on_transient_errors
from sync.models import DesyncState, Node2Sync, SyncAction, recompute_status


def _ids(objs: Iterable[Node | SyncAction | int]) -> list[int]:
    return sorted({o if isinstance(o, int) else o.pk for o in objs})


@retry_on_transient_errors
def register_desync(
    nodes: Iterable[Node | int], actions: Iterable[SyncAction | int] | None = None
) -> int:
    """Mark ``nodes`` out of sync for ``actions`` (every type when None); return the pair count.

    Safe to call inside the caller's transaction (the data change and its desynchronization
    commit together). The nodes' sessions are started when the transaction commits.
    """
    node_ids = _ids(nodes)
    action_ids = _ids(actions) if actions is not None else _ids(SyncAction.objects.all())
    if not node_ids or not action_ids:
        return 0
    now = read_db_now()
    with transaction.atomic():
        # Lock the nodes first, in id order, as claiming and finishing do: one lock order
        # everywhere keeps MariaDB from deadlocking registrations against running sessions.
        list(Node.objects.select_for_update().filter(pk__in=node_ids).order_by("pk").values("pk"))
        rows = Node2Sync.objects.filter(node_id__in=node_ids, action_id__in=action_ids)
        rows.filter(state=DesyncState.PROCESSING).update(
            generation=F("generation") + 1, registered_at=now
        )
        rows.exclude(state=DesyncState.PROCESSING).update(
            state=DesyncState.PENDING, attempts=0, next_attempt_at=now, registered_at=now
        )
        Node2Sync.objects.bulk_create(
            [
                Node2Sync(node_id=n, action_id=a, registered_at=now, next_attempt_at=now)
                for n in node_ids
                for a in action_ids
            ],
            ignore_conflicts=True,
            batch_size=500,
        )
        recompute_status(Node.objects.filter(pk__in=node_ids))
        transaction.on_commit(lambda: kick(node_ids))
    return len(node_ids) * len(action_ids)


def kick(node_ids: Iterable[int]) -> None:
    """Enqueue node sessions on the django-q cluster, in batches that share one event loop.

    At least one batch per worker (when there are that many nodes), so a small registration
    still uses every worker's core; at most ``batch_size`` nodes per batch.
    """
    from sync.queue import enqueue_calls

    node_ids = list(node_ids)
    if not node_ids:
        return
    batches = max(settings.Q_CLUSTER["workers"], -(-len(node_ids) // settings.SYNC["batch_size"]))
    batches = min(batches, len(node_ids))
    enqueue_calls("sync.tasks.run_node_sessions", [(node_ids[i::batches],) for i in range(batches)])


def retry_now(nodes: Iterable[Node | int]) -> int:
    """Make every desynchronization of these nodes due now, e.g. after fixing a node."""
    pairs = Node2Sync.objects.filter(node_id__in=_ids(nodes)).values_list("node_id", "action_id")
    by_node: dict[int, list[int]] = {}
    for node_id, action_id in pairs:
        by_node.setdefault(node_id, []).append(action_id)
    return sum(register_desync([node_id], actions) for node_id, actions in by_node.items())


def set_maintenance(nodes: Iterable[Node | int], on: bool) -> int:
    """Maintenance stops new sessions on the nodes; turning it off starts their waiting work."""
    node_ids = _ids(nodes)
    with transaction.atomic():
        changed = Node.objects.filter(pk__in=node_ids).update(maintenance=on)
        if on:  # the admin works on the node: no worker keeps a connection open there
            Node.objects.filter(pk__in=node_ids).drop_connections()
        conditions.maintenance_changed(node_ids, on, read_db_now())
    if not on:
        transaction.on_commit(lambda: kick(node_ids))
    return changed

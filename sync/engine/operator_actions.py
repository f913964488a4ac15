"""What operators do to a node's running work: force it, cancel it, skip it.

Each takes the node's lease from whoever holds it (the worker notices within
``cancel_check_seconds`` and ends its remote commands) and leaves a run that names who acted,
so the node's history says why the work stopped.
"""

from __future__ import annotations

import logging

from django.db import transaction

from nodes.models import Node
from sync import conditions
from sync.clock import read_db_now
from sync.engine.leases import claim_node, new_worker_id, release_node
from sync.engine.registration import kick
from sync.engine.tally import count_runs
from sync.engine.transient import retry_on_transient_errors
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun, recompute_status

log = logging.getLogger("sync")


def take_over_node(node: Node, by: str, hand_to_cluster: bool = True) -> bool:
    """Force a hanging synchronizer to complete: take the lease from whoever holds it.

    The interrupted run is recorded as ``forced`` (saying who did it), its row goes back to
    pending and the cluster runs it again (unless the caller runs it itself: ``nodesync
    --force``); the old worker's late result is ignored.
    """
    worker = new_worker_id(f"forced-by-{by}")
    if not claim_node(node.pk, worker, force=True, acted_by=by):
        return False
    release_node(node.pk, worker)
    if hand_to_cluster:
        transaction.on_commit(lambda: kick([node.pk]))
    return True


def cancel_node(node: Node, by: str) -> list[str]:
    """End the synchronizer running on the node now; return the titles of the runs ended.

    The lease is taken from the worker (which notices within ``cancel_check_seconds`` and ends
    its remote commands); the run is recorded as ``cancelled`` naming who did it, and its row
    fails and waits for its backoff instead of starting again at once.
    """
    running = list(
        SyncRun.objects.filter(node=node, outcome=Outcome.RUNNING).values_list(
            "action__title", flat=True
        )
    )
    if not running:
        return []
    worker = new_worker_id(f"cancelled-by-{by}")
    if not claim_node(node.pk, worker, force=True, recover=True, acted_by=by, cancel=True):
        return []
    release_node(node.pk, worker)
    return running


@retry_on_transient_errors
def skip_desyncs(node: Node, action_ids: list[int] | None, by: str) -> list[str]:
    """Drop the node's desynchronizations without running them (work an admin did by hand).

    A type that is running is cancelled first. Each dropped row leaves a ``skipped`` run that
    names who skipped it. Returns the titles of the types dropped.
    """
    rows = Node2Sync.objects.filter(node=node)
    if action_ids is not None:
        rows = rows.filter(action_id__in=action_ids)
    if rows.filter(state=DesyncState.PROCESSING).exists():
        cancel_node(node, by)
    with transaction.atomic():
        list(Node.objects.select_for_update().filter(pk=node.pk).values("pk"))
        now = read_db_now()
        skipped = list(rows.select_related("action").order_by("action__priority", "action_id"))
        why = f"Skipped by {by}: dropped without running it (the work was done by hand)."
        SyncRun.objects.bulk_create(
            SyncRun(
                node=node,
                action=row.action,
                worker=f"skipped-by-{by}"[:100],
                started_at=now,
                finished_at=now,
                outcome=Outcome.SKIPPED,
                generation=row.generation,
                log=why,
                acted_by=by,
            )
            for row in skipped
        )
        count_runs((row.action.name, Outcome.SKIPPED, 0.0) for row in skipped)
        rows.filter(pk__in=[r.pk for r in skipped]).delete()
        still_failing = (
            Node2Sync.objects.filter(node=node, state=DesyncState.FAILED)
            .order_by("action__priority", "action_id")
            .values_list("action__name", "action__title", "last_error")
            .first()
        )
        if not still_failing:
            Node.objects.filter(pk=node.pk).update(last_error="")
        conditions.failing_changed(
            node.pk,
            still_failing and (still_failing[0], conditions.failing_message(*still_failing[1:])),
            now,
        )
        recompute_status(Node.objects.filter(pk=node.pk))
    for row in skipped:
        log.warning("sync skipped node=%s type=%s by=%s", node.name, row.action.name, by)
    return [row.action.title for row in skipped]

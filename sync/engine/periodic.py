"""The periodic passes (the django-q Schedule, about once a minute): the safety net behind
the kick on commit, and the fleet's health.

Each is a fixed number of queries however large the fleet: the sweep finds due nodes in one
query and enqueues them in one INSERT; the health pass registers probes, refreshes ``stuck``
and prunes the run history with one query each.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber

from nodes.models import Node
from sync import conditions
from sync.audit import prune_audit
from sync.clock import db_now_plus, read_db_now
from sync.engine.eligibility import Hold, startable, with_row_hold
from sync.engine.leases import free_lease, recover_expired_leases
from sync.engine.registration import kick, register_desync
from sync.engine.tally import fold_quiet_tallies
from sync.models import DesyncState, Node2Sync, Outcome, SyncAction, SyncRun

log = logging.getLogger("sync")


def due_node_ids() -> list[int]:
    """Nodes whose next desynchronization may start now (``eligibility``) and no live lease."""
    return list(
        startable(Node.objects.filter(free_lease())).order_by("pk").values_list("pk", flat=True)
    )


def refresh_stuck() -> int:
    """Mark ``stuck`` the nodes whose work has waited past the limit with no progress.

    Progress is a synchronizer run that succeeded since the work was registered
    (``last_sync_at``: the health probe's answers are contact, not progress). What the engine
    holds back on purpose (``eligibility``) is not stuck: a node in maintenance or with a
    changed host key, a type someone cancelled (held until a person acts) and the types held
    back by a type they need (that one is, if anything). Returns how many nodes changed.
    """
    limit = conditions.stuck_after()
    cutoff = db_now_plus(-limit.total_seconds())
    on_purpose = [Hold.MAINTENANCE, Hold.HOST_KEY, Hold.CANCELLED, Hold.NEEDS]
    waiting = (
        with_row_hold(Node2Sync.objects.filter(registered_at__lt=cutoff))
        .exclude(hold__in=on_purpose)
        .filter(Q(node__last_sync_at__isnull=True) | Q(node__last_sync_at__lt=cutoff))
        .order_by("node_id", "action__priority", "action_id")
        .values_list("node_id", "action__title", "state")
    )
    stuck: dict[int, str] = {}
    for node_id, title, state in waiting:
        if node_id not in stuck:
            minutes = int(limit.total_seconds() // 60)
            stuck[node_id] = (
                f"no progress for over {minutes} min: {title} is {DesyncState(state).label.lower()}"
            )
    return conditions.mark_stuck(stuck, read_db_now())


def sweep() -> dict[str, int]:
    """The safety net: recover dead workers' leases, then start every node that has due work."""
    recovered = recover_expired_leases()
    due = due_node_ids()
    if due:
        kick(due)
    if recovered or due:
        log.info("sweep recovered=%d enqueued=%d", recovered, len(due))
    return {"recovered": recovered, "enqueued": len(due)}


PROBE_TYPE = "probe"


def register_probes() -> int:
    """Register the health probe for every node not heard from within the probe interval.

    A node that dies while nothing changes must still be noticed, and through the engine like
    any type, so statuses and conditions change only from synchronizer results. Nodes that
    already have a probe waiting keep it (and its backoff); busy nodes need none, their runs
    are contact enough. Returns how many nodes were registered.
    """
    probe = SyncAction.objects.filter(name=PROBE_TYPE).first()
    if probe is None:
        return 0
    quiet_since = db_now_plus(-float(settings.SYNC.get("probe_seconds", 60)))
    node_ids = list(
        Node.objects.filter(maintenance=False)
        .filter(Q(last_contact_at__isnull=True) | Q(last_contact_at__lt=quiet_since))
        .exclude(desyncs__action=probe)
        .values_list("pk", flat=True)
    )
    return register_desync(node_ids, [probe]) if node_ids else 0


FACTS_TYPE = "facts"
# The types whose run collects the facts: a node waiting for one needs no refresh.
_COLLECTS_FACTS = ("nodeinfo", FACTS_TYPE)


def register_fact_refreshes() -> int:
    """Register the facts refresh for every node whose facts are older than
    ``PANEL_FACTS_SECONDS`` (or were never collected), outside maintenance.

    A Ready-state type, so the node stays usable while it runs; nodes already waiting for
    ``nodeinfo`` or a refresh are left alone (one collection is on its way). Compared on the
    database's clock, which stamps ``facts_at``. Returns how many nodes were registered.
    """
    refresh = SyncAction.objects.filter(name=FACTS_TYPE).first()
    if refresh is None:
        return 0
    stale_before = db_now_plus(-float(settings.SYNC["facts_seconds"]))
    node_ids = list(
        Node.objects.filter(maintenance=False)
        .filter(Q(facts_at__isnull=True) | Q(facts_at__lt=stale_before))
        .exclude(desyncs__action__name__in=_COLLECTS_FACTS)
        .values_list("pk", flat=True)
    )
    return register_desync(node_ids, [refresh]) if node_ids else 0


def prune_history(batch: int = 5000) -> int:
    """Keep the newest ``runs_kept_per_type`` runs of each node and type; return how many
    were deleted. The probe alone would otherwise add a row per node every minute, for ever.

    One ranking query (a window function, SQLite 3.25+ and MariaDB 10.2+) in the periodic
    pass, not a query per finished run; at most ``batch`` rows a pass.
    """
    keep = int(settings.SYNC.get("runs_kept_per_type", 50))
    ranked = SyncRun.objects.annotate(
        newer=Window(
            RowNumber(), partition_by=[F("node_id"), F("action_id")], order_by=F("id").desc()
        )
    )
    old = list(
        ranked.filter(newer__gt=keep)
        .exclude(outcome=Outcome.RUNNING)
        .values_list("pk", flat=True)[:batch]
    )
    if old:
        SyncRun.objects.filter(pk__in=old).delete()
    return len(old)


def check_health() -> dict[str, int]:
    """The periodic health pass beside the sweep: probes for quiet nodes, facts refreshed when
    old, ``stuck`` marks, the run history kept to its size, and the run counts of quiet
    processes folded."""
    probed = register_probes()
    refreshed = register_fact_refreshes()
    stuck = refresh_stuck()
    pruned = prune_history()
    audit_pruned = prune_audit()
    folded = fold_quiet_tallies()
    if probed or refreshed or stuck or pruned or audit_pruned or folded:
        log.info(
            "health probed=%d facts-refreshed=%d stuck-changed=%d runs-pruned=%d "
            "audit-pruned=%d tallies-folded=%d",
            probed,
            refreshed,
            stuck,
            pruned,
            audit_pruned,
            folded,
        )
    return {
        "probed": probed,
        "facts_refreshed": refreshed,
        "stuck_changed": stuck,
        "runs_pruned": pruned,
        "audit_pruned": audit_pruned,
        "tallies_folded": folded,
    }

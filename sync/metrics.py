"""What ``/metrics`` tells Prometheus: the fleet, its waiting work, its runs and its clusters.

Read from the database at each scrape, so any web process of any machine answers the same,
in a fixed number of queries however large the fleet (a scrape every 15 s must not cost a
query per node): the nodes grouped by status, shown word and usability, the nodes that have
a condition, the desynchronizations grouped by type, state and why they do not run (the
engine's one rule, ``eligibility.with_row_hold``), the run counts (``runtally``, counted per
process by the engine: ``sync.engine.tally``), the clusters' heartbeats, and the database's
clock. Every name starts with ``panel_``; docs/OPERATIONS.md lists them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

from django.db.models import Count, Min, Sum
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from nodes.choices import NodeCondition, NodeShown, NodeStatus
from nodes.models import Node
from sync.clock import read_db_now
from sync.engine.eligibility import with_row_hold
from sync.engine.tally import DURATION_BUCKETS, bucket_bound, bucket_label
from sync.heartbeat import late_seconds
from sync.models import ClusterHeartbeat, Node2Sync, Outcome, RunTally

# The ``hold`` label of a desynchronization nothing holds back: it may start now.
DUE = "due"


class PanelCollector:
    """A prometheus-client collector (``collect()``) that reads everything at each scrape."""

    def collect(self) -> Iterator[Metric]:
        now = read_db_now()
        yield from node_metrics()
        yield from desync_metrics(now)
        yield from run_metrics()
        yield from cluster_metrics(now)


def node_metrics() -> Iterator[Metric]:
    """Nodes by status and shown word, usable ones, and by condition; two queries."""
    nodes = GaugeMetricFamily(
        "panel_nodes",
        "Nodes by their status (the synchronizers' word) and the word their Status cell "
        "leads with (shown).",
        labels=["status", "shown"],
    )
    usable = GaugeMetricFamily(
        "panel_nodes_usable",
        "Nodes that may serve users: Ready, reachable with their pinned key, not in maintenance.",
    )
    groups = Node.objects.order_by().values("status", "shown", "usable").annotate(n=Count("pk"))
    # Every pair, so that a word no node has reads 0 rather than missing (an alert on "no node
    # is Ready" needs a 0); a pair the rules never make just stays 0.
    counts = {(status.value, shown.value): 0 for status in NodeStatus for shown in NodeShown}
    usable_count = 0
    for row in groups:
        key = (row["status"], row["shown"])
        counts[key] = counts.get(key, 0) + row["n"]
        usable_count += row["n"] if row["usable"] else 0
    for (status, shown), n in sorted(counts.items()):
        nodes.add_metric([status, shown], n)
    usable.add_metric([], usable_count)
    yield nodes
    yield usable

    by_condition = GaugeMetricFamily(
        "panel_nodes_condition",
        "Nodes that have the condition (as their most severe one or beside a worse one).",
        labels=["condition"],
    )
    since = GaugeMetricFamily(
        "panel_node_condition_since_timestamp_seconds",
        "Since when a node has had a condition (Unix time); only nodes with conditions.",
        labels=["node", "condition"],
    )
    per_condition = {c.value: 0 for c in NodeCondition}
    troubled = Node.objects.exclude(condition="").order_by("name")
    for name, conditions in troubled.values_list("name", "conditions"):
        for item in conditions:
            kind = item.get("type", "")
            if kind not in per_condition:
                continue
            per_condition[kind] += 1
            if started := _timestamp(item.get("since")):
                since.add_metric([name, kind], started)
    for kind, n in per_condition.items():
        by_condition.add_metric([kind], n)
    yield by_condition
    yield since


def _timestamp(text: str | None) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def desync_metrics(now: datetime) -> Iterator[Metric]:
    """Desynchronizations by type, state and why each does not run (the engine's rule), and
    how long the oldest one that may start now has waited; one query."""
    desyncs = GaugeMetricFamily(
        "panel_desyncs",
        "Desynchronizations by type, state and why each does not run now "
        f"(hold: {DUE} when it may start now).",
        labels=["type", "state", "hold"],
    )
    oldest = GaugeMetricFamily(
        "panel_desync_oldest_due_seconds",
        "How long the oldest desynchronization that may start now has been due (0: none).",
    )
    groups = (
        with_row_hold(Node2Sync.objects.all())
        .order_by()
        .values("action__name", "state", "hold")
        .annotate(n=Count("pk"), due_since=Min("next_attempt_at"))
    )
    oldest_due: datetime | None = None
    for row in sorted(groups, key=lambda r: (r["action__name"], r["state"], r["hold"])):
        desyncs.add_metric([row["action__name"], row["state"], row["hold"] or DUE], row["n"])
        if not row["hold"] and row["due_since"] is not None:
            oldest_due = min(oldest_due or row["due_since"], row["due_since"])
    oldest.add_metric([], max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0)
    yield desyncs
    yield oldest


def run_metrics() -> Iterator[Metric]:
    """Runs ended by type and outcome, and their durations by type; one query over the
    tally rows of every process (a sum that only goes up: the fold keeps it)."""
    runs = CounterMetricFamily(
        "panel_runs",
        "Synchronizer runs ended, by type and outcome, counted by every process of the panel.",
        labels=["type", "outcome"],
    )
    durations = HistogramMetricFamily(
        "panel_run_duration_seconds",
        "How long synchronizer runs took, by type (skipped runs, which never ran, left out).",
        labels=["type"],
    )
    rows = (
        RunTally.objects.order_by()
        .values("action", "outcome", "le")
        .annotate(n=Sum("runs"), seconds=Sum("seconds"))
    )
    counts: dict[tuple[str, str], int] = defaultdict(int)
    buckets: dict[str, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    sums: dict[str, float] = defaultdict(float)
    for row in rows:
        counts[(row["action"], row["outcome"])] += row["n"]
        if row["outcome"] != Outcome.SKIPPED:
            buckets[row["action"]][bucket_bound(row["le"])] += row["n"]
            sums[row["action"]] += row["seconds"]
    for (action, outcome), n in sorted(counts.items()):
        runs.add_metric([action, outcome], n)
    for action in sorted(buckets):
        total, cumulative = 0, []
        for bound in DURATION_BUCKETS:
            total += buckets[action][bound]
            cumulative.append((bucket_label(bound), total))
        durations.add_metric([action], cumulative, sum_value=sums[action])
    yield runs
    yield durations


def cluster_metrics(now: datetime) -> Iterator[Metric]:
    """Seconds since each cluster's heartbeat (``sync.heartbeat``), and the threshold past
    which the panel calls the clusters late; one query."""
    age = GaugeMetricFamily(
        "panel_cluster_heartbeat_age_seconds",
        "Seconds since each django-q cluster (instance name and machine) wrote its heartbeat.",
        labels=["cluster", "host"],
    )
    for name, host, seen_at in ClusterHeartbeat.objects.order_by("name", "host").values_list(
        "name", "host", "seen_at"
    ):
        age.add_metric([name, host], max(0.0, (now - seen_at).total_seconds()))
    threshold = GaugeMetricFamily(
        "panel_cluster_late_seconds",
        "PANEL_CLUSTER_LATE_SECONDS: with no heartbeat younger than this, the clusters are late.",
    )
    threshold.add_metric([], late_seconds())
    yield age
    yield threshold

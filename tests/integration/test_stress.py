"""Two django-q clusters, 100 nodes, registrations arriving while runs are under way: never two
runs on one node at once, priority order within a session, no registration lost."""

import os
import random
import signal
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from django.db import connection  # noqa: F401 - used by skipif
from django.utils import timezone

from nodes.choices import NodeStatus, Transport
from nodes.models import Node
from sync.engine import register_desync, sweep
from sync.models import Node2Sync, Outcome, SyncRun
from tests.integration.cluster_type_names import SLOW_TYPE, STRESS_TYPES
from tests.integration.conftest import CLUSTER_ENV, wait_for

pytestmark = pytest.mark.cluster

NODES = 100
STORM_SECONDS = 12
STORM_MAX_SECONDS = 60
MIN_REGISTRATIONS = 500


@pytest.fixture
def stress_types(cluster_types):
    return sorted((cluster_types[n] for n in STRESS_TYPES), key=lambda a: a.priority)


def test_it_holds_under_two_clusters_and_a_registration_storm(stress_types, start_qcluster):
    Node.objects.bulk_create(
        Node(name=f"stress{i:03d}", transport=Transport.LOCAL, host="localhost")
        for i in range(NODES)
    )
    nodes = list(Node.objects.filter(name__startswith="stress"))
    priority = {a.pk: a.priority for a in stress_types}
    registered_at: dict[tuple[int, int], list] = defaultdict(list)

    def register(batch, actions):
        # The registration took effect when it committed, somewhere between these two.
        before = timezone.now()
        register_desync(batch, actions)
        after = timezone.now()
        for n in batch:
            for a in actions:
                registered_at[(n.pk, a.pk)].append((before, after))

    register(nodes, stress_types)
    start_qcluster(**CLUSTER_ENV, PANEL_Q_WORKERS="2")
    start_qcluster(**CLUSTER_ENV, PANEL_Q_WORKERS="2")

    rng = random.Random(20261125)
    # At least STORM_SECONDS and more than MIN_REGISTRATIONS: a slow machine storms longer.
    started = time.monotonic()
    registrations = 0
    while time.monotonic() < started + STORM_SECONDS or (
        registrations <= MIN_REGISTRATIONS and time.monotonic() < started + STORM_MAX_SECONDS
    ):
        batch = rng.sample(nodes, rng.randint(1, 5))
        actions = rng.sample(stress_types, rng.randint(1, 3))
        register(batch, actions)
        registrations += len(batch) * len(actions)
        time.sleep(rng.uniform(0.01, 0.05))

    def converged():
        """node2sync to be empty and every node ready"""
        return (
            not Node2Sync.objects.exists()
            and not Node.objects.exclude(status=NodeStatus.READY).exists()
        )

    wait_for(converged, timeout=180, interval=0.5)
    assert registrations > MIN_REGISTRATIONS

    runs = list(
        SyncRun.objects.order_by("node_id", "started_at", "id").values(
            "node_id", "action_id", "worker", "started_at", "finished_at", "outcome"
        )
    )
    assert {r["outcome"] for r in runs} == {Outcome.SUCCESS}

    by_node = defaultdict(list)
    for r in runs:
        by_node[r["node_id"]].append(r)
    for node_runs in by_node.values():
        for earlier, later in zip(node_runs, node_runs[1:], strict=False):
            assert later["started_at"] >= earlier["finished_at"], (earlier, later)

    # Priority order within a session: a run may follow one of a higher priority number only
    # when its type was registered again after that earlier run had started.
    slack = timedelta(milliseconds=5)
    for node_runs in by_node.values():
        for earlier, later in zip(node_runs, node_runs[1:], strict=False):
            if earlier["worker"] != later["worker"]:
                continue
            if priority[later["action_id"]] < priority[earlier["action_id"]]:
                times = registered_at[(later["node_id"], later["action_id"])]
                assert any(
                    after >= earlier["started_at"] - slack and before <= later["started_at"]
                    for before, after in times
                ), (earlier, later)

    # Every registration was followed by a completed run.
    last_success = {}
    for r in runs:
        key = (r["node_id"], r["action_id"])
        last_success[key] = max(last_success.get(key, r["started_at"]), r["started_at"])
    for key, times in registered_at.items():
        assert key in last_success and last_success[key] >= max(b for b, _ in times), key
    # Both clusters and several workers really took part.
    assert len({r["worker"].split(":")[1] for r in runs}) >= 3


def test_it_recovers_runs_whose_worker_was_killed(cluster_types, start_qcluster):
    """SIGKILL a worker in the middle of a synchronizer, again and again: every interrupted
    run is recorded as lost, runs again and completes; nothing is left processing."""
    nodes = [
        Node.objects.create(name=f"crash{i}", transport=Transport.LOCAL, host="localhost")
        for i in range(4)
    ]
    slow = cluster_types[SLOW_TYPE]
    start_qcluster(**CLUSTER_ENV, PANEL_Q_WORKERS="2", PANEL_LEASE_SECONDS="2")
    killed: set[int] = set()
    for _ in range(3):
        register_desync(nodes, [slow])

        def a_run_in_progress():
            """a slow run to be in progress in a worker not yet killed"""
            workers = SyncRun.objects.filter(outcome=Outcome.RUNNING).values_list(
                "worker", flat=True
            )
            pids = {int(w.split(":")[1]) for w in workers} - killed
            return next(iter(pids), None)

        pid = wait_for(a_run_in_progress, timeout=30, interval=0.05)
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)

        def recovered_and_done():
            """the interrupted runs to be recovered by the sweep and completed, and their
            sessions ended (a session lets its node go just after its last run ends)"""
            sweep()  # what the cluster's Schedule does every minute, called here at once
            return (
                not Node2Sync.objects.exists()
                and not Node.objects.exclude(lease_owner="").exists()
            )

        wait_for(recovered_and_done, timeout=60, interval=0.5)

    runs = list(SyncRun.objects.order_by("started_at", "id"))
    lost = [r for r in runs if r.outcome == Outcome.LOST]
    assert len(lost) >= 3
    assert {r.outcome for r in runs} == {Outcome.LOST, Outcome.SUCCESS}
    for run in lost:
        assert "expired" in run.log
        assert any(
            r.node_id == run.node_id
            and r.outcome == Outcome.SUCCESS
            and r.started_at > run.started_at
            for r in runs
        )
    assert not SyncRun.objects.filter(outcome=Outcome.RUNNING).exists()
    assert not Node.objects.exclude(lease_owner="").exists()
    assert set(Node.objects.values_list("status", flat=True)) == {NodeStatus.READY}

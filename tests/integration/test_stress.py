"""Two django-q clusters, 100 nodes, registrations arriving while runs are under way: never two
runs on one node at once, priority order within a session, no registration lost."""

import random
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from django.db import connection  # noqa: F401 - used by skipif
from django.utils import timezone

from nodes.choices import NodeStatus, Transport
from nodes.models import Node
from sync.engine import register_desync
from sync.models import Node2Sync, Outcome, SyncAction, SyncRun
from sync.synchronizers import REGISTRY, unregister_type, update_syncactions
from tests.integration.conftest import wait_for
from tests.integration.stress_types import STRESS_TYPES

pytestmark = pytest.mark.cluster

NODES = 100
STORM_SECONDS = 12


@pytest.fixture
def stress_types(transactional_db):
    import tests.integration.stress_types  # noqa: F401 - registers the types

    for name in STRESS_TYPES:
        if name not in REGISTRY:  # imported earlier, then unregistered by a previous test
            import importlib

            importlib.reload(tests.integration.stress_types)
            break
    update_syncactions()
    yield list(SyncAction.objects.filter(name__in=STRESS_TYPES).order_by("priority"))
    for name in STRESS_TYPES:
        unregister_type(name)


@pytest.mark.skipif("connection.vendor != 'mysql'", reason="the stress test is for MariaDB")
def test_it_holds_under_two_clusters_and_a_registration_storm(stress_types, start_qcluster):
    Node.objects.bulk_create(
        Node(name=f"stress{i:03d}", transport=Transport.LOCAL, host="localhost")
        for i in range(NODES)
    )
    nodes = list(Node.objects.filter(name__startswith="stress"))
    priority = {a.pk: a.priority for a in stress_types}
    registered_at: dict[tuple[int, int], list] = defaultdict(list)

    def register(batch, actions):
        before = timezone.now()
        register_desync(batch, actions)
        for n in batch:
            for a in actions:
                registered_at[(n.pk, a.pk)].append(before)

    register(nodes, stress_types)
    env = {"PANEL_SYNCHRONIZER_MODULES": "tests.integration.stress_types", "PANEL_Q_WORKERS": "2"}
    start_qcluster(**env)
    start_qcluster(**env)

    rng = random.Random(20261125)
    storm_end = time.monotonic() + STORM_SECONDS
    registrations = 0
    while time.monotonic() < storm_end:
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
    assert registrations > 500

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
                    earlier["started_at"] - slack <= t <= later["started_at"] for t in times
                ), (earlier, later)

    # Every registration was followed by a completed run.
    last_success = {}
    for r in runs:
        key = (r["node_id"], r["action_id"])
        last_success[key] = max(last_success.get(key, r["started_at"]), r["started_at"])
    for key, times in registered_at.items():
        assert key in last_success and last_success[key] >= max(times), key
    # Both clusters and several workers really took part.
    assert len({r["worker"].split(":")[1] for r in runs}) >= 3

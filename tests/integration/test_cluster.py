"""The django-q cluster drives the engine: registered work starts at once and completes."""

import time

import pytest
from django.core.management import call_command

from nodes.choices import NodeStatus, Transport
from nodes.models import Node
from sync.engine import register_desync
from sync.models import Node2Sync, Outcome, SyncRun
from sync.synchronizers import REGISTRY
from tests.integration.cluster_type_names import SLOW_TYPE
from tests.integration.conftest import CLUSTER_ENV, wait_for

pytestmark = pytest.mark.cluster


def test_it_synchronizes_an_added_node_through_the_running_cluster(qcluster):
    call_command("addnode", "n1", "--local")
    started = time.monotonic()

    def node_is_ready():
        """node n1 to become ready with every desynchronization done"""
        return (
            Node.objects.filter(name="n1", status=NodeStatus.READY).exists()
            and not Node2Sync.objects.exists()
        )

    wait_for(node_is_ready, timeout=60)
    assert not Node2Sync.objects.exists()
    runs = SyncRun.objects.filter(node__name="n1")
    assert sorted(runs.values_list("action__name", flat=True)) == sorted(REGISTRY)
    assert set(runs.values_list("outcome", flat=True)) == {Outcome.SUCCESS}
    assert Node.objects.get(name="n1").facts["hostname"]
    # Kicked on commit, not left to the once-a-minute sweep.
    assert time.monotonic() - started < 20


def test_it_runs_work_registered_again_while_the_cluster_is_up(qcluster):
    call_command("addnode", "n1", "--local")

    def all_done():
        """every desynchronization to be done"""
        return Node.objects.filter(status=NodeStatus.READY).exists() and not (
            Node2Sync.objects.exists()
        )

    wait_for(all_done, timeout=60)
    call_command("desync", "n1", "--action", "nodeinfo")
    wait_for(all_done, timeout=30)
    assert SyncRun.objects.filter(node__name="n1", action__name="nodeinfo").count() == 2


def most_at_once(runs) -> int:
    """The largest number of ``runs`` (started_at, finished_at) going on at one moment."""
    events = sorted(
        [(r.started_at, 1) for r in runs] + [(r.finished_at, -1) for r in runs],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


WORKERS = 2


def test_nodes_registered_one_by_one_run_as_concurrently_as_one_registration(
    cluster_types, start_qcluster
):
    """20 registrations of one node each make 20 tasks of one node for 2 workers; a task with
    room in its batch takes the other due nodes, so far more than 2 nodes run at once."""
    slow = cluster_types[SLOW_TYPE]
    Node.objects.bulk_create(
        Node(name=f"one{i:02d}", transport=Transport.LOCAL, host="localhost",
             facts={"slow_seconds": 4})
        for i in range(20)
    )  # fmt: skip
    cluster = start_qcluster(**CLUSTER_ENV, PANEL_Q_WORKERS=str(WORKERS))
    wait_for(lambda: cluster.running, timeout=60)
    for node in Node.objects.filter(name__startswith="one").order_by("name"):
        register_desync([node], [slow])  # one transaction, one task, each

    def all_done():
        """every node's slow run to be done"""
        return not Node2Sync.objects.exists()

    wait_for(all_done, timeout=120)
    runs = list(SyncRun.objects.filter(action=slow))
    assert len(runs) == 20 and {r.outcome for r in runs} == {Outcome.SUCCESS}
    assert most_at_once(runs) > WORKERS, most_at_once(runs)

"""The django-q cluster drives the engine: registered work starts at once and completes."""

import time

import pytest
from django.core.management import call_command

from nodes.choices import NodeStatus
from nodes.models import Node
from sync.models import Node2Sync, Outcome, SyncRun
from sync.synchronizers import REGISTRY
from tests.integration.conftest import wait_for

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

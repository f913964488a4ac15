"""Leases, retries and "due now" follow the database server's clock, not the worker's: a
worker whose own clock runs 90 s ahead or behind neither takes a live lease, nor loses its
own, nor delays work.

The worker's clock is moved with time-machine (Python's clocks in this process); the
database's clock (SQLite's C library, the MariaDB server) is the real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from nodes.transports import TransportError
from sync.clock import db_now_plus, read_db_now
from sync.engine import (
    claim_node,
    due_node_ids,
    recover_expired_leases,
    register_desync,
    renew_lease,
    run_nodes,
)
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun

pytestmark = pytest.mark.django_db
SKEW = 90


@contextmanager
def worker_clock_off_by(seconds: int) -> Iterator[None]:
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=seconds), tick=True):
        yield


@pytest.mark.parametrize("skew", [SKEW, -SKEW])
def test_it_never_lets_a_worker_with_a_wrong_clock_take_a_live_lease(make_node, skew):
    node = make_node()
    assert claim_node(node.pk, "worker-a")

    with worker_clock_off_by(skew):
        assert not claim_node(node.pk, "worker-b")
        assert recover_expired_leases() == 0

    node.refresh_from_db()
    assert node.lease_owner == "worker-a"


@pytest.mark.parametrize("skew", [SKEW, -SKEW])
def test_it_keeps_the_lease_of_a_worker_with_a_wrong_clock(make_node, skew):
    node = make_node()
    with worker_clock_off_by(skew):
        assert claim_node(node.pk, "worker-off")
        assert renew_lease(node.pk, "worker-off")

    assert not claim_node(node.pk, "worker-b")
    assert recover_expired_leases() == 0
    node.refresh_from_db()
    assert node.lease_owner == "worker-off"
    lease_left = (node.lease_until - read_db_now()).total_seconds()
    assert 50 < lease_left <= 60


@pytest.mark.parametrize("skew", [SKEW, -SKEW])
def test_it_makes_work_registered_by_a_worker_with_a_wrong_clock_due_at_once(
    make_node, make_type, skew
):
    action = make_type("t1")
    node = make_node()
    with worker_clock_off_by(skew):
        register_desync([node], [action])

    assert due_node_ids() == [node.pk]
    row = Node2Sync.objects.get()
    assert abs((row.next_attempt_at - read_db_now()).total_seconds()) < 5


@pytest.mark.parametrize("skew", [SKEW, -SKEW])
def test_it_backs_off_from_the_database_clock(make_node, make_type, skew):
    async def unreachable(ctx) -> None:
        raise TransportError("unreachable: connection refused")

    action = make_type("t1", run=unreachable)
    node = make_node()
    register_desync([node], [action])
    with worker_clock_off_by(skew):
        run_nodes([node.pk])

    assert SyncRun.objects.get().outcome == Outcome.FAILED
    row = Node2Sync.objects.get()
    assert row.state == DesyncState.FAILED
    wait = (row.next_attempt_at - read_db_now()).total_seconds()
    assert 0 < wait <= 10  # the first retry waits 5 to 10 s, whatever the worker's clock


def test_it_reads_the_database_clock_in_utc():
    assert abs((read_db_now() - datetime.now(UTC)).total_seconds()) < 5


@pytest.mark.parametrize("skew", [SKEW, -SKEW])
def test_processing_is_decided_on_the_database_clock(make_node, make_type, skew):
    """A web server whose clock is off still shows a running node as running, and a node
    whose worker died (its lease expired on the database's clock) as not running."""
    from nodes.models import Node

    action = make_type("t-a")
    running, dead = make_node("running"), make_node("dead")
    register_desync([running, dead], [action])
    for node, seconds in ((running, SKEW / 3), (dead, -SKEW / 3)):
        Node.objects.filter(pk=node.pk).update(
            current_action_id=action.pk, lease_owner="w", lease_until=db_now_plus(seconds)
        )
    with worker_clock_off_by(skew):
        assert list(Node.objects.processing().values_list("name", flat=True)) == ["running"]
        assert {n.name: n.is_processing for n in Node.objects.all()} == {
            "running": True,
            "dead": False,
        }
        running.refresh_from_db()  # loaded without the annotation: the database is asked
        dead.refresh_from_db()
        assert running.is_processing and not dead.is_processing

"""The health probe notices a node that dies while nothing changes, through the engine.

A real sshd is stopped by hand and started again; the loop below does what the cluster's
periodic task does (``sync.tasks.sweep``: the sweep, then the health pass) and runs the due
nodes as the tasks it enqueues would, with short intervals so the test takes seconds.
"""

from __future__ import annotations

import time

import pytest

from nodes.models import Node
from sync.engine import check_health, due_node_ids, run_nodes

pytestmark = pytest.mark.django_db

GRACE, INTERVAL = 2, 1


@pytest.fixture
def quick_health(settings):
    settings.SYNC = {
        **settings.SYNC,
        "probe_seconds": INTERVAL,
        "unreachable_grace_seconds": GRACE,
        "backoff_base_seconds": 0.2,
        "backoff_cap_seconds": 0.5,
    }


def one_pass() -> None:
    """What the cluster does each period: health pass, then run the nodes that are due."""
    check_health()
    due = due_node_ids()
    if due:
        run_nodes(due)


def conditions(node: Node) -> list[str]:
    node.refresh_from_db()
    return [c["type"] for c in node.conditions]


def wait_for(node: Node, expected: list[str], limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        one_pass()
        if conditions(node) == expected:
            return time.monotonic() - started
        time.sleep(0.3)
    raise AssertionError(f"{node.name} still has {conditions(node)} after {limit} s")


def test_it_turns_a_stopped_node_unreachable_and_back_without_any_registration(
    make_ssh_node, quick_health
):
    node, server = make_ssh_node("p1")
    one_pass()
    node.refresh_from_db()
    assert node.last_contact_at is not None and conditions(node) == []
    assert node.runs.filter(action__name="probe", outcome="success").exists()

    server.stop()
    took = wait_for(node, ["unreachable"], GRACE + INTERVAL + 10)
    assert took <= GRACE + INTERVAL + 5  # a pass with a node down costs a connection attempt
    assert "refused the connection" in node.conditions[0]["message"]
    assert not node.usable
    assert node.status == "ready"  # the status keeps its meaning: nothing is registered

    server.start()
    wait_for(node, [], 15)
    assert node.usable


def test_it_does_not_probe_a_node_heard_from_recently(make_ssh_node, quick_health, settings):
    settings.SYNC = {**settings.SYNC, "probe_seconds": 3600}
    node, _ = make_ssh_node("p2")
    one_pass()  # never heard from: probed once
    runs = node.runs.count()
    one_pass()
    assert node.runs.count() == runs

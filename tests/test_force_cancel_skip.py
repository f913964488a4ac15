"""What an admin does with a hanging synchronizer: force it, cancel it, or skip the work.

Each leaves a ``syncrun`` row that says what happened and names who did it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from nodes.choices import NodeStatus
from nodes.models import Node
from sync import engine
from sync.engine import (
    cancel_node,
    claim_node,
    due_node_ids,
    register_desync,
    run_nodes,
    set_maintenance,
    skip_desyncs,
    start_next_run,
    take_over_node,
)
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun

pytestmark = pytest.mark.django_db


def start_and_hang(node, action, worker: str = "hanging-worker"):
    """A worker that took the node and started the type, then hung (alive, lease live)."""
    register_desync([node], [action])
    assert claim_node(node.pk, worker)
    return start_next_run(node.pk, worker)


def test_it_cancels_a_run_which_is_then_held(make_node, make_type):
    node = make_node()
    ticket = start_and_hang(node, make_type("t-hang"))

    assert cancel_node(node, "alice") == ["T-Hang"]

    run = SyncRun.objects.get(pk=ticket.run_id)
    assert run.outcome == Outcome.CANCELLED and run.acted_by == "alice"
    assert "Cancelled by alice" in run.log and "hanging-worker" in run.log
    row = Node2Sync.objects.get()
    assert row.state == DesyncState.HELD and row.attempts == 1
    assert row.last_error == "cancelled by alice"
    assert due_node_ids() == []  # not started again at once: it would hang again
    assert engine.why_not_running(node.pk) == engine.Hold.CANCELLED
    node.refresh_from_db()
    assert node.lease_owner == "" and node.condition == "failing"
    assert "cancelled by alice" in node.condition_message


def test_it_says_when_nothing_runs_to_cancel(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-a")])
    assert cancel_node(node, "alice") == []
    assert Node2Sync.objects.get().state == DesyncState.PENDING


def test_it_records_who_forced_a_takeover(make_node, make_type):
    node = make_node()
    ticket = start_and_hang(node, make_type("t-hang"))

    assert take_over_node(node, "bob")

    run = SyncRun.objects.get(pk=ticket.run_id)
    assert run.outcome == Outcome.FORCED and run.acted_by == "bob"
    assert Node2Sync.objects.get().state == DesyncState.PENDING


def test_it_skips_work_done_by_hand_and_records_who(make_node, make_type):
    node = make_node()
    done_by_hand = make_type("t-install", node_status=NodeStatus.INSTALLING)
    other = make_type("t-other", node_status=NodeStatus.READY)
    register_desync([node], [done_by_hand, other])
    node.refresh_from_db()
    assert node.status == NodeStatus.INSTALLING

    assert skip_desyncs(node, [done_by_hand.pk], "carol") == ["T-Install"]

    assert list(Node2Sync.objects.values_list("action__name", flat=True)) == ["t-other"]
    run = SyncRun.objects.get()
    assert run.outcome == Outcome.SKIPPED and run.acted_by == "carol"
    assert "Skipped by carol" in run.log
    node.refresh_from_db()
    assert node.status == NodeStatus.READY


def test_it_skips_a_running_type_by_cancelling_it_first(make_node, make_type):
    node = make_node()
    ticket = start_and_hang(node, make_type("t-hang"))

    assert skip_desyncs(node, None, "carol") == ["T-Hang"]

    assert not Node2Sync.objects.exists()
    outcomes = dict(SyncRun.objects.values_list("pk", "outcome"))
    assert outcomes[ticket.run_id] == Outcome.CANCELLED
    assert sorted(outcomes.values()) == [Outcome.CANCELLED, Outcome.SKIPPED]


@pytest.mark.django_db(transaction=True)
def test_it_ends_a_live_hanging_run_within_seconds_of_a_cancel(make_node, make_type, settings):
    settings.SYNC = {**settings.SYNC, "cancel_check_seconds": 0.5}
    node = make_node()
    started = threading.Event()

    async def hang(ctx) -> None:
        started.set()
        await asyncio.sleep(60)

    register_desync([node], [make_type("t-hang", run=hang, timeout=60)])
    results = []

    def worker() -> None:
        try:
            results.extend(run_nodes([node.pk]))
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    assert started.wait(10)
    cancelled_at = time.monotonic()
    assert cancel_node(node, "alice") == ["T-Hang"]
    thread.join(15)

    assert not thread.is_alive()
    assert time.monotonic() - cancelled_at < 5
    assert results[0].lease_lost
    assert SyncRun.objects.get().outcome == Outcome.CANCELLED
    assert Node2Sync.objects.get().state == DesyncState.HELD


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_nodesync_cancels_and_skips_by_name(make_node, make_type):
    node = make_node()
    start_and_hang(node, make_type("t-hang"))

    out = run("nodesync", "--node", node.name, "--cancel")
    assert "cancelled T-Hang" in out and "(nodesync)" in out
    assert SyncRun.objects.get().outcome == Outcome.CANCELLED
    assert "nothing is running" in run("nodesync", "--node", node.name, "--cancel")

    out = run("nodesync", "--node", node.name, "--skip", "--action", "t-hang")
    assert "skipped T-Hang without running" in out
    assert not Node2Sync.objects.exists()
    assert "nothing to skip" in run("nodesync", "--node", node.name, "--skip")


@pytest.mark.parametrize(
    "args",
    [
        ["--cancel"],
        ["--skip"],
        ["--node", "n1", "--cancel", "--action", "t-a"],
    ],
)
def test_nodesync_refuses_unclear_requests_with_exit_2(make_node, make_type, args):
    make_node()
    make_type("t-a")
    with pytest.raises(CommandError) as caught:
        call_command("nodesync", *args, stdout=StringIO(), stderr=StringIO())
    assert caught.value.returncode == 2


@pytest.mark.parametrize("args", [["--cancel", "--skip"], ["--force", "--cancel"]])
def test_nodesync_takes_one_of_force_cancel_and_skip(manage, args):
    result = manage("nodesync", "--node", "n1", *args)
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def test_it_keeps_only_the_newest_runs_of_each_node_and_type(make_node, make_type, settings):
    settings.SYNC = {**settings.SYNC, "runs_kept_per_type": 3}
    node, other = make_node("n1"), make_node("n2")
    a, b = make_type("t-a"), make_type("t-b")
    for _ in range(6):
        register_desync([node, other], [a, b])
        run_nodes([node.pk, other.pk])
    newest = {
        (n.pk, t.pk): list(
            SyncRun.objects.filter(node=n, action=t).order_by("-id").values_list("pk", flat=True)
        )[:3]
        for n in (node, other)
        for t in (a, b)
    }

    assert engine.check_health()["runs_pruned"] == 4 * 3

    for (node_id, action_id), kept in newest.items():
        left = SyncRun.objects.filter(node_id=node_id, action_id=action_id)
        assert sorted(left.values_list("pk", flat=True)) == sorted(kept)


def test_it_stops_a_running_session_before_its_next_type_when_maintenance_goes_on(
    make_node, make_type
):
    node = make_node()
    ran = []

    async def first(ctx) -> None:
        ran.append("first")
        await ctx.db(set_maintenance, [ctx.node], True)  # the admin, while the type runs

    async def second(ctx) -> None:
        ran.append("second")

    register_desync([node], [make_type("t-1", priority=1, run=first)])
    register_desync([node], [make_type("t-2", priority=2, run=second)])
    [result] = run_nodes([node.pk])

    assert ran == ["first"]
    assert result.completed == 1
    assert list(Node2Sync.objects.values_list("action__name", flat=True)) == ["t-2"]


def test_it_cancels_for_a_user_with_a_long_name(make_node, make_type):
    node = make_node()
    ticket = start_and_hang(node, make_type("t-hang"))
    by = "a-very-long-user-name-" * 6  # 132 characters: beyond the worker columns

    assert cancel_node(node, by[:150]) == ["T-Hang"]
    assert take_over_node(node, by[:150])

    assert SyncRun.objects.get(pk=ticket.run_id).outcome == Outcome.CANCELLED


def test_a_cancelled_type_registered_again_while_it_ran_runs_again_at_once(make_node, make_type):
    """Cancel fails its type through the one failure path: newer data registered while it ran
    may be the fix, so it is due now, as after any failed run (not held for a backoff)."""
    node = make_node()
    action = make_type("t-hang")
    start_and_hang(node, action)
    register_desync([node], [action])  # new data while it runs: the generation moves on

    assert cancel_node(node, "alice") == ["T-Hang"]

    row = Node2Sync.objects.get()
    assert row.state == DesyncState.PENDING and row.attempts == 1
    assert row.last_error == "cancelled by alice"
    assert due_node_ids() == [node.pk]


def test_a_cancelled_type_does_not_come_back_by_itself(make_node, make_type, settings, operator):
    """Cancel means stop: no backoff brings it back, however long ago it was cancelled (the
    clock moved two hours on), the sweep leaves it, ``stuck`` does not count it, and the page
    says who cancelled it; a retry, or new data, brings it back."""
    from datetime import timedelta

    from django.urls import reverse
    from django.utils import timezone

    node = make_node()
    action = make_type("t-hang")
    start_and_hang(node, action)
    cancel_node(node, "alice")
    cancelled_at = timezone.localtime(Node2Sync.objects.get().next_attempt_at)
    page = operator.get(reverse("nodes:detail", args=[node.pk])).content.decode()
    assert f"Cancelled by alice at {cancelled_at:%H:%M}" in page

    long_ago = timezone.now() - timedelta(hours=2)
    Node2Sync.objects.update(next_attempt_at=long_ago, registered_at=long_ago)
    Node.objects.filter(pk=node.pk).update(last_sync_at=long_ago)
    assert due_node_ids() == []
    assert engine.sweep()["enqueued"] == 0
    [result] = run_nodes([node.pk])
    assert result.completed == 0 and not SyncRun.objects.filter(outcome=Outcome.RUNNING).exists()
    settings.SYNC = {**settings.SYNC, "stuck_seconds": 60}
    engine.refresh_stuck()
    assert not Node.objects.get(pk=node.pk).has_condition("stuck")

    engine.retry_now([node])
    assert Node2Sync.objects.get().state == DesyncState.PENDING
    assert due_node_ids() == [node.pk]


def test_new_data_releases_a_cancelled_type(make_node, make_type):
    node = make_node()
    action = make_type("t-hang")
    start_and_hang(node, action)
    cancel_node(node, "alice")
    register_desync([node], [action])  # what a change of its watched data does
    assert Node2Sync.objects.get().state == DesyncState.PENDING
    assert due_node_ids() == [node.pk]


def test_a_retried_type_says_retrying_instead_of_its_old_failure(make_node, make_type):
    node = make_node()
    action = make_type("t-hang")
    start_and_hang(node, action)
    cancel_node(node, "alice")
    assert "cancelled by alice" in Node.objects.get(pk=node.pk).condition_message
    Node2Sync.objects.update(state=DesyncState.FAILED)  # due for its retry now
    assert claim_node(node.pk, "retrying-worker")
    assert start_next_run(node.pk, "retrying-worker", ignore_backoff=True)
    message = Node.objects.get(pk=node.pk).condition_message
    assert message == "T-Hang: retrying (the last attempt failed)"

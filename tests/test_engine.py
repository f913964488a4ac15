"""The engine's rules, one behaviour per test, through the real database path."""

import asyncio
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import OrmQ

from nodes.choices import NodeStatus
from nodes.models import Node
from nodes.transports import CommandFailed, TransportError
from sync import engine
from sync.engine import (
    backoff_seconds,
    claim_node,
    finish_run,
    recover_expired_leases,
    register_desync,
    release_node,
    run_nodes,
    start_next_run,
    sweep,
)
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun

pytestmark = pytest.mark.django_db


def _expire_lease(node: Node) -> None:
    Node.objects.filter(pk=node.pk).update(lease_until=timezone.now() - timedelta(seconds=1))


# --- registration and status ----------------------------------------------------------------


def test_it_registers_idempotently(make_node, make_type):
    node = make_node()
    a = make_type("t-a", priority=1)
    register_desync([node], [a])
    register_desync([node], [a])
    assert Node2Sync.objects.filter(node=node, action=a).count() == 1


def test_it_sets_status_from_lowest_priority_type_that_is_not_ready(make_node, make_type):
    node = make_node()
    ready = make_type("t-ready", priority=1, node_status=NodeStatus.READY)
    installing = make_type("t-install", priority=20, node_status=NodeStatus.INSTALLING)
    syncing = make_type("t-sync", priority=30, node_status=NodeStatus.SYNCHRONIZING)
    register_desync([node], [syncing, installing, ready])
    node.refresh_from_db()
    assert node.status == NodeStatus.INSTALLING


def test_it_keeps_the_node_ready_when_only_ready_types_are_pending(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-ready", node_status=NodeStatus.READY)])
    node.refresh_from_db()
    assert node.status == NodeStatus.READY


def test_it_returns_the_node_to_ready_when_its_work_is_done(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-a", priority=1)])
    node.refresh_from_db()
    assert node.status == NodeStatus.SYNCHRONIZING
    [result] = run_nodes([node.pk])
    node.refresh_from_db()
    assert result.completed == 1
    assert node.status == NodeStatus.READY
    assert not Node2Sync.objects.filter(node=node).exists()
    assert node.last_sync_at is not None


def test_it_makes_a_failed_row_due_again_when_registered_again(make_node, make_type):
    node = make_node()
    a = make_type("t-a")
    register_desync([node], [a])
    Node2Sync.objects.filter(node=node).update(
        state=DesyncState.FAILED, attempts=3, next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    register_desync([node], [a])
    row = Node2Sync.objects.get(node=node)
    assert row.state == DesyncState.PENDING
    assert row.attempts == 0
    assert row.next_attempt_at <= timezone.now()


def test_it_starts_the_nodes_when_the_registration_commits(
    make_node, make_type, django_capture_on_commit_callbacks
):
    node = make_node()
    with django_capture_on_commit_callbacks(execute=True):
        register_desync([node], [make_type("t-a")])
    [task] = OrmQ.objects.all()
    assert task.task["func"] == "sync.tasks.run_node_sessions"
    assert task.task["args"] == ([node.pk],)


# --- the lease --------------------------------------------------------------------------------


def test_it_lets_one_worker_claim_a_node(make_node):
    node = make_node()
    assert claim_node(node.pk, "w1")
    assert not claim_node(node.pk, "w2")
    release_node(node.pk, "w1")
    assert claim_node(node.pk, "w2")


def test_it_lets_another_worker_take_an_expired_lease(make_node):
    node = make_node()
    assert claim_node(node.pk, "w1")
    _expire_lease(node)
    assert claim_node(node.pk, "w2")
    assert Node.objects.get(pk=node.pk).lease_owner == "w2"


def test_it_skips_a_node_another_worker_runs(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-a")])
    assert claim_node(node.pk, "someone-else")
    [result] = run_nodes([node.pk])
    assert not result.claimed
    assert Node2Sync.objects.get(node=node).state == DesyncState.PENDING


# --- sessions ---------------------------------------------------------------------------------


def test_it_runs_types_in_priority_order_over_one_transport(make_node, make_type):
    node = make_node()
    seen: list[tuple[str, int]] = []

    def recorder(name):
        async def run(ctx):
            seen.append((name, id(ctx.transport)))

        return run

    types = [make_type(f"t-{p}", priority=p, run=recorder(f"t-{p}")) for p in (30, 10, 20)]
    register_desync([node], types)
    run_nodes([node.pk])
    assert [name for name, _ in seen] == ["t-10", "t-20", "t-30"]
    assert len({transport for _, transport in seen}) == 1


async def _fail(ctx):
    ctx.log("trying")
    raise TransportError("node said no")


def test_a_type_without_declared_needs_waits_for_every_type_before_it(make_node, make_type):
    """The seed's rule, kept for types that declare no ``needs`` (the README's example, a
    site's types): a failure holds back every type after it, in this session and the next."""
    node = make_node()
    ran: list[str] = []

    async def later(ctx):
        ran.append("later")

    first = make_type("t-first", priority=1, run=_fail)
    second = make_type("t-second", priority=2, run=later)
    register_desync([node], [first, second])
    [result] = run_nodes([node.pk])
    assert result.failed
    assert ran == []
    assert Node2Sync.objects.get(node=node, action=second).state == DesyncState.PENDING
    # Later types wait for the failed one even when the node is run again.
    run_nodes([node.pk])
    assert ran == []


def test_it_keeps_the_error_on_the_row_the_node_and_the_run(make_node, make_type):
    node = make_node()
    action = make_type("t-first", run=_fail)
    register_desync([node], [action])
    run_nodes([node.pk])
    row = Node2Sync.objects.get(node=node)
    node.refresh_from_db()
    run = SyncRun.objects.get(node=node)
    assert row.state == DesyncState.FAILED
    assert row.attempts == 1
    assert row.last_error == "node said no"
    assert node.last_error == "T-First: node said no"
    assert run.outcome == Outcome.FAILED
    assert "trying" in run.log
    assert "ERROR: node said no" in run.log


def test_it_writes_start_end_and_error_lines_to_the_log_file(make_node, make_type):
    log_file = settings.LOG_DIR / "panel.log"
    before = log_file.stat().st_size if log_file.exists() else 0
    node = make_node("logged-node")
    register_desync(
        [node], [make_type("t-ok", priority=1), make_type("t-bad", priority=2, run=_fail)]
    )
    run_nodes([node.pk])
    with open(log_file) as f:
        f.seek(before)
        written = f.read()
    assert "sync start node=logged-node type=t-ok" in written
    assert "sync end node=logged-node type=t-ok outcome=success" in written
    assert "sync error node=logged-node type=t-bad outcome=failed" in written
    assert "node said no" in written


def test_it_backs_off_exponentially_with_a_cap_and_jitter():
    base = settings.SYNC["backoff_base_seconds"]
    cap = settings.SYNC["backoff_cap_seconds"]
    for attempts in range(1, 12):
        step = min(cap, base * 2 ** (attempts - 1))
        delays = {backoff_seconds(attempts) for _ in range(20)}
        assert all(step / 2 <= d <= step for d in delays)
        assert len(delays) > 1  # jittered
    assert backoff_seconds(50) <= cap


def test_it_schedules_the_retry_after_the_backoff(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-first", run=_fail)])
    for attempts in (1, 2, 3):
        before = timezone.now()
        run_nodes([node.pk], ignore_backoff=True)
        row = Node2Sync.objects.get(node=node)
        step = settings.SYNC["backoff_base_seconds"] * 2 ** (attempts - 1)
        assert row.attempts == attempts
        delay = (row.next_attempt_at - before).total_seconds()
        assert step / 2 - 1 <= delay <= step + 1
    # Not due yet: a normal session leaves it alone.
    [result] = run_nodes([node.pk])
    assert result.completed == 0 and not result.failed


def test_it_never_holds_up_other_nodes(make_node, make_type):
    bad, good = make_node("bad"), make_node("good")

    async def fail_on_bad(ctx):
        if ctx.node.name == "bad":
            raise TransportError("unreachable")

    register_desync([bad, good], [make_type("t-a", run=fail_on_bad)])
    results = {r.node.name: r for r in run_nodes([bad.pk, good.pk])}
    assert results["bad"].failed
    assert results["good"].completed == 1
    assert Node.objects.get(name="good").status == NodeStatus.READY


def test_it_runs_many_nodes_at_once_in_one_worker(make_node, make_type):
    nodes = [make_node(f"n{i}") for i in range(10)]

    async def wait_on_network(ctx):
        await asyncio.sleep(0.5)

    register_desync(nodes, [make_type("t-slow", run=wait_on_network)])
    started = timezone.now()
    results = run_nodes([n.pk for n in nodes])
    assert sum(r.completed for r in results) == 10
    assert (timezone.now() - started).total_seconds() < 3


def test_it_does_not_lose_a_registration_made_while_the_type_runs(make_node, make_type):
    node = make_node()
    runs: list[int] = []

    async def changes_during_run(ctx):
        runs.append(1)
        if len(runs) == 1:
            await ctx.db(register_desync, [ctx.node], [action])

    action = make_type("t-a", run=changes_during_run)
    register_desync([node], [action])
    run_nodes([node.pk])
    assert len(runs) == 2  # the newer desynchronization ran again, in the same session
    assert not Node2Sync.objects.filter(node=node).exists()
    assert SyncRun.objects.filter(node=node, outcome=Outcome.SUCCESS).count() == 2


def test_it_keeps_a_registration_made_while_the_run_was_finishing(make_node, make_type):
    node = make_node()
    action = make_type("t-a")
    register_desync([node], [action])
    assert claim_node(node.pk, "w1")
    ticket = start_next_run(node.pk, "w1")
    register_desync([node], [action])  # arrives while the old run works
    assert finish_run(ticket, "w1", Outcome.SUCCESS, "", "")
    row = Node2Sync.objects.get(node=node)
    assert row.state == DesyncState.PENDING
    assert row.generation == ticket.generation + 1


def test_it_cancels_a_run_past_its_timeout(make_node, make_type):
    node = make_node()

    async def hangs(ctx):
        await ctx.transport.run(["sleep", "30"])

    register_desync([node], [make_type("t-hang", run=hangs, timeout=1)])
    started = timezone.now()
    run_nodes([node.pk])
    assert (timezone.now() - started).total_seconds() < 10
    run = SyncRun.objects.get(node=node)
    row = Node2Sync.objects.get(node=node)
    assert run.outcome == Outcome.TIMEOUT
    assert row.state == DesyncState.FAILED
    assert row.last_error == "timed out after 1 s while running `sleep 30`"


def test_it_leaves_one_run_row_per_execution(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-a", priority=1), make_type("t-b", priority=2)])
    run_nodes([node.pk])
    runs = list(SyncRun.objects.filter(node=node).order_by("started_at", "id"))
    assert [r.action.name for r in runs] == ["t-a", "t-b"]
    for run in runs:
        assert run.outcome == Outcome.SUCCESS
        assert run.worker.startswith("worker@")
        assert run.started_at <= run.finished_at
        assert run.log == "nothing to do"


def test_it_fails_a_run_whose_synchronizer_crashes(make_node, make_type):
    node = make_node()

    async def buggy(ctx):
        raise KeyError("oops")

    register_desync([node], [make_type("t-bug", run=buggy)])
    [result] = run_nodes([node.pk])
    assert result.failed
    # Said in words, without the Python class name; the traceback is in the panel's log.
    error = Node2Sync.objects.get(node=node).last_error
    assert error == "the T-Bug synchronizer failed unexpectedly: 'oops'"


# --- recovery ---------------------------------------------------------------------------------


def _start_and_die(node, action, worker="dead-worker"):
    """What a worker leaves behind when it is killed in the middle of a run."""
    register_desync([node], [action])
    assert claim_node(node.pk, worker)
    return start_next_run(node.pk, worker)


def test_it_recovers_an_expired_lease_on_the_next_sweep(make_node, make_type):
    node = make_node()
    _start_and_die(node, make_type("t-a"))
    _expire_lease(node)
    result = sweep()
    assert result["recovered"] == 1
    row = Node2Sync.objects.get(node=node)
    run = SyncRun.objects.get(node=node)
    node.refresh_from_db()
    assert row.state == DesyncState.PENDING
    assert run.outcome == Outcome.LOST
    assert "dead-worker" in run.log and "expired" in run.log
    assert node.lease_owner == "" and not node.is_processing
    assert result["enqueued"] == 1


def test_it_leaves_a_live_lease_alone(make_node, make_type):
    node = make_node()
    _start_and_die(node, make_type("t-a"), worker="alive")
    assert recover_expired_leases() == 0
    assert Node2Sync.objects.get(node=node).state == DesyncState.PROCESSING


def test_it_reruns_a_lost_run_to_completion(make_node, make_type):
    node = make_node()
    _start_and_die(node, make_type("t-a"))
    _expire_lease(node)
    [result] = run_nodes([node.pk])
    assert result.completed == 1
    outcomes = sorted(SyncRun.objects.filter(node=node).values_list("outcome", flat=True))
    assert outcomes == [Outcome.LOST, Outcome.SUCCESS]
    assert Node.objects.get(pk=node.pk).status == NodeStatus.READY


def test_it_records_a_forced_takeover_and_ignores_the_old_workers_result(make_node, make_type):
    node = make_node()
    ticket = _start_and_die(node, make_type("t-a"), worker="hanging")
    assert claim_node(node.pk, "admin", force=True)
    run = SyncRun.objects.get(pk=ticket.run_id)
    assert run.outcome == Outcome.FORCED
    assert "hanging" in run.log and "admin" in run.log
    # The hanging worker wakes up: its late result must not touch what is now admin's.
    assert not finish_run(ticket, "hanging", Outcome.SUCCESS, "late", "")
    assert Node2Sync.objects.get(node=node).state == DesyncState.PENDING


def test_it_sweeps_only_nodes_with_due_work_and_no_live_lease(make_node, make_type):
    action = make_type("t-a")
    due, leased, waiting, idle = (make_node(n) for n in ("due", "leased", "waiting", "idle"))
    register_desync([due, leased, waiting], [action])
    claim_node(leased.pk, "w")
    Node2Sync.objects.filter(node=waiting).update(
        state=DesyncState.FAILED, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    assert engine.due_node_ids() == [due.pk]


@pytest.mark.parametrize("count", [3, 200])
def test_it_sweeps_with_a_fixed_number_of_queries(
    make_node, make_type, django_assert_num_queries, count
):
    action = make_type("t-a")
    Node.objects.bulk_create(Node(name=f"n{i}", transport="local") for i in range(count))
    register_desync(Node.objects.all(), [action])
    OrmQ.objects.all().delete()
    with django_assert_num_queries(4):
        sweep()
    batches = [t.task["args"][0] for t in OrmQ.objects.all()]
    assert sorted(n for batch in batches for n in batch) == sorted(
        Node.objects.values_list("pk", flat=True)
    )
    assert all(len(batch) <= settings.SYNC["batch_size"] for batch in batches)


# --- what admins do ---------------------------------------------------------------------------


def test_it_leaves_a_node_in_maintenance_alone(make_node, make_type):
    node = make_node(maintenance=True)
    register_desync([node], [make_type("t-a")])
    assert engine.due_node_ids() == []
    [result] = run_nodes([node.pk])
    assert not result.claimed
    engine.set_maintenance([node], False)
    assert engine.due_node_ids() == [node.pk]
    [result] = run_nodes([node.pk])
    assert result.completed == 1


def test_it_starts_the_work_of_a_node_leaving_maintenance(
    make_node, make_type, django_capture_on_commit_callbacks
):
    node = make_node(maintenance=True)
    register_desync([node], [make_type("t-a")])
    OrmQ.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        engine.set_maintenance([node], False)
    assert [t.task["args"] for t in OrmQ.objects.all()] == [([node.pk],)]


def test_it_retries_failed_work_now(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-first", run=_fail)])
    run_nodes([node.pk])
    assert Node2Sync.objects.get(node=node).next_attempt_at > timezone.now()
    engine.retry_now([node])
    row = Node2Sync.objects.get(node=node)
    assert row.state == DesyncState.PENDING and row.next_attempt_at <= timezone.now()


def test_it_takes_over_a_hanging_node_for_an_admin(make_node, make_type):
    node = make_node()
    ticket = _start_and_die(node, make_type("t-a"), worker="hanging")
    assert engine.take_over_node(node, by="alice")
    run = SyncRun.objects.get(pk=ticket.run_id)
    node.refresh_from_db()
    assert run.outcome == Outcome.FORCED
    assert "alice" in run.log and "hanging" in run.log
    assert node.lease_owner == ""
    assert Node2Sync.objects.get(node=node).state == DesyncState.PENDING
    [result] = run_nodes([node.pk])
    assert result.completed == 1


def test_it_runs_again_at_once_a_type_registered_again_while_it_failed(make_node, make_type):
    node = make_node()
    runs: list[int] = []

    async def fails_first(ctx):
        runs.append(1)
        if len(runs) == 1:
            await ctx.db(register_desync, [ctx.node], [action])  # the admin fixes the data
            raise TransportError("old data was wrong")

    action = make_type("t-a", run=fails_first)
    register_desync([node], [action])
    [result] = run_nodes([node.pk])
    assert len(runs) == 2
    assert not result.failed
    assert not Node2Sync.objects.filter(node=node).exists()
    outcomes = list(
        SyncRun.objects.filter(node=node).order_by("id").values_list("outcome", flat=True)
    )
    assert outcomes == [Outcome.FAILED, Outcome.SUCCESS]


def test_it_hands_the_rest_to_a_new_task_when_a_session_runs_past_its_budget(
    make_node, make_type, settings
):
    settings.SYNC = {**settings.SYNC, "session_budget_seconds": 0.3}
    node = make_node()

    async def slow(ctx):
        await asyncio.sleep(0.4)

    first, second = make_type("t-1", priority=1, run=slow), make_type("t-2", priority=2, run=slow)
    register_desync([node], [first, second])
    OrmQ.objects.all().delete()
    [result] = run_nodes([node.pk])
    assert result.completed == 1 and result.budget_spent
    assert list(Node2Sync.objects.filter(node=node).values_list("action__name", flat=True)) == [
        "t-2"
    ]
    assert [t.task["args"] for t in OrmQ.objects.all()] == [([node.pk],)]
    assert Node.objects.get(pk=node.pk).lease_owner == ""


# --- the one rule that says why work does not start, and tasks that take due nodes ----------


def test_it_sweeps_no_node_whose_next_type_waits_for_its_retry(make_node, make_type):
    """The sweep asks the sessions' own rule: a later type that is due does not make a node
    due while the type it depends on waits for its retry (the session would run nothing)."""
    node = make_node()
    first, second = make_type("t-1", priority=1), make_type("t-2", priority=2)
    register_desync([node], [first, second])
    Node2Sync.objects.filter(node=node, action=first).update(
        state=DesyncState.FAILED, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    assert engine.due_node_ids() == []
    assert engine.why_not_running(node.pk) == engine.Hold.BACKOFF
    [result] = run_nodes([node.pk])
    assert result.completed == 0


@pytest.mark.parametrize(
    "case, hold",
    [
        ("due", None),
        ("maintenance", engine.Hold.MAINTENANCE),
        ("nothing", engine.Hold.NOTHING),
        ("running", engine.Hold.RUNNING),
        ("backoff", engine.Hold.BACKOFF),
        ("unreachable", engine.Hold.UNREACHABLE),
        ("cancelled", engine.Hold.CANCELLED),
        ("host-key", engine.Hold.HOST_KEY),
    ],
)
def test_why_not_running_and_the_sweep_are_one_rule(make_node, make_type, case, hold):
    node = make_node(maintenance=case == "maintenance")
    if case == "unreachable":
        Node.objects.filter(pk=node.pk).update(contact_failed_since=timezone.now())
    if case == "host-key":
        Node.objects.filter(pk=node.pk).update(condition="host-key-changed")

    if case != "nothing":
        register_desync([node], [make_type("t-a")])
    if case == "running":
        Node2Sync.objects.filter(node=node).update(state=DesyncState.PROCESSING)
    if case == "cancelled":
        Node2Sync.objects.filter(node=node).update(state=DesyncState.HELD)
    if case in ("backoff", "unreachable"):
        Node2Sync.objects.filter(node=node).update(
            state=DesyncState.FAILED, next_attempt_at=timezone.now() + timedelta(minutes=5)
        )
    assert engine.why_not_running(node.pk) == hold
    assert engine.due_node_ids() == ([node.pk] if hold is None else [])
    assert engine.has_due_work(node.pk) == (hold is None)


def test_a_task_with_room_takes_other_due_nodes_that_waited(make_node, make_type, settings):
    """A task given one node also runs the other due nodes whose own task has not started
    them, but nothing the rule holds back (maintenance) and nothing leased elsewhere."""
    settings.SYNC = {**settings.SYNC, "take_due_after_seconds": 0}
    action = make_type("t-a")
    given, other, held, leased = (make_node(n) for n in ("given", "other", "held", "leased"))
    register_desync([given, other, held, leased], [action])
    Node.objects.filter(pk=held.pk).update(maintenance=True)
    claim_node(leased.pk, "another-worker")
    results = engine.run_task_batch([given.pk])
    assert {r.node.name for r in results if r.completed} == {"given", "other"}
    assert set(Node2Sync.objects.values_list("node__name", flat=True)) == {"held", "leased"}


def test_a_task_leaves_just_registered_nodes_to_their_own_task(make_node, make_type):
    """Work registered a moment ago has its own task on the queue: the registration's nodes
    still spread over every worker rather than all go to the first task that looks."""
    action = make_type("t-a")
    given, fresh = make_node("given"), make_node("fresh")
    register_desync([given, fresh], [action])
    results = engine.run_task_batch([given.pk])
    assert [r.node.name for r in results] == ["given"]
    assert list(Node2Sync.objects.values_list("node__name", flat=True)) == ["fresh"]


def test_a_task_takes_no_node_after_its_budget(make_node, make_type, settings):
    """A task stays within django-q's timeout: past its budget it takes no further node."""
    settings.SYNC = {**settings.SYNC, "take_due_after_seconds": 0, "session_budget_seconds": 0}
    action = make_type("t-a")
    given, other = make_node("given"), make_node("other")
    register_desync([given, other], [action])
    results = engine.run_task_batch([given.pk])
    assert [r.node.name for r in results] == ["given"] and results[0].budget_spent
    assert not SyncRun.objects.filter(node=other).exists()


def test_one_heartbeat_checks_every_lease_of_an_event_loop_at_once(make_node, make_type, settings):
    """The sessions of one task check and renew their leases together: one query per check
    for all of them, not one per busy node every ``cancel_check_seconds``."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.SYNC = {**settings.SYNC, "cancel_check_seconds": 0.1}

    async def slow(ctx):
        await asyncio.sleep(0.6)

    nodes = [make_node(f"n{i}") for i in range(5)]
    register_desync(nodes, [make_type("t-slow", run=slow)])
    with CaptureQueriesContext(connection) as queries:
        results = run_nodes([n.pk for n in nodes])
    assert [r.completed for r in results] == [1] * 5
    reads = [q["sql"] for q in queries if q["sql"].startswith("SELECT")]
    one_node = [sql for sql in reads if "lease_owner" in sql.split("WHERE", 1)[-1]]
    together = [sql for sql in reads if "lease_owner" in sql and " IN (" in sql]
    assert one_node == []  # each check used to be a read per node
    # While the five ran, a check asked for the five nodes at once.
    assert max(sql.split(" IN (", 1)[1].split(")")[0].count(",") + 1 for sql in together) == 5


@pytest.mark.django_db(transaction=True)  # real commits, to count them
def test_the_sessions_of_an_event_loop_commit_their_runs_together(
    make_node, make_type, monkeypatch
):
    """Bookkeeping at database speed: the sessions of one task write their runs' ends and
    starts in shared transactions (one log flush for many runs), and the engine asks a fixed
    number of queries per run."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    actions = [make_type(f"t-{i}") for i in range(6)]
    nodes = [make_node(f"n{i}") for i in range(10)]
    register_desync(nodes, actions)
    commits = []
    commit = connection.commit
    monkeypatch.setattr(connection, "commit", lambda: commits.append(1) or commit())
    connection.queries_log.clear()
    with CaptureQueriesContext(connection) as queries:
        results = run_nodes([n.pk for n in nodes])
    assert [r.completed for r in results] == [6] * 10
    assert not Node2Sync.objects.exists()
    runs = SyncRun.objects.filter(outcome=Outcome.SUCCESS).count()
    assert runs == 60
    # Transactions: fewer than one for every five runs (one per run and one more per
    # session before: 70), whatever the database.
    assert 0 < len(commits) < runs / 5, len(commits)
    assert not [q for q in queries if q["sql"].startswith("SAVEPOINT")]
    assert len(queries) / runs < 12, len(queries) / runs  # 17.5 before issue 20


def test_a_group_that_fails_is_written_again_one_by_one(make_node, make_type, monkeypatch):
    """One node's write that breaks rolls back its group: every other session's write is
    done again on its own, and only the broken one fails."""
    from sync.engine import runs

    calls = []

    def breaks():
        calls.append("broken")
        raise RuntimeError("broken")

    def works(name):
        def call():
            calls.append(name)
            Node.objects.filter(name=name).update(last_error="written")
            return name

        return call

    a, b = make_node("a"), make_node("b")
    outcome = runs.in_one_transaction([(a.pk, works("a")), (99999, breaks), (b.pk, works("b"))])
    assert outcome[0] == "a" and outcome[2] == "b"
    assert isinstance(outcome[1], RuntimeError)
    assert set(Node.objects.values_list("last_error", flat=True)) == {"written"}
    assert calls == ["a", "b", "broken", "a", "broken", "b"]  # node order, then one by one


def test_the_cluster_keeps_its_database_connections_between_tasks(settings):
    """The cluster's processes keep a connection (``PANEL_CLUSTER_CONN_MAX_AGE``), checked
    before use; commands and the web server keep Django's one connection per request."""
    from django.db import connections

    from panel.management.commands.qcluster import keep_connections

    assert connections.settings["default"]["CONN_MAX_AGE"] == 0
    saved = dict(connections.settings["default"])
    try:
        keep_connections()
        assert connections["default"].settings_dict["CONN_MAX_AGE"] == 300
        assert connections["default"].settings_dict["CONN_HEALTH_CHECKS"] is True
    finally:
        connections.settings["default"].update(saved)


# --- a failure holds back only what needs it --------------------------------------------------


async def _no_package(ctx):
    raise CommandFailed(["apt-get", "install", "nope"], 100, "E: Unable to locate package nope")


def _four_types(make_type, ran: list[str]):
    """The built-ins' shape: software and users need node information, files need software."""

    def recorder(name):
        async def run(ctx):
            ran.append(name)

        return run

    return [
        make_type("t-info", priority=10, run=recorder("t-info"), needs=()),
        make_type("t-soft", priority=20, run=_no_package, needs=("t-info",)),
        make_type("t-files", priority=30, run=recorder("t-files"), needs=("t-soft",)),
        make_type("t-users", priority=40, run=recorder("t-users"), needs=("t-info",)),
    ]


def test_a_failing_type_holds_back_only_the_types_that_need_it(make_node, make_type):
    """Software fails: users (which need node information only) still run in the same
    session, files (which need software) wait, and say for what."""
    node = make_node()
    ran: list[str] = []
    types = _four_types(make_type, ran)
    register_desync([node], types)
    [result] = run_nodes([node.pk])
    assert ran == ["t-info", "t-users"]
    assert result.failed and result.completed == 2
    assert SyncRun.objects.filter(node=node).count() == 3  # one session, one run each
    waiting = {r.action.name: r for r in engine.desync_holds(node)}
    assert set(waiting) == {"t-soft", "t-files"}
    assert waiting["t-soft"].hold == engine.Hold.BACKOFF
    files = waiting["t-files"]
    assert files.hold == engine.Hold.NEEDS
    assert files.needed_title == "T-Soft"
    assert "Unable to locate package nope" in files.needed_error
    # The node's work is held back by its first type's retry; the sweep leaves it alone.
    assert engine.why_not_running(node.pk) == engine.Hold.BACKOFF
    assert engine.due_node_ids() == []
    # Users registered again run at once, files still wait.
    register_desync([node], [types[3]])
    assert engine.due_node_ids() == [node.pk]
    run_nodes([node.pk])
    assert ran == ["t-info", "t-users", "t-users"]


def test_a_type_that_needs_nothing_runs_before_a_failing_one_is_retried(make_node, make_type):
    node = make_node()
    ran: list[str] = []

    async def later(ctx):
        ran.append("later")

    first = make_type("t-first", priority=1, run=_no_package)
    second = make_type("t-second", priority=2, run=later, needs=())
    register_desync([node], [first, second])
    run_nodes([node.pk])
    assert ran == ["later"]


def test_a_forced_session_runs_a_failing_type_once(make_node, make_type):
    """``nodesync --force`` ignores the retry's wait, but a type that failed in the session
    is not started again in it (else it would loop)."""
    node = make_node()
    ran: list[str] = []
    types = _four_types(make_type, ran)
    register_desync([node], types)
    [result] = run_nodes([node.pk], ignore_backoff=True)
    assert SyncRun.objects.filter(node=node, action__name="t-soft").count() == 1
    assert result.failed


@pytest.mark.parametrize(
    "needs, message",
    [
        (("t-nowhere",), "needs 't-nowhere', which is not a synchronizer type"),
        (("t-late",), "a type may only need types that run before it"),
    ],
)
def test_a_type_may_only_need_known_types_that_run_before_it(make_type, needs, message):
    from django.core.exceptions import ImproperlyConfigured

    from sync.synchronizers import REGISTRY, check_needs

    make_type("t-late", priority=50)
    make_type("t-early", priority=10)
    registry = dict(REGISTRY)
    early = registry["t-early"]
    registry["t-early"] = type(early)(**{**early.__dict__, "needs": needs})
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(")):
        check_needs(registry)


def test_the_builtin_types_declare_what_they_need():
    """Stored with the types (``update_syncactions``), so the SQL rule reads them."""
    from sync.models import SyncAction

    needs = {
        a.name: (a.needs_before, sorted(a.needs.values_list("name", flat=True)))
        for a in SyncAction.objects.all()
    }
    assert needs["probe"] == (False, [])
    assert needs["nodeinfo"] == (False, [])
    assert needs["software"] == (False, ["nodeinfo"])
    assert needs["files"] == (False, ["software"])
    assert needs["users"] == (False, ["nodeinfo"])
    assert needs["services"] == (False, ["files", "software"])


def test_the_node_page_says_what_each_held_type_waits_for(make_node, make_type, operator):
    from django.urls import reverse

    node = make_node()
    register_desync([node], _four_types(make_type, []))
    run_nodes([node.pk])
    page = operator.get(reverse("nodes:detail", args=[node.pk])).content.decode()
    assert "Waiting for T-Soft (failing: E: Unable to locate package nope" in page

"""The sessions of one event loop record their plain successes together (``sync.engine.batch``):
the same outcome as one run at a time, in a few statements for the whole group."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from nodes.models import Node
from nodes.transports import CommandFailed
from sync.engine import batch, register_desync, run_nodes
from sync.models import Node2Sync, Outcome, RunTally, SyncRun

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, as in a worker


def _fleet(make_node, make_type):
    """Eight nodes and five types: one node where a type fails (its other successes are not
    plain: a type still failing), one where a type is registered again while it runs (the
    group's DELETE finds one row fewer), the rest plain."""
    registered_again: list[int] = []

    async def info(ctx):
        pass

    async def software(ctx):
        if ctx.node.name == "n0":
            raise CommandFailed(["apt-get", "install", "nope"], 100, "E: no package nope")

    async def users(ctx):
        if ctx.node.name == "n7" and not registered_again:
            registered_again.append(1)
            await ctx.db(register_desync, [ctx.node], [types[3]])

    types = [
        make_type("t-info", priority=10, run=info, needs=()),
        make_type("t-soft", priority=20, run=software, needs=("t-info",)),
        make_type("t-files", priority=30, needs=("t-soft",)),
        make_type("t-users", priority=40, node_status="ready", run=users, needs=("t-info",)),
        make_type("t-last", priority=50, node_status="ready", needs=("t-info",)),
    ]
    nodes = [make_node(f"n{i}") for i in range(8)]
    register_desync(nodes, types)
    return nodes


def _snapshot() -> dict:
    """Everything the runs wrote that a page, the API or the next run reads."""
    nodes = {
        n.name: (
            n.status,
            n.shown,
            n.usable,
            n.pending_count,
            n.condition,
            n.last_error,
            n.current_action_id,
            n.last_sync_at is not None,
            n.last_contact_at is not None,
            n.lease_owner,
            [(c["type"], c.get("action"), c.get("message")) for c in n.conditions],
        )
        for n in Node.objects.all()
    }
    rows = sorted(
        Node2Sync.objects.values_list(
            "node__name", "action__name", "state", "attempts", "last_error"
        )
    )
    runs = sorted(
        SyncRun.objects.values_list(
            "node__name", "action__name", "outcome", "log", "current_command"
        )
    )
    unfinished = SyncRun.objects.filter(finished_at__isnull=True).count()
    tally = sorted(RunTally.objects.values_list("action", "outcome", "runs"))
    return {"nodes": nodes, "rows": rows, "runs": runs, "unfinished": unfinished, "tally": tally}


def _run(make_node, make_type, monkeypatch, together: bool) -> tuple[dict, float]:
    if not together:
        monkeypatch.setattr(batch, "plain", lambda call: False)
    nodes = _fleet(make_node, make_type)
    with CaptureQueriesContext(connection) as queries:
        results = run_nodes([n.pk for n in nodes])
    assert sum(r.completed for r in results) == 8 * 5 - 2 + 1  # n0: two never ran; n7: once more
    return _snapshot(), len(queries) / SyncRun.objects.count()


@pytest.fixture
def one_by_one(make_node, make_type, monkeypatch, django_db_blocker):
    """The outcome of the fleet's runs written one at a time, then the tables emptied."""
    snapshot, per_run = _run(make_node, make_type, monkeypatch, together=False)
    monkeypatch.undo()
    for model in (SyncRun, Node2Sync, RunTally, Node):
        model.objects.all().delete()
    return snapshot, per_run


def test_plain_successes_written_together_leave_what_one_at_a_time_leaves(
    one_by_one, make_node, make_type, monkeypatch
):
    expected, per_run_alone = one_by_one
    got, per_run = _run(make_node, make_type, monkeypatch, together=True)
    assert got == expected
    # The fleet as the pages show it: n0 failing on software, files waiting for it, the rest
    # Ready with nothing left.
    assert got["nodes"]["n0"][4] == "failing"
    assert [r[:3] for r in got["rows"]] == [
        ("n0", "t-files", "pending"),
        ("n0", "t-soft", "failed"),
    ]
    assert {got["nodes"][f"n{i}"][:4] for i in range(1, 8)} == {("ready", "ready", True, 0)}
    assert got["unfinished"] == 0
    # Every run counted once for the metrics, though the group that met the row registered
    # again was rolled back and written again one by one.
    assert sum(runs for _, _, runs in got["tally"]) == len(got["runs"])
    assert per_run < per_run_alone * 0.75, (per_run, per_run_alone)  # 6.1 and 11.4 measured


def test_a_group_of_plain_successes_costs_a_few_statements(make_node, make_type):
    """Ten nodes x six types, all plain: about two statements a run (nine one at a time)."""
    actions = [make_type(f"t-{i}", priority=i) for i in range(6)]
    nodes = [make_node(f"n{i}") for i in range(10)]
    register_desync(nodes, actions)
    with CaptureQueriesContext(connection) as queries:
        results = run_nodes([n.pk for n in nodes])
    assert [r.completed for r in results] == [6] * 10
    assert SyncRun.objects.filter(outcome=Outcome.SUCCESS, finished_at__isnull=False).count() == 60
    assert not Node2Sync.objects.exists()
    assert set(Node.objects.values_list("status", "shown", "usable", "current_action_id")) == {
        ("ready", "ready", True, None)
    }
    assert len(queries) / 60 < 3.5, len(queries) / 60


def _call(fn, *args, **kwargs):
    import functools

    return functools.partial(fn, *args, **kwargs)


def test_a_group_claims_free_nodes_together_and_leaves_a_lapsed_lease_to_recovery(
    make_node, make_type
):
    """Claims written together: nodes nobody held are taken; a node another worker holds is
    not; a node whose worker died (its lease lapsed, a run left running) is recovered by the
    one-at-a-time path, which closes the dead run."""
    from datetime import timedelta

    from django.utils import timezone

    from sync.engine import claim_node, start_next_run
    from sync.engine.runs import in_one_transaction

    action = make_type("t-a")
    a, b, held, lapsed = (make_node(name) for name in ("a", "b", "held", "lapsed"))
    register_desync([a, b, held, lapsed], [action])
    assert claim_node(held.pk, "other")
    assert claim_node(lapsed.pk, "dead") and start_next_run(lapsed.pk, "dead")
    Node.objects.filter(pk=lapsed.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    with CaptureQueriesContext(connection) as queries:
        got = in_one_transaction(
            [
                (n.pk, _call(claim_node, n.pk, f"w-{n.name}", force=False))
                for n in (a, b, held, lapsed)
            ]
        )
    assert got == [True, True, False, True]
    owners = dict(Node.objects.values_list("name", "lease_owner"))
    assert owners == {"a": "w-a", "b": "w-b", "held": "other", "lapsed": "w-lapsed"}
    dead = SyncRun.objects.get(node=lapsed)
    assert dead.outcome == Outcome.LOST and "dead" in dead.log
    # a and b taken in one statement (without the group: one each).
    updates = [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]
    assert [sql for sql in updates if "w-a" in sql and "w-b" in sql], updates


def test_a_group_releases_only_the_leases_its_workers_still_hold(make_node):
    from sync.engine import claim_node, release_node
    from sync.engine.runs import in_one_transaction

    a, b, c = (make_node(name) for name in ("a", "b", "c"))
    for node in (a, b, c):
        assert claim_node(node.pk, f"w-{node.name}")
    assert claim_node(c.pk, "admin", force=True)  # taken over meanwhile
    in_one_transaction([(n.pk, _call(release_node, n.pk, f"w-{n.name}")) for n in (a, b, c)])
    assert dict(Node.objects.values_list("name", "lease_owner")) == {"a": "", "b": "", "c": "admin"}


def test_statements_built_once_follow_a_changed_lease_length(make_node, settings):
    """The lease's length is built into the batched statements: one built under another
    setting is not reused."""
    from django.utils import timezone

    from sync.engine import claim_node
    from sync.engine.runs import in_one_transaction

    nodes = [make_node(f"n{i}") for i in range(2)]
    calls = [(n.pk, _call(claim_node, n.pk, f"w{n.pk}", force=False)) for n in nodes]
    assert in_one_transaction(calls) == [True, True]
    Node.objects.update(lease_owner="", lease_until=None)
    settings.SYNC = {**settings.SYNC, "lease_seconds": 3600}
    assert in_one_transaction(calls) == [True, True]
    for until in Node.objects.values_list("lease_until", flat=True):
        assert (until - timezone.now()).total_seconds() > 3000

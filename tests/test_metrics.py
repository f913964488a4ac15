"""``/metrics`` for Prometheus: what it says of the fleet, its work, its runs and its clusters,
who may read it, and that it costs the same few queries at 10 and at 10,000 nodes."""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from api.auth import GUESS_LIMIT
from nodes.access import OPERATORS, READ_ONLY, ensure_groups
from nodes.choices import NodeCondition, NodeShown, NodeStatus, Transport
from nodes.models import Node
from nodes.transports import TransportError
from nodes.truth import node_truth
from sync import actions, heartbeat
from sync.actor import Actor
from sync.engine import register_desync, run_nodes
from sync.engine.tally import count_runs, counted_together, fold_quiet_tallies, this_process
from sync.models import DesyncState, Node2Sync, RunTally, SyncAction
from tests.conftest import ROOT, process_env, run_manage

pytestmark = pytest.mark.django_db

PROMETHEUS_ADDRESS = "192.0.2.9"  # the Prometheus server, as the panel sees it


@pytest.fixture(autouse=True)
def prometheus_allowed(settings):
    settings.PANEL_METRICS_ALLOW = [ipaddress.ip_network("192.0.2.0/28")]


def scrape(client: Client | None = None, **headers) -> dict[tuple[str, tuple], float]:
    """The samples of one scrape from the allowed address, parsed by prometheus-client's own
    text parser: {(sample name, sorted labels): value}."""
    answer = (client or Client()).get("/metrics", REMOTE_ADDR=PROMETHEUS_ADDRESS, headers=headers)
    assert answer.status_code == 200, answer.content
    return samples(answer.content.decode())


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("panel_"), family.name
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        v
        for (n, have), v in found.items()
        if n == name and set(labels.items()) <= set(dict(have).items())
    )


async def _unreachable(ctx) -> None:
    raise TransportError("unreachable: cannot connect to 192.0.2.77:22: Connection refused")


async def _fails(ctx) -> None:
    raise ValueError("E: Unable to locate package nope")


# --- what it says ---------------------------------------------------------------------------


def test_it_gives_the_fleet_its_work_runs_and_clusters(make_node, make_type, settings):
    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 0}
    ok, down, idle = make_node("ok"), make_node("down"), make_node("idle")
    base = make_type("t-base", priority=1)
    after = make_type("t-after", priority=2)
    probe = make_type("t-reach", priority=3, run=_unreachable, node_status=NodeStatus.READY)
    register_desync([ok], [base, after])
    register_desync([down], [probe])
    run_nodes([ok.pk, down.pk])
    register_desync([idle], [base])  # due now, not run
    heartbeat.beat(name="panel-x", host="m1")

    found = scrape()
    assert total(found, "panel_nodes") == 3
    assert value(found, "panel_nodes_usable") == 1  # ok; idle is synchronizing, down unreachable
    assert value(found, "panel_nodes_condition", condition="unreachable") == 1
    assert value(found, "panel_nodes_condition", condition="maintenance") == 0
    since = value(
        found, "panel_node_condition_since_timestamp_seconds", node="down", condition="unreachable"
    )
    assert abs(since - time.time()) < 120
    assert value(found, "panel_runs_total", type="t-base", outcome="success") == 1
    assert value(found, "panel_runs_total", type="t-after", outcome="success") == 1
    assert value(found, "panel_runs_total", type="t-reach", outcome="failed") == 1
    assert value(found, "panel_run_duration_seconds_count", type="t-base") == 1
    assert value(found, "panel_run_duration_seconds_bucket", type="t-base", le="+Inf") == 1
    assert value(found, "panel_run_duration_seconds_bucket", type="t-base", le="0.5") == 1
    assert value(found, "panel_desyncs", type="t-base", state="pending", hold="due") == 1
    assert value(found, "panel_desyncs", type="t-reach", state="failed", hold="unreachable") == 1
    assert 0 <= value(found, "panel_desync_oldest_due_seconds") < 60
    age = value(found, "panel_cluster_heartbeat_age_seconds", cluster="panel-x", host="m1")
    assert 0 <= age < 60
    assert value(found, "panel_cluster_late_seconds") == settings.PANEL_CLUSTER_LATE_SECONDS


def test_held_and_waiting_work_is_counted_by_why_it_waits(make_node, make_type):
    """The engine's one rule says why: a failed type waits for its retry, the type that needs
    it waits for it, a cancelled one is held, maintenance holds everything."""
    failing, cancelled, resting = make_node("failing"), make_node("cancelled"), make_node("rest")
    software = make_type("t-software", priority=1, run=_fails, needs=())
    files = make_type("t-files", priority=2, needs=("t-software",))
    register_desync([failing], [software, files])
    run_nodes([failing.pk])
    register_desync([cancelled, resting], [files])
    Node2Sync.objects.filter(node=cancelled).update(state=DesyncState.HELD)
    actions.set_maintenance(Actor.command("test"), [resting], True)

    found = scrape()
    assert value(found, "panel_desyncs", type="t-software", state="failed", hold="backoff") == 1
    assert value(found, "panel_desyncs", type="t-files", state="pending", hold="needs") == 1
    assert value(found, "panel_desyncs", type="t-files", state="held", hold="cancelled") == 1
    assert value(found, "panel_desyncs", type="t-files", state="pending", hold="maintenance") == 1
    assert value(found, "panel_desync_oldest_due_seconds") == 0  # nothing may start now


def test_it_moves_when_a_node_changes(make_node, make_type):
    node = make_node("web1")
    make_node("web2")
    before = scrape()
    assert value(before, "panel_nodes_usable") == 2

    actions.set_maintenance(Actor.command("test"), [node], True)
    after = scrape()
    assert value(after, "panel_nodes_usable") == 1
    assert value(after, "panel_nodes_condition", condition="maintenance") == 1
    assert value(after, "panel_nodes", status="ready", shown="maintenance") == 1

    register_desync([Node.objects.get(name="web2")], [make_type("t-a")])
    later = scrape()
    assert value(later, "panel_nodes", status="synchronizing", shown="synchronizing") == 1
    assert value(later, "panel_desyncs", type="t-a", state="pending", hold="due") == 1


def test_prometheus_asking_for_openmetrics_gets_it(make_node):
    """Prometheus' scrapes ask for OpenMetrics first; the answer parses with its parser."""
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    make_node("n1")
    count_runs([("t-a", "success", 1.0)])
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    answer = Client().get("/metrics", REMOTE_ADDR=PROMETHEUS_ADDRESS, headers={"Accept": accept})
    assert answer["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(answer.content.decode())}
    assert families["panel_runs"].type == "counter"
    assert families["panel_run_duration_seconds"].type == "histogram"
    assert families["panel_nodes_usable"].samples[0].value == 1


def test_every_status_shown_word_and_condition_reads_zero_rather_than_missing(db):
    """An empty fleet still has every series, so "no node is Ready" is a 0, not a gap."""
    found = scrape()
    for status in NodeStatus:
        for shown in NodeShown:
            key = ("panel_nodes", (("shown", shown.value), ("status", status.value)))
            assert found[key] == 0
    for condition in NodeCondition:
        assert found[("panel_nodes_condition", (("condition", condition.value),))] == 0
    assert found[("panel_nodes_usable", ())] == 0
    assert found[("panel_desync_oldest_due_seconds", ())] == 0


# --- runs counted across processes ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_runs_made_by_another_process_are_counted(make_node):
    """A run made by ``nodesync`` in its own process shows in this process's scrape: the
    counts live in the database, per process, never in one process's memory."""
    node = make_node("local1", transport=Transport.LOCAL)
    probe = SyncAction.objects.get(name="probe")
    register_desync([node], [probe])
    before = value(scrape(), "panel_runs_total", type="probe", outcome="success")

    done = run_manage("nodesync", "--node", "local1", "--action", "probe", env=process_env())
    assert done.returncode == 0, done.stdout + done.stderr

    found = scrape()
    assert value(found, "panel_runs_total", type="probe", outcome="success") == before + 1
    assert value(found, "panel_run_duration_seconds_count", type="probe") == before + 1
    workers = set(RunTally.objects.values_list("worker", flat=True))
    assert workers and this_process() not in workers


def test_folding_a_quiet_process_keeps_every_count(db):
    count_runs([("t-a", "success", 0.2), ("t-a", "success", 3.0), ("t-a", "failed", 700.0)])
    before = scrape()
    RunTally.objects.update(updated_at=timezone.now() - timedelta(hours=2))
    assert fold_quiet_tallies() == 3
    assert set(RunTally.objects.values_list("worker", flat=True)) == {""}
    count_runs([("t-a", "success", 0.1)])  # the process goes on, in a row of its own
    after = scrape()
    assert value(after, "panel_runs_total", type="t-a", outcome="success") == 3
    assert value(before, "panel_runs_total", type="t-a", outcome="success") == 2
    assert value(after, "panel_runs_total", type="t-a", outcome="failed") == 1
    assert value(after, "panel_run_duration_seconds_bucket", type="t-a", le="5.0") == 3
    assert value(after, "panel_run_duration_seconds_bucket", type="t-a", le="600.0") == 3
    assert value(after, "panel_run_duration_seconds_bucket", type="t-a", le="1800.0") == 4
    assert value(after, "panel_run_duration_seconds_sum", type="t-a") == pytest.approx(703.3)


def test_runs_committed_together_are_counted_together(make_node, make_type):
    """The sessions of one event loop commit their runs in shared transactions: their counts
    cost one UPDATE per type, outcome and bucket, not one per run; a group that rolls back
    counts nothing (its runs are written again, and counted, one by one)."""
    count_runs([("t-a", "success", 0.1)])  # the row exists: an UPDATE from now on
    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic(), counted_together():
            count_runs([("t-a", "success", 0.2)])
            count_runs([("t-a", "success", 0.3)])
            count_runs([("t-a", "success", 0.1)])
    writes = [q["sql"] for q in queries if "runtally" in q["sql"]]
    assert len(writes) == 1 and writes[0].startswith("UPDATE")
    with pytest.raises(RuntimeError), transaction.atomic(), counted_together():
        count_runs([("t-a", "success", 0.2)])
        raise RuntimeError("a write of the group broke")
    assert value(scrape(), "panel_runs_total", type="t-a", outcome="success") == 4

    nodes = [make_node(f"n{i}") for i in range(5)]
    register_desync(nodes, [make_type("t-b")])
    run_nodes([n.pk for n in nodes])
    assert value(scrape(), "panel_runs_total", type="t-b", outcome="success") == 5


def test_skipped_runs_count_but_take_no_time(make_node, make_type):
    node = make_node("n1")
    register_desync([node], [make_type("t-a")])
    actions.skip_work(Actor.command("test"), node, None)
    found = scrape()
    assert value(found, "panel_runs_total", type="t-a", outcome="skipped") == 1
    assert value(found, "panel_run_duration_seconds_count", type="t-a") == 0


# --- a fixed number of queries ---------------------------------------------------------------


def _fleet(count: int, actions_: list[SyncAction], start: int = 0) -> None:
    """``count`` nodes in bulk, a third of them unreachable, each with a desynchronization of
    every type in ``actions_`` (written by one INSERT ... SELECT: 20,000 model objects would
    cost the test seconds of Python)."""
    now = timezone.now()
    since = now.isoformat()
    down = {
        "condition": "unreachable",
        "conditions": [{"type": "unreachable", "since": since, "message": "down"}],
    }
    # The stored truth by its one rule (bulk_create calls no save()).
    up_truth = node_truth(NodeStatus.SYNCHRONIZING, "", False, True)
    down_truth = node_truth(NodeStatus.SYNCHRONIZING, "unreachable", False, True)
    Node.objects.bulk_create(
        Node(
            name=f"bulk{i}",
            uuid=uuid.uuid4(),
            transport=Transport.LOCAL,
            host="localhost",
            status=NodeStatus.SYNCHRONIZING,
            shown=truth.shown,
            usable=truth.usable,
            **fields,
        )
        for i in range(start, start + count)
        for fields in [down if i % 3 == 0 else {}]
        for truth in [up_truth if not fields else down_truth]
    )
    fields = [f for f in Node2Sync._meta.concrete_fields if not f.primary_key]
    for action in actions_:
        values = {"node": None, "action": action.pk, "registered_at": now, "next_attempt_at": now}
        columns, selected, params = [], [], []
        for field in fields:
            columns.append(connection.ops.quote_name(field.column))
            if field.name == "node":
                selected.append("node.id")
                continue
            raw = values[field.name] if field.name in values else field.get_default()
            selected.append("%s")
            params.append(field.get_db_prep_save(raw, connection))
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO node2sync ({', '.join(columns)}) SELECT {', '.join(selected)} "
                "FROM node WHERE node.id NOT IN "
                "(SELECT node FROM node2sync WHERE syncactions = %s)",
                [*params, action.pk],
            )


def test_it_reads_the_same_number_of_queries_at_10_and_10000_nodes(make_type):
    types = [make_type("t-a", priority=1), make_type("t-b", priority=2)]
    count_runs([("t-a", "success", 1.0)])
    heartbeat.beat(name="panel-x", host="m1")
    _fleet(10, types)
    with CaptureQueriesContext(connection) as small:
        scrape()
    _fleet(9990, types, start=10)
    started = time.monotonic()
    with CaptureQueriesContext(connection) as large:
        found = scrape()
    seconds = time.monotonic() - started
    assert total(found, "panel_nodes") == 10000
    assert value(found, "panel_nodes_condition", condition="unreachable") == 3334
    assert value(found, "panel_nodes", status="synchronizing", shown="unreachable") == 3334
    assert value(found, "panel_nodes_usable") == 0
    assert total(found, "panel_desyncs") == 20000
    assert len(large.captured_queries) == len(small.captured_queries) == 6
    print(f"/metrics at 10,000 nodes: {len(large)} queries, {seconds:.2f} s")


# --- who may read it ------------------------------------------------------------------------


def make_token(django_user_model, group: str | None, *options: str) -> str:
    from io import StringIO

    ensure_groups()
    user = django_user_model.objects.create_user(f"u{uuid.uuid4().hex[:6]}")
    if group:
        user.groups.add(Group.objects.get(name=group))
    out = StringIO()
    call_command("apitoken", user.username, *options, stdout=out)
    return out.getvalue().strip()


def test_others_are_refused_with_403(db, client, admin_user):
    client.force_login(admin_user)  # a login session opens nothing here
    answer = client.get("/metrics", REMOTE_ADDR="198.51.100.7")
    assert answer.status_code == 403
    assert b"PANEL_METRICS_ALLOW" in answer.content
    assert b"panel_" not in answer.content


def test_an_allowed_address_counts_only_as_the_proxies_resolve_it(db, settings):
    settings.PANEL_TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.1/32")]
    client = Client()
    through_proxy = client.get(
        "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=PROMETHEUS_ADDRESS
    )
    assert through_proxy.status_code == 200
    assert through_proxy["Content-Type"].startswith("text/plain")
    # A client that writes the header itself is still its own address.
    forged = client.get(
        "/metrics", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR=PROMETHEUS_ADDRESS
    )
    assert forged.status_code == 403
    # The proxy itself is not Prometheus.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_a_token_opens_it_from_anywhere(django_user_model):
    for group, options in ((READ_ONLY, ("--read-only",)), (OPERATORS, ())):
        token = make_token(django_user_model, group, *options)
        answer = Client().get(
            "/metrics", REMOTE_ADDR="198.51.100.7", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200, group
        samples(answer.content.decode())


def test_a_token_whose_user_may_not_view_nodes_is_refused(django_user_model):
    token = make_token(django_user_model, None)
    answer = Client().get(
        "/metrics", REMOTE_ADDR="198.51.100.7", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 403


def test_wrong_tokens_are_refused_and_guessing_is_throttled(db):
    client = Client()
    wrong = {"Authorization": "Bearer panel_abcdefgh_" + "x" * 43}
    for _ in range(GUESS_LIMIT):
        answer = client.get("/metrics", REMOTE_ADDR="198.51.100.8", headers=wrong)
        assert answer.status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="198.51.100.8", headers=wrong).status_code == 429
    # Another address is not punished for it.
    assert client.get("/metrics", REMOTE_ADDR="198.51.100.9", headers=wrong).status_code == 403


def test_it_is_read_only(db):
    answer = Client().post("/metrics", REMOTE_ADDR=PROMETHEUS_ADDRESS)
    assert answer.status_code == 405


# --- the example alert rules read what /metrics gives ----------------------------------------


def test_the_alert_rules_name_only_metrics_the_panel_gives(make_node, settings):
    make_node(
        "down",
        condition="unreachable",
        conditions=[
            {"type": "unreachable", "since": timezone.now().isoformat(), "message": "down"}
        ],
    )
    heartbeat.beat()
    given = {name for name, _ in scrape()}
    rules = (ROOT / "deploy" / "prometheus" / "cluster-panel-alerts.yml").read_text()
    named = set(re.findall(r"\bpanel_[a-z_]+", rules))
    assert named and named <= given, named - given

"""The admin's commands: what they print, what they change, and their exit codes."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from nodes.choices import NodeStatus, Transport
from nodes.models import Node
from nodes.transports import TransportError
from sync.engine import claim_node, register_desync
from sync.models import Node2Sync, Outcome, SyncAction, SyncRun
from sync.synchronizers import REGISTRY


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def exit_code(*args: str) -> int:
    try:
        run(*args)
    except CommandError as e:
        return e.returncode
    return 0


pytestmark = pytest.mark.django_db


# --- addnode ----------------------------------------------------------------------------------


def test_it_adds_a_local_node_with_every_type_registered():
    out = run("addnode", "n1", "--local")
    node = Node.objects.get(name="n1")
    assert node.transport == Transport.LOCAL
    assert "Added local node n1" in out
    registered = set(Node2Sync.objects.filter(node=node).values_list("action__name", flat=True))
    assert registered == set(REGISTRY) == set(SyncAction.objects.values_list("name", flat=True))


def test_it_answers_the_vendors_query_with_one_row_per_type():
    run("addnode", "n1", "--local")
    with connection.cursor() as cursor:
        cursor.execute(
            "select * from node2sync join syncactions on node2sync.syncactions=syncactions.id;"
        )
        rows = cursor.fetchall()
    assert len(rows) == SyncAction.objects.count() > 0


def test_it_refuses_a_duplicate_node_name():
    run("addnode", "n1", "--local")
    with pytest.raises(CommandError, match="already exists") as e:
        run("addnode", "n1", "--local")
    assert e.value.returncode == 2


def test_it_refuses_a_bad_node_name():
    assert exit_code("addnode", "Bad Name!", "--local") == 2
    assert not Node.objects.exists()


# --- nodesync ---------------------------------------------------------------------------------


def test_it_synchronizes_a_new_local_node_to_ready():
    run("addnode", "n1", "--local")
    out = run("nodesync")
    node = Node.objects.get(name="n1")
    assert node.status == NodeStatus.READY
    assert not Node2Sync.objects.exists()
    assert SyncRun.objects.filter(outcome=Outcome.SUCCESS).count() == len(REGISTRY)
    assert node.facts["hostname"] and node.facts["kernel"]
    assert "n1: nodeinfo ... ok" in out
    assert "0 node(s) failed" in out


def test_it_exits_1_when_a_synchronizer_fails(make_node, make_type):
    async def fail(ctx):
        raise TransportError("host unreachable")

    ok, bad = make_node("ok"), make_node("bad")
    register_desync([ok], [make_type("t-ok")])
    register_desync([bad], [make_type("t-fail", run=fail)])
    with pytest.raises(CommandError, match="1 node\\(s\\) failed") as e:
        run("nodesync")
    assert e.value.returncode == 1
    assert Node.objects.get(name="ok").status == NodeStatus.READY


def test_it_runs_only_the_selected_nodes_and_types(make_node, make_type):
    a, b = make_node("a"), make_node("b")
    t1, t2 = make_type("t-one", priority=1), make_type("t-two", priority=2)
    register_desync([a, b], [t1, t2])
    run("nodesync", "--node", "a", "--action", "t-two")
    left = set(Node2Sync.objects.values_list("node__name", "action__name"))
    assert left == {("a", "t-one"), ("b", "t-one"), ("b", "t-two")}


def test_it_takes_over_a_hanging_run_with_force(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-a")])
    claim_node(node.pk, "hanging-worker")
    out = run("nodesync", "--node", node.name, "--force")
    assert "1 run(s) completed" in out
    assert not Node2Sync.objects.exists()
    assert Node.objects.get(pk=node.pk).lease_owner == ""


def test_it_says_when_there_is_nothing_to_do(make_node):
    make_node()
    assert "Nothing to synchronize" in run("nodesync")


def test_it_exits_2_on_an_unknown_node_or_type(make_node):
    make_node()
    assert exit_code("nodesync", "--node", "nosuch") == 2
    assert exit_code("nodesync", "--action", "nosuch") == 2


@pytest.mark.django_db(transaction=True)
def test_it_prints_one_line_for_an_unknown_node_without_a_traceback(manage):
    result = manage("nodesync", "--node", "nosuch")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown node: nosuch" in result.stderr
    assert "Traceback" not in result.stderr


# --- desync -----------------------------------------------------------------------------------


def test_it_registers_every_type_again(make_node, make_type):
    node = make_node()
    make_type("t-a")
    out = run("desync", node.name)
    assert Node2Sync.objects.filter(node=node).count() == SyncAction.objects.count()
    assert "Registered" in out
    assert Node.objects.get(pk=node.pk).status == NodeStatus.SYNCHRONIZING


def test_it_registers_one_type_on_all_nodes(make_node, make_type):
    make_node("a"), make_node("b")
    make_type("t-a")
    run("desync", "--all", "--action", "t-a")
    assert set(Node2Sync.objects.values_list("node__name", "action__name")) == {
        ("a", "t-a"),
        ("b", "t-a"),
    }


def test_it_refuses_unknown_names_and_missing_nodes_in_desync(make_node):
    make_node()
    assert exit_code("desync", "nosuch") == 2
    assert exit_code("desync", "n1", "--action", "nosuch") == 2
    assert exit_code("desync") == 2
    assert not Node2Sync.objects.exists()


# --- nodes ------------------------------------------------------------------------------------


def test_it_lists_nodes_as_json(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-a")])
    Node.objects.filter(pk=node.pk).update(last_error="T-A: boom")
    [row] = json.loads(run("nodes", "--json"))
    assert row == {
        "name": "n1",
        "address": "local",
        "status": "synchronizing",
        "shown": "synchronizing",
        "processing": False,
        "pending": 1,
        "last_error": "T-A: boom",
        "conditions": [],
        "usable": False,
    }


def test_it_lists_nodes_as_a_table(make_node):
    make_node()
    out = run("nodes")
    assert "NAME" in out and "n1" in out and "ready" in out


def test_it_skips_a_node_in_maintenance_unless_forced(make_node, make_type):
    node = make_node(maintenance=True)
    register_desync([node], [make_type("t-a")])
    assert "in maintenance, skipped" in run("nodesync")
    assert Node2Sync.objects.filter(node=node).exists()
    run("nodesync", "--force")
    assert not Node2Sync.objects.filter(node=node).exists()

"""Conditions beside the status: a broken node never reads as fine, and the status keeps its
meaning. Errors are short, start with the useful line, and name no Python class."""

from __future__ import annotations

import json
import logging

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from nodes.choices import NodeCondition, NodeStatus
from nodes.models import Node
from nodes.transports import CommandFailed, TransportError
from nodes.transports.ssh import HostKeyChanged
from sync.engine import check_health, register_desync, run_nodes, set_maintenance
from sync.models import Node2Sync, SyncRun

pytestmark = pytest.mark.django_db

APT_OUTPUT = (
    "Reading package lists...\nBuilding dependency tree...\nReading state information...\n"
    "E: Unable to locate package nc-demo\n"
)


def conditions_of(node: Node) -> list[str]:
    node.refresh_from_db()
    return [c["type"] for c in node.conditions]


def failing_type(make_type, error: BaseException, name: str = "t-fail", **kwargs):
    async def fail(ctx) -> None:
        ctx.log("trying")
        raise error

    return make_type(name, run=fail, **kwargs)


def test_it_says_a_ready_node_is_failing_and_why(make_node, make_type):
    node = make_node()
    action = failing_type(
        make_type,
        CommandFailed(["systemctl", "reload", "--", "nc-demo"], 5, "Unit nc-demo not found.\n"),
        name="units",
        node_status=NodeStatus.READY,
    )
    register_desync([node], [action])
    run_nodes([node.pk])

    node.refresh_from_db()
    assert node.status == NodeStatus.READY  # the status keeps its meaning
    assert node.condition == NodeCondition.FAILING
    assert node.condition_message.startswith("Units failing: Unit nc-demo not found.")
    assert node.usable  # failing does not make a node unusable, only unreachable and co.
    cell = node_cell(node)
    assert "Ready" in cell and "Units failing: Unit nc-demo not found." in cell


def node_cell(node: Node) -> str:
    from django.template.loader import render_to_string

    return render_to_string("nodes/_status_cell.html", {"node": node})


def test_it_shows_apts_error_line_first_and_keeps_the_whole_output_in_the_log(make_node, make_type):
    node = make_node()
    argv = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "nc-demo"]
    action = failing_type(make_type, CommandFailed(argv, 100, APT_OUTPUT * 50), name="packages")
    register_desync([node], [action])
    run_nodes([node.pk])

    row = Node2Sync.objects.get()
    assert row.last_error == "E: Unable to locate package nc-demo (`apt-get` exited with 100)"
    node.refresh_from_db()
    assert (
        node.last_error
        == "Packages: E: Unable to locate package nc-demo (`apt-get` exited with 100)"
    )
    run = SyncRun.objects.get()
    assert "Reading package lists..." in run.log  # the whole text, capped, in the run's log
    assert len(run.log) <= 20_100


def test_it_caps_a_hostile_error_and_strips_its_control_characters(make_node, make_type):
    node = make_node()
    hostile = "\x1b[2J\x00boom " + "x" * 21_000_000
    register_desync([node], [failing_type(make_type, ValueError(hostile))])
    run_nodes([node.pk])

    node.refresh_from_db()
    assert len(node.last_error) < 400
    assert len(node.conditions[0]["message"]) < 400
    assert "\x1b" not in node.last_error and "\x00" not in node.last_error
    assert len(SyncRun.objects.get().log) <= 20_100


def test_it_logs_an_expected_failure_as_one_line_without_a_traceback(make_node, make_type, caplog):
    node = make_node()
    register_desync([node], [failing_type(make_type, ValueError("service nc-demo: unknown"))])
    with caplog.at_level(logging.INFO, logger="sync"):
        run_nodes([node.pk])

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "ValueError" not in errors[0].getMessage()
    assert Node2Sync.objects.get().last_error == "service nc-demo: unknown"


def test_it_clears_failing_once_the_type_succeeds(make_node, make_type, settings):
    node = make_node()
    outcome = {"fail": True}

    async def flaky(ctx) -> None:
        if outcome["fail"]:
            raise ValueError("not yet")

    action = make_type("t-flaky", run=flaky)
    register_desync([node], [action])
    run_nodes([node.pk])
    assert conditions_of(node) == ["failing"]

    outcome["fail"] = False
    run_nodes([node.pk], ignore_backoff=True)
    assert conditions_of(node) == []


def test_it_calls_a_node_unreachable_only_after_the_grace_period(make_node, make_type, settings):
    node = make_node()
    refused = TransportError("unreachable: cannot connect to 127.0.0.1:24001: Connection refused")
    action = failing_type(make_type, refused)
    register_desync([node], [action])

    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 3600}
    run_nodes([node.pk])
    assert conditions_of(node) == []  # one failed connection is not an outage
    assert node.contact_failed_since is not None

    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 0}
    run_nodes([node.pk], ignore_backoff=True)
    assert conditions_of(node) == ["unreachable"]
    assert "Connection refused" in node.conditions[0]["message"]
    assert not node.usable


def test_it_clears_unreachable_when_the_node_answers_again(make_node, make_type, settings):
    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 0}
    node = make_node()
    state = {"down": True}

    async def connect(ctx) -> None:
        if state["down"]:
            raise TransportError("unreachable: connecting to 10.0.0.9:22 timed out after 15 s")

    action = make_type("t-probe", run=connect, node_status=NodeStatus.READY)
    register_desync([node], [action])
    run_nodes([node.pk])
    assert conditions_of(node) == ["unreachable"]

    state["down"] = False
    register_desync([node], [action])
    run_nodes([node.pk])
    assert conditions_of(node) == []
    assert node.usable and node.contact_failed_since is None and node.last_contact_at


def test_it_says_the_host_key_changed_and_that_it_blocks_use(make_node, make_type):
    node = make_node()
    register_desync([node], [failing_type(make_type, HostKeyChanged("host key changed: ..."))])
    run_nodes([node.pk])

    assert conditions_of(node) == ["host-key-changed"]
    assert not node.usable


def test_it_shows_the_most_severe_condition_first(make_node, make_type, settings):
    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 0}
    node = make_node()
    register_desync([node], [failing_type(make_type, ValueError("broken"))])
    run_nodes([node.pk])
    set_maintenance([node], True)
    node.refresh_from_db()
    assert [c["type"] for c in node.conditions] == ["failing", "maintenance"]
    assert node.condition == "failing" and not node.usable

    set_maintenance([node], False)
    assert conditions_of(node) == ["failing"]


def test_it_marks_work_waiting_past_the_limit_as_stuck_and_clears_it(
    make_node, make_type, settings
):
    settings.SYNC = {**settings.SYNC, "stuck_seconds": 0, "probe_seconds": 3600}
    # Heard from and its facts fresh: neither a probe nor a facts refresh is due.
    node = make_node(last_contact_at=timezone.now(), facts_at=timezone.now())
    action = make_type("t-wait")
    register_desync([node], [action])
    Node2Sync.objects.update(next_attempt_at="2999-01-01 00:00:00+00:00")  # nothing runs it

    check_health()
    assert conditions_of(node) == ["stuck"]
    assert "T-Wait is pending" in node.conditions[0]["message"]

    Node2Sync.objects.all().delete()
    check_health()
    assert conditions_of(node) == []


def test_it_gives_conditions_and_usable_in_nodes_json(make_node, make_type, capsys):
    node = make_node()
    register_desync([node], [failing_type(make_type, ValueError("no such unit"))])
    run_nodes([node.pk])

    call_command("nodes", "--json")
    [row] = json.loads(capsys.readouterr().out)
    [condition] = row["conditions"]
    assert condition["type"] == "failing"
    assert condition["message"] == "T-Fail failing: no such unit"
    assert condition["since"]
    assert row["usable"] is False  # its type's node status keeps it Synchronizing


def test_it_counts_and_filters_nodes_by_condition(operator, make_node, make_type):
    broken, fine = make_node("broken"), make_node("fine")
    register_desync([broken], [failing_type(make_type, ValueError("no such unit"))])
    run_nodes([broken.pk])
    set_maintenance([fine], True)

    page = operator.get(reverse("nodes:list"), {"condition": "failing"}).content.decode()
    assert "broken" in page and 'data-node="fine"' not in page
    assert 'id="count-condition-failing"' in page
    page = operator.get(reverse("nodes:list"), {"condition": "maintenance"}).content.decode()
    assert 'data-node="fine"' in page and 'data-node="broken"' not in page
    page = operator.get(reverse("nodes:list"), {"usable": "false"}).content.decode()
    assert 'data-node="fine"' in page and 'data-node="broken"' in page


def test_it_shows_the_worst_condition_in_the_nodes_table(make_node, make_type, capsys):
    node = make_node()
    register_desync([node], [failing_type(make_type, ValueError("no such unit"))])
    run_nodes([node.pk])

    call_command("nodes")
    out = capsys.readouterr().out
    assert "CONDITION" in out and "T-Fail failing: no such unit" in out


def test_the_condition_filter_reads_the_condition_not_the_words_of_a_message(operator, make_node):
    # A message is text from the node: one that reads "Stuck" is no stuck condition, while a
    # stuck condition beside a worse one is found.
    worded, stuck = make_node("worded"), make_node("stuck-too")
    Node.objects.filter(pk=worded.pk).update(
        condition="failing",
        conditions=[{"type": "failing", "since": "2026-12-05T06:00:00+00:00", "message": "Stuck"}],
    )
    Node.objects.filter(pk=stuck.pk).update(
        condition="unreachable",
        conditions=[
            {"type": "unreachable", "since": "2026-12-05T06:00:00+00:00", "message": "gone"},
            {"type": "stuck", "since": "2026-12-05T06:00:00+00:00", "message": "no progress"},
        ],
    )
    page = operator.get(reverse("nodes:list"), {"condition": "stuck"}).content.decode()
    assert 'data-node="stuck-too"' in page and 'data-node="worded"' not in page

"""One truth per node: ``shown`` (the word its Status cell leads with) and ``usable`` are
stored columns, written by the engine by one rule (``nodes.truth``), and the filters, counts,
``nodes --json`` and the API read them."""

from __future__ import annotations

import itertools
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from nodes.choices import NodeCondition, NodeShown, NodeStatus
from nodes.models import Node
from nodes.truth import SHOWN_RULE, node_truth, truth_columns
from sync import actions, conditions
from sync.actor import Actor
from sync.clock import read_db_now
from sync.engine import (
    PROBE_TYPE,
    cancel_node,
    claim_node,
    finish_run,
    refresh_stuck,
    register_desync,
    release_node,
    run_nodes,
    set_maintenance,
    start_next_run,
    work_line,
)
from sync.engine.eligibility import GOING_ON, PASSING_HOLDS, goes_on, with_row_hold
from sync.errors import FailureKind
from sync.fleet import NodeFilter, fleet_counts, table_queryset
from sync.models import Node2Sync, Outcome, SyncAction

pytestmark = pytest.mark.django_db

INPUTS = list(
    itertools.product(
        [s.value for s in NodeStatus],
        ["", *(c.value for c in NodeCondition)],
        [False, True],
        [False, True],
    )
)


def test_every_status_is_a_word_of_its_own():
    for status in NodeStatus:
        assert NodeShown(status.value).label == status.label


def test_the_rule_in_sql_says_what_it_says_in_python(make_node):
    """Every combination of the inputs: the SQL made from ``SHOWN_RULE`` and the Python
    evaluation of it agree, word and usability."""
    for i, (status, condition, maintenance, can_run) in enumerate(INPUTS):
        Node.objects.bulk_create(
            [
                Node(
                    name=f"n{i}",
                    transport="local",
                    status=status,
                    condition=condition,
                    maintenance=maintenance,
                    host="run" if can_run else "wait",
                )
            ]
        )
    rows = Node.objects.annotate(**{f"t_{k}": v for k, v in truth_columns(Q(host="run")).items()})
    for node in rows.order_by("pk"):
        truth = node_truth(node.status, node.condition, node.maintenance, node.host == "run")
        assert (node.t_shown, node.t_usable) == (truth.shown.value, truth.usable), node.name


@pytest.mark.parametrize("status, condition, maintenance, can_run", INPUTS)
def test_a_node_is_usable_exactly_when_it_reads_ready(status, condition, maintenance, can_run):
    truth = node_truth(status, condition, maintenance, can_run)
    usable = status == NodeStatus.READY and not maintenance
    usable = usable and condition not in (NodeCondition.HOST_KEY_CHANGED, NodeCondition.UNREACHABLE)
    assert truth.usable == usable == (truth.shown == NodeShown.READY)


def test_the_conditions_that_stop_use_are_the_most_severe():
    """The rule reads only the most severe condition (``Node.condition``): that is enough
    while the two that stop use come first."""
    assert list(NodeCondition)[:2] == [NodeCondition.HOST_KEY_CHANGED, NodeCondition.UNREACHABLE]


def test_the_rule_ends_with_a_word_for_anything():
    assert not SHOWN_RULE[-1].when


def test_maintenance_from_the_engine_makes_a_node_unusable_and_off_again(make_node):
    node = make_node()
    set_maintenance([node], True)
    node.refresh_from_db()
    assert (node.shown, node.usable) == ("maintenance", False)
    set_maintenance([node], False)
    node.refresh_from_db()
    assert (node.shown, node.usable) == ("ready", True)


def test_maintenance_switched_in_the_edit_action_leaves_no_node_usable(make_node, admin_user):
    node = make_node()
    actions.edit_node(Actor.for_user(admin_user), node, [], maintenance=True)
    node.refresh_from_db()
    assert node.maintenance and (node.shown, node.usable) == ("maintenance", False)


def test_maintenance_switched_in_the_admin_leaves_no_node_usable(make_node, admin_client):
    node = make_node()
    response = admin_client.post(
        reverse("admin:nodes_node_changelist"),
        {"action": "maintenance_on", "_selected_action": [node.pk]},
    )
    assert response.status_code == 302
    node.refresh_from_db()
    assert node.maintenance and (node.shown, node.usable) == ("maintenance", False)


def test_a_direct_save_keeps_the_truth_with_the_flag(make_node):
    node = make_node()
    node.maintenance = True
    node.save(update_fields=["maintenance"])
    node.refresh_from_db()
    assert (node.shown, node.usable) == ("maintenance", False)


def test_registered_work_reads_as_its_status_and_the_node_is_not_usable(make_node, make_type):
    node = make_node()
    register_desync([node], [make_type("t-soft", node_status=NodeStatus.INSTALLING)])
    node.refresh_from_db()
    assert (node.status, node.shown, node.usable) == ("installing", "installing", False)


def test_filters_counts_and_the_command_read_the_stored_truth(make_node):
    make_node("fine")
    down = make_node("down")
    Node.objects.filter(pk=down.pk).update(
        conditions=[{"type": "unreachable", "since": "2026-01-01T06:24:00+00:00", "message": "x"}]
    )
    # The columns, not the conditions, decide: written as the engine would.
    Node.objects.filter(pk=down.pk).update(shown="unreachable", usable=False)

    usable = NodeFilter({"usable": "true"}, queryset=Node.objects.all()).qs
    unusable = NodeFilter({"usable": "false"}, queryset=Node.objects.all()).qs
    assert [n.name for n in usable] == ["fine"] and [n.name for n in unusable] == ["down"]
    shown = NodeFilter({"shown": "unreachable"}, queryset=Node.objects.all()).qs
    assert [n.name for n in shown] == ["down"]

    counts = fleet_counts()
    by_shown = {s.value: n for s, n in counts.by_shown}
    assert by_shown["ready"] == 1 and by_shown["unreachable"] == 1 and counts.usable == 1

    out = StringIO()
    call_command("nodes", "--json", stdout=out)
    rows = {r["name"]: r for r in json.loads(out.getvalue())}
    assert rows["down"]["shown"] == "unreachable" and rows["down"]["usable"] is False
    assert rows["fine"]["shown"] == "ready" and rows["fine"]["usable"] is True
    out = StringIO()
    call_command("nodes", stdout=out)
    header, *lines = out.getvalue().splitlines()
    assert header.split()[:4] == ["NAME", "ADDRESS", "SHOWN", "STATUS"]
    assert next(line for line in lines if line.startswith("down")).split()[2:4] == [
        "unreachable",
        "ready",
    ]


# --- The table in docs/ARCHITECTURE.md, made to happen through the engine --------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "ARCHITECTURE.md"
COLUMNS = (
    "maintenance",
    "unreachable",
    "host key changed",
    "failing in backoff",
    "cancelled",
    "waiting for a needed type",
    "running",
    "other work done",
    "shown",
    "usable",
)


def doc_table() -> list[dict[str, str]]:
    """The rows of the table between ``<!-- shown-table -->`` markers, by column name."""
    text = DOC.read_text()
    body = text.split("<!-- shown-table -->")[1].split("<!-- /shown-table -->")[0]
    lines = [line.strip() for line in body.strip().splitlines()]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert tuple(header) == COLUMNS
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


ROWS = doc_table()


def case_id(row: dict[str, str]) -> str:
    held = [k.replace(" ", "-") for k in COLUMNS[:-2] if row[k] == "yes"]
    return "+".join(held) or "nothing"


def make_case(row: dict[str, str], make_node, make_type) -> tuple[Node, dict]:
    """A node in the row's situation, reached through the engine's own functions."""
    on = {k: row[k] == "yes" for k in COLUMNS[:-2]}
    soft = make_type("t-soft", priority=20, node_status=NodeStatus.INSTALLING, needs=())
    files = make_type(
        "t-files", priority=30, node_status=NodeStatus.SYNCHRONIZING, needs=("t-soft",)
    )
    other = make_type("t-other", priority=40, node_status=NodeStatus.READY, needs=())
    node = make_node("n1")
    worker = "worker-1"
    work = []
    if (
        on["failing in backoff"]
        or on["cancelled"]
        or on["running"]
        or on["waiting for a needed type"]
    ):
        work.append(soft)
    if on["waiting for a needed type"]:
        work.append(files)
    if on["other work done"]:
        work.append(other)
    if work:
        register_desync([node], work)
    if on["failing in backoff"] or on["cancelled"]:
        assert claim_node(node.pk, worker)
        ticket = start_next_run(node.pk, worker, action_ids=[soft.pk])
        if on["cancelled"]:
            assert cancel_node(node, "alice") == ["T-Soft"]
        else:
            finish_run(ticket, worker, Outcome.FAILED, "", "E: Unable to locate package nope")
            release_node(node.pk, worker)
    if on["other work done"]:
        assert claim_node(node.pk, worker)
        ticket = start_next_run(node.pk, worker, action_ids=[other.pk])
        assert ticket and ticket.action.name == "t-other"
        assert finish_run(ticket, worker, Outcome.SUCCESS, "", "")
        release_node(node.pk, worker)
    if on["running"]:
        assert claim_node(node.pk, worker)
        ticket = start_next_run(node.pk, worker, action_ids=[soft.pk], ignore_backoff=True)
        assert ticket and ticket.action.name == "t-soft"
    now = read_db_now()
    if on["unreachable"]:
        fails = FailureKind.UNREACHABLE
        conditions.after_failure(node.pk, "t-soft", "T-Soft", fails, "refused the connection", now)
    if on["host key changed"]:
        fails = FailureKind.HOST_KEY
        conditions.after_failure(node.pk, "t-soft", "T-Soft", fails, "host key changed", now)
    if on["maintenance"]:
        set_maintenance([node], True)
    return node, {"soft": soft, "files": files, "other": other}


@pytest.mark.parametrize("row", ROWS, ids=[case_id(r) for r in ROWS])
def test_each_case_of_the_table_reads_as_the_table_says(row, make_node, make_type, settings):
    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 0}
    node, _ = make_case(row, make_node, make_type)

    node = table_queryset().get(pk=node.pk)
    assert node.shown_choice.label == row["shown"]
    assert node.usable == (row["usable"] == "yes")
    # The engine's stored word is the rule's, and its shortcut for "goes on" is the whole
    # eligibility rule with the holds that pass by themselves ignored.
    held = with_row_hold(Node2Sync.objects.filter(node=node), ignore=PASSING_HOLDS)
    goes = any(r.hold in GOING_ON for r in held)
    assert Node.objects.filter(pk=node.pk).filter(goes_on()).exists() == goes
    truth = node_truth(node.status, node.condition, node.maintenance, goes)
    assert (truth.shown.value, truth.usable) == (node.shown, node.usable)
    # The cell leads with the word; a node that is not usable never shows the Ready check.
    cell = render_to_string("nodes/_status_cell.html", {"node": node})
    assert row["shown"] in cell
    assert ("#check-circle" in cell) == node.usable
    if node.is_processing or node.status == NodeStatus.READY:
        return
    words = work_line(node)
    if node.hold in GOING_ON:  # something can run now: the status's own words
        assert words == node.get_status_display()
    else:  # else why it waits, never "Synchronizing"
        assert words.startswith("Waiting") and words in cell


def test_the_list_leads_with_what_stops_a_node_and_counts_what_it_shows(
    operator, make_node, settings
):
    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 0}
    make_node("fine")
    down = make_node("down")
    when = read_db_now()
    conditions.after_failure(
        down.pk, "probe", "Health probe", FailureKind.UNREACHABLE, "refused the connection", when
    )
    page = operator.get(reverse("nodes:list")).content.decode()

    cell = page.split(f'id="status-{down.pk}"')[1].split("</td>")[0]
    since = timezone.localtime(when).strftime("%H:%M")
    assert f"Unreachable since {since}" in cell and "#check-circle" not in cell
    ready = page.split('id="count-ready"')[1].split("</a>")[0]
    assert '<span class="count-number">1</span>' in ready
    unusable = operator.get(reverse("nodes:list"), {"shown": "unreachable"}).content.decode()
    assert 'data-node="down"' in unusable and 'data-node="fine"' not in unusable


def test_last_synchronization_counts_synchronizer_runs_not_probes(make_node, make_type):
    node = make_node()
    register_desync([node], [SyncAction.objects.get(name=PROBE_TYPE)])  # the built-in probe
    run_nodes([node.pk])
    node.refresh_from_db()
    assert node.last_contact_at is not None and node.last_sync_at is None
    page_node = table_queryset().get(pk=node.pk)
    assert page_node.last_sync_at is None

    register_desync([node], [make_type("t-a")])
    run_nodes([node.pk])
    node.refresh_from_db()
    assert node.last_sync_at is not None


def test_stuck_leaves_alone_what_waits_for_a_type_it_needs(make_node, make_type, settings):
    """Only the type that holds the others back is named stuck, never one that waits for it;
    probes answering meanwhile are no progress."""
    settings.SYNC = {**settings.SYNC, "stuck_seconds": 0}
    soft = make_type("t-soft", priority=20, node_status=NodeStatus.INSTALLING, needs=())
    files = make_type("t-files", priority=30, needs=("t-soft",))
    node = make_node()
    register_desync([node], [soft, files])
    assert claim_node(node.pk, "w")
    ticket = start_next_run(node.pk, "w", action_ids=[soft.pk])
    assert cancel_node(node, "alice")
    refresh_stuck()
    node.refresh_from_db()
    assert not node.has_condition(NodeCondition.STUCK)  # cancelled, and files wait for it

    Node2Sync.objects.filter(pk=ticket.desync_id).update(state="failed")  # failing instead
    refresh_stuck()
    node.refresh_from_db()
    assert node.has_condition(NodeCondition.STUCK)
    assert "T-Soft" in next(c["message"] for c in node.conditions if c["type"] == "stuck")

"""One truth per node: ``shown`` (the word its Status cell leads with) and ``usable`` are
stored columns, written by the engine by one rule (``nodes.truth``), and the filters, counts,
``nodes --json`` and the API read them."""

from __future__ import annotations

import itertools
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Q
from django.urls import reverse

from nodes.choices import NodeCondition, NodeShown, NodeStatus
from nodes.models import Node
from nodes.truth import SHOWN_RULE, node_truth, truth_columns
from sync import actions
from sync.actor import Actor
from sync.engine import register_desync, set_maintenance
from sync.fleet import NodeFilter, fleet_counts

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

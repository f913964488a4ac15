"""Facts for people and for placement: the Ready-state refresh on a schedule, the columns the
list sorts by, and the node page's facts in human units."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from nodes.choices import NodeStatus
from nodes.facts import fact_columns, os_label
from nodes.models import Node
from sync.engine import check_health, register_desync, run_nodes
from sync.models import Node2Sync, Outcome, SyncAction, SyncRun
from sync.synchronizers.nodeinfo import parse_facts

pytestmark = pytest.mark.django_db

FACTS = parse_facts(
    "\n".join(
        [
            "hostname=web-1",
            "kernel=6.1.0-28-amd64",
            "arch=x86_64",
            "cpus=8",
            "memory_kb=16318480",
            "memory_available_kb=12582912",
            "disk_total_kb=41152736",
            "disk_used_kb=9437184",
            "disk_available_kb=29720032",
            "uptime_seconds=273600",
            "os_id=debian",
            "os_name=Debian GNU/Linux",
            "os_version=12",
            "os_pretty=Debian GNU/Linux 12 (bookworm)",
        ]
    )
)


def with_facts(node: Node, facts: dict = FACTS, age: timedelta = timedelta(0)) -> Node:
    collected = timezone.now() - age
    facts = {**facts, "collected_at": collected.isoformat()}
    Node.objects.filter(pk=node.pk).update(facts=facts, **fact_columns(facts, collected))
    node.refresh_from_db()
    return node


def refresh_type() -> SyncAction:
    return SyncAction.objects.get(name="facts")


# --- The columns ----------------------------------------------------------------------------


def test_it_names_the_os_by_its_pretty_name_then_name_and_version():
    assert os_label(FACTS) == "Debian GNU/Linux 12 (bookworm)"
    assert os_label({"os": {"name": "Alpine Linux", "version": "3.20"}}) == "Alpine Linux 3.20"
    assert os_label({"os": {"id": "plan9"}}) == "plan9"
    assert os_label({}) == ""


def test_it_turns_the_facts_into_the_placement_columns():
    collected = timezone.now()

    columns = fact_columns(FACTS, collected)

    assert columns["os_name"] == "Debian GNU/Linux 12 (bookworm)"
    assert columns["kernel"] == "6.1.0-28-amd64"
    assert (columns["cpus"], columns["memory_mb"], columns["disk_free_mb"]) == (8, 15936, 29023)
    assert columns["booted_at"] == collected - timedelta(days=3, hours=4)
    assert columns["facts_at"] == collected


def test_it_leaves_a_column_empty_when_the_node_said_nonsense():
    columns = fact_columns({"cpus": "many", "memory_mb": -1, "os": "x"}, timezone.now())

    assert columns["cpus"] is None and columns["memory_mb"] is None
    assert columns["os_name"] == "" and columns["booted_at"] is None


# --- The refresh: Ready-state, on a schedule --------------------------------------------------


def test_the_refresh_is_a_ready_state_type_that_needs_nothing():
    refresh = refresh_type()

    assert refresh.node_status == NodeStatus.READY
    assert not refresh.needs_before and not refresh.needs.exists()
    # Node information stays what a new node waits for: its other types need the facts.
    assert SyncAction.objects.get(name="nodeinfo").node_status == NodeStatus.SYNCHRONIZING


def test_the_health_pass_registers_the_refresh_for_old_facts_only(make_node, settings):
    settings.SYNC = {**settings.SYNC, "facts_seconds": 3600}
    old = with_facts(make_node("old"), age=timedelta(hours=2))
    fresh = with_facts(make_node("fresh"), age=timedelta(minutes=10))
    never = make_node("never")
    resting = with_facts(make_node("resting", maintenance=True), age=timedelta(hours=2))
    new = with_facts(make_node("new"), age=timedelta(hours=2))
    register_desync([new], [SyncAction.objects.get(name="nodeinfo")])

    assert check_health()["facts_refreshed"] == 2

    refreshing = set(
        Node2Sync.objects.filter(action__name="facts").values_list("node__name", flat=True)
    )
    assert refreshing == {old.name, never.name}
    assert fresh.name not in refreshing and resting.name not in refreshing
    # A second pass adds nothing: the refresh already waits.
    assert check_health()["facts_refreshed"] == 0


def test_the_refresh_keeps_the_node_ready_and_updates_its_facts(make_node, settings):
    settings.SYNC = {**settings.SYNC, "facts_seconds": 3600}
    node = with_facts(make_node("n1"), {**FACTS, "cpus": 1}, age=timedelta(hours=2))
    before = node.facts_at

    check_health()
    node.refresh_from_db()
    assert node.status == NodeStatus.READY and node.usable
    assert node.pending_count >= 1

    results = run_nodes([node.pk])

    node.refresh_from_db()
    assert results[0].failed == 0
    assert node.status == NodeStatus.READY
    assert node.facts_at > before
    assert node.facts["hostname"] and node.kernel == node.facts["kernel"]
    assert node.cpus == node.facts["cpus"] and node.cpus >= 1
    assert node.memory_mb and node.disk_free_mb is not None and node.os_name
    assert node.booted_at < node.facts_at
    assert SyncRun.objects.get(node=node, action__name="facts").outcome == Outcome.SUCCESS


def test_a_new_node_collects_its_facts_once(make_node):
    node = make_node("n1")
    register_desync([node])  # every type, as adding a node does

    run_nodes([node.pk])

    node.refresh_from_db()
    assert node.status == NodeStatus.READY and node.facts_at is not None
    refresh = SyncRun.objects.get(node=node, action__name="facts")
    assert refresh.outcome == Outcome.SUCCESS
    assert "already collected" in refresh.log


# --- The node page ----------------------------------------------------------------------------


def test_the_node_page_shows_the_facts_in_human_units(operator, make_node):
    node = with_facts(make_node("web-1"))

    html = operator.get(reverse("nodes:detail", args=[node.pk])).content.decode()
    facts = re.search(r'<section id="facts".*?</section>', html, re.DOTALL).group(0)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", facts)).replace("\xa0", " ")

    assert "Operating system Debian GNU/Linux 12 (bookworm)" in text
    assert "Kernel 6.1.0-28-amd64 (x86_64)" in text
    assert "CPUs 8" in text
    assert "Memory 15.6 GB (12.0 GB available)" in text
    assert "Disk (/) 28.3 GB free of 39.2 GB" in text
    assert re.search(r"Up 3 days, 4 hours \(booted \d{4}-\d\d-\d\d \d\d:\d\d\)", text)
    # No raw keys nor JSON.
    for raw in ("memory_mb", "uptime_seconds", "os_pretty", "{", "collected_at"):
        assert raw not in facts


def test_the_node_page_says_when_no_facts_were_gathered(operator, make_node):
    node = make_node("n1")

    html = operator.get(reverse("nodes:detail", args=[node.pk])).content.decode()

    assert "None gathered yet." in html


# --- The API ------------------------------------------------------------------------------------


def test_the_api_lists_and_sorts_nodes_by_their_placement_facts(django_user_model, make_node):
    from nodes.access import READ_ONLY
    from tests.test_api import Api, apitoken, make_user

    make_user(django_user_model, "ro", READ_ONLY)
    api = Api(apitoken("ro", "--name", "placement", "--read-only"))
    with_facts(make_node("big"), {**FACTS, "memory_mb": 65536})
    with_facts(make_node("small"), {**FACTS, "memory_mb": 2048})

    items = api.get("/nodes", sort="-memory").json()["items"]

    assert [n["name"] for n in items] == ["big", "small"]
    assert items[0]["memory_mb"] == 65536 and items[0]["cpus"] == 8
    assert items[0]["os_name"] == "Debian GNU/Linux 12 (bookworm)"
    assert items[0]["booted_at"] and items[0]["facts_at"]

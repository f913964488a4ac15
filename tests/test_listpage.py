"""The Cluster nodes list at fleet scale: the desynchronization count stored on the node (kept
by the engine), the placement facts as sortable columns, and a fixed number of queries
whatever the fleet's size, sort or filter."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from nodes.models import Node, Role
from sync.actions import skip_work
from sync.actor import Actor
from sync.engine import register_desync, run_nodes
from sync.models import Node2Sync
from sync.synchronizers import unregister_type, update_syncactions

pytestmark = pytest.mark.django_db


def stored_and_real(*nodes: Node) -> list[tuple[int, int]]:
    out = []
    for node in nodes:
        node.refresh_from_db()
        out.append((node.pending_count, Node2Sync.objects.filter(node=node).count()))
    return out


def row_names(html: str) -> list[str]:
    return re.findall(r'<th scope="row" class="node-name"><a [^>]*>([^<]+)</a>', html)


# --- The count, kept where rows are added and removed -----------------------------------------


def test_the_engine_keeps_the_count_as_rows_come_and_go(make_node, make_type):
    a, b = make_node("a"), make_node("b")
    t1, t2, t3 = make_type("t-one"), make_type("t-two"), make_type("t-three")

    register_desync([a, b], [t1, t2])
    assert stored_and_real(a, b) == [(2, 2), (2, 2)]

    register_desync([a], [t2, t3])  # one already there, one new
    assert stored_and_real(a, b) == [(3, 3), (2, 2)]

    run_nodes([b.pk])  # both done: removed
    assert stored_and_real(a, b) == [(3, 3), (0, 0)]

    skip_work(Actor.command("test"), a, [t1])
    assert stored_and_real(a) == [(2, 2)]

    unregister_type("t-three")  # a type that left the code takes its rows with it
    update_syncactions()
    assert stored_and_real(a) == [(1, 1)]


def test_the_list_sorts_by_the_stored_count(operator, make_node, make_type):
    types = [make_type(f"t-{i}") for i in range(3)]
    for name, count in (("few", 1), ("most", 3), ("none", 0), ("some", 2)):
        node = make_node(name)
        if count:
            register_desync([node], types[:count])

    html = operator.get(reverse("nodes:list"), {"sort": "-pending"}).content.decode()

    assert row_names(html) == ["most", "some", "few", "none"]
    assert re.search(r'id="pending-\d+" class="[^"]*">\s*3\s*</td>', html)


# --- The placement facts as columns -----------------------------------------------------------


def place(node: Node, **columns) -> None:
    Node.objects.filter(pk=node.pk).update(facts_at=timezone.now(), **columns)


def test_the_list_shows_the_placement_facts_in_human_units(operator, make_node):
    node = make_node("web-1")
    place(
        node,
        os_name="Debian GNU/Linux 12 (bookworm)",
        kernel="6.1.0-28-amd64",
        cpus=8,
        memory_mb=16384,
        disk_free_mb=512,
        booted_at=timezone.now() - timezone.timedelta(days=3, hours=2),
    )
    make_node("bare")

    html = operator.get(reverse("nodes:list")).content.decode().replace("\xa0", " ")

    row = re.search(rf'<tr id="node-{node.pk}">.*?</tr>', html, re.DOTALL).group(0)
    assert ">Debian GNU/Linux 12 (bookworm)</td>" in row
    assert ">6.1.0-28-amd64</td>" in row
    assert ">8</td>" in row
    assert ">16.0 GB</td>" in row and ">512.0 MB</td>" in row
    assert ">3 days ago</time>" in row
    for label in ("OS", "Kernel", "CPUs", "Memory", "Disk free", "Booted"):
        assert f">{label}<span" in html


@pytest.mark.parametrize(
    "sort, expected",
    [
        ("memory", ["nofacts", "small", "big"]),
        ("-memory", ["big", "small", "nofacts"]),
        ("-cpus", ["small", "big", "nofacts"]),
        ("disk", ["nofacts", "big", "small"]),
        ("os", ["nofacts", "big", "small"]),
    ],
)
def test_the_list_sorts_by_the_placement_facts(operator, make_node, sort, expected):
    place(make_node("big"), memory_mb=65536, cpus=4, disk_free_mb=10, os_name="AlmaLinux 9")
    place(make_node("small"), memory_mb=2048, cpus=16, disk_free_mb=900, os_name="Debian 12")
    make_node("nofacts")

    html = operator.get(reverse("nodes:list"), {"sort": sort}).content.decode()

    assert row_names(html) == expected


# --- A fixed number of queries at any size ----------------------------------------------------

URLS = [
    {},
    {"sort": "-pending"},
    {"sort": "-memory"},
    {"status": "synchronizing", "sort": "-pending"},
    {"role": "web", "has_error": "true", "q": "n-"},
]


def test_the_list_runs_the_same_queries_for_10_and_1000_nodes(operator, make_type):
    role = Role.objects.create(name="web")
    types = [make_type("t-ready", node_status="ready"), make_type("t-sync")]

    def grow(count: int, start: int) -> None:
        nodes = Node.objects.bulk_create(
            [
                Node(
                    name=f"n-{i:04d}",
                    transport="local",
                    host="localhost",
                    last_error="e" if i % 3 else "",
                    os_name="Debian GNU/Linux 12 (bookworm)",
                    kernel="6.1.0-28-amd64",
                    cpus=1 + i % 16,
                    memory_mb=1024 * (1 + i % 64),
                    disk_free_mb=100 * i,
                    booted_at=timezone.now(),
                    facts_at=timezone.now(),
                )
                for i in range(start, start + count)
            ]
        )
        Node.roles.through.objects.bulk_create(
            [Node.roles.through(node_id=n.pk, role_id=role.pk) for n in nodes]
        )
        ids = [n.pk for n in nodes]
        register_desync(ids[::2], types)
        register_desync(ids[1::2], types[:1])

    def queries_per_url() -> list[int]:
        counts = []
        for params in URLS:
            with CaptureQueriesContext(connection) as seen:
                response = operator.get(reverse("nodes:list"), params)
            assert response.status_code == 200
            counts.append(len(seen))
        return counts

    grow(10, 0)
    operator.get(reverse("nodes:list"))  # warm up the session
    few = queries_per_url()
    grow(990, 10)
    many = queries_per_url()

    assert many == few
    html = operator.get(reverse("nodes:list"), {"sort": "-pending"}).content.decode()
    assert html.count('class="status-cell') == 50
    assert max(many) <= 12, many


def test_narrow_screens_get_the_facts_columns_when_asked_or_sorting_by_one(operator, make_node):
    make_node("a")

    def table_class(params: dict) -> str:
        html = operator.get(reverse("nodes:list"), params).content.decode()
        return re.search(r'<table class="([^"]*nodes-table[^"]*)"', html).group(1)

    assert "show-facts" not in table_class({})
    assert "show-facts" not in table_class({"sort": "-pending"})
    assert "show-facts" in table_class({"facts": "1"})
    assert "show-facts" in table_class({"sort": "-memory"})


# --- Rows rendered once for what they show ---------------------------------------------------


def test_a_row_is_rendered_again_only_when_something_it_shows_changed(
    operator, make_node, make_type
):
    from django.core.cache import caches
    from django.test.signals import template_rendered

    caches["rows"].clear()
    a, _ = make_node("a"), make_node("b")
    rendered: list[str] = []

    def seen(sender, template, context, **kwargs) -> None:
        if template.name == "nodes/_row.html":
            rendered.append(context["node"].name)

    template_rendered.connect(seen)
    try:
        operator.get(reverse("nodes:list"))
        assert sorted(rendered) == ["a", "b"]

        rendered.clear()
        operator.get(reverse("nodes:list"))
        assert rendered == []

        register_desync([a], [make_type("t-sync")])  # a's status and count change
        html = operator.get(reverse("nodes:list")).content.decode()
        assert rendered == ["a"]
        assert re.search(rf'id="pending-{a.pk}" class="[^"]*">\s*1\s*</td>', html)
        assert "Synchronizing" in html

        rendered.clear()
        Node.objects.filter(pk=a.pk).update(cpus=64)  # a fact the row shows
        html = operator.get(reverse("nodes:list")).content.decode()
        assert rendered == ["a"] and ">64</td>" in html
    finally:
        template_rendered.disconnect(seen)


# --- Counts from the counts index, fragments drawn once for what they show --------------------


def test_the_error_count_follows_every_write_of_the_error(operator, make_node):
    """The counts read ``has_error``, which the database keeps from ``last_error`` itself, so a
    plain UPDATE (the engine's way of writing an error) is counted at once."""
    node = make_node("a")
    make_node("b", last_error="Files: command `install` exited with 1")
    from web.views.fleet import fleet_counts

    assert fleet_counts().failing == 1
    Node.objects.filter(pk=node.pk).update(last_error="Users: exited with 2")
    html = operator.get(reverse("nodes:list")).content.decode()
    assert fleet_counts().failing == 2
    assert re.search(r'id="count-failing"[^>]*>.*?count-number">2<', html, re.S)

    Node.objects.update(last_error="")
    html = operator.get(reverse("nodes:list")).content.decode()
    assert re.search(r'id="count-failing"[^>]*>.*?count-number">0<', html, re.S)


def test_the_counts_drawn_change_as_soon_as_a_node_does(operator, make_node, make_type):
    node = make_node("a")
    html = operator.get(reverse("nodes:list")).content.decode()
    assert re.search(r'id="count-ready"[^>]*>.*?count-number">1<', html, re.S)

    register_desync([node], [make_type("t-sync")])
    html = operator.get(reverse("nodes:list")).content.decode()

    assert re.search(r'id="count-ready"[^>]*>.*?count-number">0<', html, re.S)
    assert re.search(r'id="count-synchronizing"[^>]*>.*?count-number">1<', html, re.S)


def test_the_filter_form_offers_a_new_role_and_keeps_each_query_at_once(operator, make_node):
    make_node("a")
    url = reverse("nodes:list")
    assert 'value="db"' not in operator.get(url).content.decode()

    Role.objects.create(name="db")
    html = operator.get(url).content.decode()
    assert '<option value="db">db</option>' in html

    chosen = operator.get(url, {"role": "db"}).content.decode()
    assert '<option value="db" selected>db</option>' in chosen
    assert '<option value="db" selected>db</option>' not in operator.get(url).content.decode()


def test_an_unknown_role_is_shown_as_ignored_and_lists_every_node(operator, make_node):
    make_node("a")

    html = operator.get(reverse("nodes:list"), {"role": "nope"}).content.decode()

    assert "Ignored:" in html and "Role:" in html
    assert row_names(html) == ["a"]


def test_a_role_given_to_a_node_shows_in_its_row_at_once(operator, make_node):
    node = make_node("a")
    operator.get(reverse("nodes:list"))  # the row is drawn, without roles
    web, db = Role.objects.create(name="web"), Role.objects.create(name="db")

    node.roles.add(web, db)
    html = operator.get(reverse("nodes:list")).content.decode()

    cell = re.search(r'<td class="node-roles">(.*?)</td>', html, re.S).group(1)
    assert re.findall(r'title="([^"]+)"', cell) == ["db", "web"]


def test_a_filtered_list_counts_its_nodes_once_and_the_whole_fleet_never_twice(
    operator, make_node
):
    for i in range(3):
        make_node(f"n-{i}", last_error="e" if i else "")

    def whole_counts(params: dict) -> int:
        with CaptureQueriesContext(connection) as seen:
            html = operator.get(reverse("nodes:list"), params).content.decode()
        assert "Cluster nodes, " in html
        return sum("COUNT(*)" in q["sql"] for q in seen.captured_queries)

    assert whole_counts({}) == 0  # the fleet's counts give the total
    assert whole_counts({"has_error": "true"}) == 1
    html = operator.get(reverse("nodes:list"), {"has_error": "true"}).content.decode()
    assert "Cluster nodes, 2 in all" in html

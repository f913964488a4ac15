"""The Cluster nodes dashboard without a browser: access, list, node page, forms, actions.

SSH forms (host keys, logins) are in test_dashboard_ssh.py; the browser tests in tests/e2e/.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from nodes.access import OPERATORS, READ_ONLY, ensure_groups
from nodes.choices import NodeStatus
from nodes.models import Node, Role
from sync.actor import Actor
from sync.engine import claim_node, register_desync, start_next_run
from sync.inventory import add_node
from sync.models import DesyncState, Node2Sync, Outcome, SyncAction, SyncRun
from web.views.fleet import fleet_counts

# The page's live poller (not the cluster banner's, which also polls).
LIVE_POLL_URL = r'id="live-poll"[^>]*hx-get="([^"]+)"'

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


# --- Fixtures -------------------------------------------------------------------------------


@pytest.fixture
def types(make_type) -> list[SyncAction]:
    """Test-only types, and only them: registering "every type" stays predictable."""
    SyncAction.objects.all().delete()
    return [
        make_type("t-first", priority=10),
        make_type("t-second", priority=20, node_status=NodeStatus.INSTALLING),
    ]


@pytest.fixture
def node(make_node) -> Node:
    return make_node("alpha")


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def detail(node: Node) -> str:
    return reverse("nodes:detail", args=[node.pk])


def action_url(name: str, node: Node) -> str:
    return reverse(f"nodes:{name}", args=[node.pk])


# --- Access ---------------------------------------------------------------------------------


def page_urls(node: Node) -> list[str]:
    return [
        reverse("nodes:list"),
        reverse("nodes:live"),
        reverse("nodes:add"),
        detail(node),
        action_url("detail_live", node),
        action_url("edit", node),
        action_url("delete", node),
    ]


ACTION_NAMES = ["resync", "retry", "force", "maintenance", "delete", "edit", "accept_key"]


def test_it_redirects_anonymous_users_to_the_login_page_everywhere(client, node):
    urls = page_urls(node) + [action_url(name, node) for name in ACTION_NAMES]
    urls.append(reverse("nodes:bulk"))
    for url in urls:
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("login")), url


def test_it_renders_every_page_for_an_operator(operator, make_node):
    # An SSH node: only superusers may edit a local one (the panel's own server).
    node = make_node("alpha", transport="ssh", host="127.0.0.1")
    for url in page_urls(node):
        response = operator.get(url)
        assert response.status_code in (200, 204, 286), url


def test_it_renders_the_pages_a_reader_may_see_and_403_for_the_others(reader, node):
    for url in [reverse("nodes:list"), reverse("nodes:live"), detail(node)]:
        assert reader.get(url).status_code in (200, 286), url
    for url in [reverse("nodes:add"), action_url("edit", node), action_url("delete", node)]:
        response = reader.get(url)
        assert response.status_code == 403, url
        assert "Operators group" in response.content.decode()


@pytest.mark.parametrize("name", ACTION_NAMES)
def test_it_refuses_every_action_to_a_reader(reader, node, name):
    response = reader.post(action_url(name, node), {"on": "1", "name": "renamed"})

    assert response.status_code == 403
    node.refresh_from_db()
    assert node.name == "alpha" and not node.maintenance


@pytest.mark.parametrize("action", ["resync", "maintenance_on", "maintenance_off", "delete"])
def test_it_refuses_bulk_actions_to_a_reader(reader, node, action):
    response = reader.post(
        reverse("nodes:bulk"), {"action": action, "ids": [node.pk], "confirm": 1}
    )

    assert response.status_code == 403
    assert Node.objects.filter(pk=node.pk, maintenance=False).exists()


def test_it_refuses_the_pages_to_a_user_without_any_permission(nobody, node):
    assert nobody.get(reverse("nodes:list")).status_code == 403
    assert nobody.get(detail(node)).status_code == 403


def test_it_hides_the_actions_from_a_reader(reader, node):
    list_html = reader.get(reverse("nodes:list")).content.decode()
    detail_html = reader.get(detail(node)).content.decode()

    assert "row-select" not in list_html and "Add node" not in list_html
    assert 'method="post" action="/nodes/' not in detail_html
    assert "read-only access" in detail_html


def test_it_lets_a_superuser_act(django_user_model, node):
    admin = django_user_model.objects.create_superuser("root", password="secret-pass-1")
    client = Client()
    client.force_login(admin)

    response = client.post(action_url("maintenance", node), {"on": "1"})

    assert response.status_code == 302
    assert Node.objects.get(pk=node.pk).maintenance


def test_it_checks_csrf_on_actions(django_user_model, node):
    ensure_groups()
    user = django_user_model.objects.create_user("op")
    user.groups.add(Group.objects.get(name=OPERATORS))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    assert client.post(action_url("maintenance", node), {"on": "1"}).status_code == 403
    assert not Node.objects.get(pk=node.pk).maintenance


def test_it_answers_405_to_a_get_on_an_action(operator, node):
    for name in ("resync", "retry", "force", "maintenance"):
        assert operator.get(action_url(name, node)).status_code == 405
    assert operator.get(reverse("nodes:bulk")).status_code == 405


def test_it_creates_the_groups_idempotently_and_keeps_added_permissions():
    ensure_groups()
    operators = Group.objects.get(name=OPERATORS)
    extra = Permission.objects.get(codename="view_syncrun")
    operators.permissions.add(extra)

    ensure_groups()

    assert Group.objects.filter(name__in=[OPERATORS, READ_ONLY]).count() == 2
    codenames = set(operators.permissions.values_list("codename", flat=True))
    assert {"view_node", "add_node", "change_node", "delete_node", "view_syncrun"} <= codenames
    reader_codes = set(
        Group.objects.get(name=READ_ONLY).permissions.values_list("codename", flat=True)
    )
    assert "view_node" in reader_codes and "change_node" not in reader_codes


# --- The list -------------------------------------------------------------------------------


def names_in(response) -> list[str]:
    return re.findall(r'data-node="([^"]+)"', response.content.decode())


def test_it_searches_filters_and_sorts(operator, make_node, types):
    web = Role.objects.create(name="web")
    a = make_node("a-web", host="10.0.0.1")
    a.roles.set([web])
    make_node("b-broken", last_error="boom")
    make_node("c-maint", maintenance=True, status=NodeStatus.INSTALLING)
    url = reverse("nodes:list")

    assert names_in(operator.get(url, {"q": "BROK"})) == ["b-broken"]
    assert names_in(operator.get(url, {"q": "10.0.0"})) == ["a-web"]
    assert names_in(operator.get(url, {"role": "web"})) == ["a-web"]
    assert names_in(operator.get(url, {"has_error": "true"})) == ["b-broken"]
    assert names_in(operator.get(url, {"has_error": "false"})) == ["a-web", "c-maint"]
    assert names_in(operator.get(url, {"maintenance": "true"})) == ["c-maint"]
    assert names_in(operator.get(url, {"status": "installing"})) == ["c-maint"]
    assert names_in(operator.get(url, {"sort": "-name"})) == ["c-maint", "b-broken", "a-web"]
    assert names_in(operator.get(url, {"sort": "error"}))[-1] == "b-broken"


def test_it_sorts_by_pending_count(operator, make_node, types):
    busy = make_node("busy")
    make_node("idle")
    register_desync([busy])

    response = operator.get(reverse("nodes:list"), {"sort": "-pending"})

    assert names_in(response) == ["busy", "idle"]
    assert 'aria-sort="descending"' in response.content.decode()


def test_it_filters_nodes_running_now(operator, make_node, types):
    make_node(
        "runner",
        current_action_id=types[0].pk,
        lease_until=timezone.now() + timedelta(seconds=60),
    )
    make_node("sleeper")

    assert names_in(operator.get(reverse("nodes:list"), {"processing": "true"})) == ["runner"]


@pytest.mark.parametrize(
    "params",
    [
        {"page": "abc"},
        {"page": "-1"},
        {"page": "99999999999999999999999"},
        {"sort": "drop table"},
        {"sort": "-lease_owner"},
        {"status": "exploded"},
        {"role": "no-such-role"},
        {"has_error": "maybe"},
        {"maintenance": "2"},
        {"processing": "[]"},
        {"q": "x" * 500},
        {"q": "'; --"},
        {"mode": "nonsense", "since": "<script>"},
    ],
)
def test_it_survives_bad_parameters(operator, make_node, params):
    make_node("alpha")

    for url in (reverse("nodes:list"), reverse("nodes:live")):
        response = operator.get(url, params)
        assert response.status_code in (200, 286), (url, params)


def test_it_shows_which_filter_was_ignored(operator, make_node):
    make_node("alpha")

    html = operator.get(reverse("nodes:list"), {"status": "exploded"}).content.decode()

    assert "Ignored" in html and "alpha" in html


def test_it_paginates_the_list(operator, types):
    Node.objects.bulk_create(
        [Node(name=f"n-{i:03d}", transport="local", host="localhost") for i in range(60)]
    )

    first = names_in(operator.get(reverse("nodes:list")))
    second = names_in(operator.get(reverse("nodes:list"), {"page": 2}))

    assert len(first) == 50 and len(second) == 10
    assert second[0] == "n-050"
    assert "?page=2" in operator.get(reverse("nodes:list")).content.decode()


def test_it_counts_nodes_per_status_in_one_query(make_node, types):
    make_node("a")
    make_node("b", status=NodeStatus.INSTALLING, maintenance=True, last_error="x")
    busy_until = timezone.now() + timedelta(seconds=30)
    make_node("c", current_action_id=types[0].pk, lease_until=busy_until)
    register_desync([Node.objects.get(name="a")], [types[0]])

    with CaptureQueriesContext(connection) as queries:
        counts = fleet_counts()

    assert len(queries) == 1
    by_status = {status.value: count for status, count in counts.by_status}
    assert by_status == {"ready": 1, "synchronizing": 1, "installing": 1}
    assert (counts.total, counts.processing, counts.failing, counts.maintenance) == (3, 1, 1, 1)
    assert counts.waiting == 1 and counts.active


def test_it_ignores_waiting_work_of_nodes_in_maintenance(make_node, types):
    node = make_node("a", maintenance=True)
    register_desync([node])

    assert not fleet_counts().active


@pytest.mark.parametrize("url", ["nodes:list", "nodes:live"])
def test_it_runs_the_same_queries_for_10_and_1000_nodes(operator, types, url):
    role = Role.objects.create(name="web")

    def grow(count: int, start: int) -> None:
        nodes = Node.objects.bulk_create(
            [
                Node(name=f"n-{i:04d}", transport="local", host="localhost", last_error="e")
                for i in range(start, start + count)
            ]
        )
        Node.roles.through.objects.bulk_create(
            [Node.roles.through(node_id=n.pk, role_id=role.pk) for n in nodes]
        )
        now = timezone.now()
        Node2Sync.objects.bulk_create(
            [
                Node2Sync(node=n, action=types[0], registered_at=now, next_attempt_at=now)
                for n in nodes
            ]
        )

    grow(10, 0)
    operator.get(reverse(url))  # warm up
    with CaptureQueriesContext(connection) as few:
        assert operator.get(reverse(url)).status_code == 200
    grow(990, 10)
    with CaptureQueriesContext(connection) as many:
        response = operator.get(reverse(url))

    assert response.status_code == 200
    assert response.content.decode().count('class="status-cell') == 50
    assert len(many) == len(few) <= 12, [q["sql"] for q in many]


def test_it_tells_the_live_page_when_its_nodes_changed(operator, make_node, types):
    make_node("a")
    register_desync([Node.objects.get(name="a")])
    html = operator.get(reverse("nodes:list")).content.decode()
    poll_url = re.search(LIVE_POLL_URL, html).group(1).replace("&amp;", "&")

    make_node("b")
    response = operator.get(poll_url, headers=HTMX)

    assert response.status_code == 200
    assert 'id="list-changed"' in response.content.decode()
    assert "Reload the list" in response.content.decode()


def test_it_restarts_fast_polling_when_the_watcher_sees_work(operator, make_node, types):
    node = make_node("a")
    assert operator.get(reverse("nodes:live"), {"mode": "watch"}).status_code == 200
    html = operator.get(reverse("nodes:list")).content.decode()
    watch_url = re.search(LIVE_POLL_URL, html).group(1).replace("&amp;", "&")
    assert "mode=watch" in watch_url
    assert operator.get(watch_url, headers=HTMX).status_code == 204

    register_desync([node])
    response = operator.get(watch_url, headers=HTMX)

    assert response.status_code == 200
    assert 'data-mode="fast"' in response.content.decode()


# --- The node page --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nodes/999999/", "/nodes/abc/", "/nodes/-1/", "/nodes/99999999999999999999999/"]
)
def test_it_answers_404_for_unknown_or_malformed_ids(operator, path):
    assert operator.get(path).status_code == 404
    assert operator.post(path.rstrip("/") + "/maintenance/", {"on": "1"}).status_code == 404


def test_it_shows_desyncs_in_priority_order_and_runs_newest_first(operator, node, types):
    register_desync([node], list(reversed(types)))
    now = timezone.now()
    for i in range(25):
        SyncRun.objects.create(
            node=node,
            action=types[0],
            worker="w",
            started_at=now - timedelta(minutes=i),
            finished_at=now - timedelta(minutes=i) + timedelta(seconds=1),
            outcome=Outcome.SUCCESS,
            log=f"log line of run {i}",
        )

    html = operator.get(detail(node)).content.decode()

    assert html.index("T-First") < html.index("T-Second")
    assert "log line of run 0" in html and "log line of run 19" in html
    assert "log line of run 20" not in html
    assert html.index("log line of run 0") < html.index("log line of run 1<")
    page2 = operator.get(detail(node), {"runs_page": 2}).content.decode()
    assert "log line of run 24" in page2
    assert operator.get(detail(node), {"runs_page": "zzz"}).status_code == 200


def test_it_shows_the_full_last_error_on_the_node_page(operator, make_node):
    node = make_node("alpha", last_error="e" * 500)

    assert "e" * 500 in operator.get(detail(node)).content.decode()


def test_it_uses_the_status_cell_on_the_node_page(operator, make_node, types):
    node = make_node(
        "busy",
        current_action_id=types[0].pk,
        lease_until=timezone.now() + timedelta(seconds=60),
    )

    html = operator.get(detail(node)).content.decode()

    assert re.search(r'<td [^>]*class="status-cell[^"]*"[^>]*data-node="busy"[^>]*aria-busy', html)
    assert 'aria-label="Synchronizing: T-First"' in html


def test_it_polls_the_node_page_and_stops_when_idle(operator, node, types):
    live = action_url("detail_live", node)
    register_desync([node])
    assert operator.get(live, headers=HTMX).status_code == 200

    Node2Sync.objects.all().delete()
    response = operator.get(live, {"mode": "fast"}, headers=HTMX)

    assert response.status_code == 286
    assert 'id="node-summary"' in response.content.decode()


def test_it_answers_204_to_the_node_pages_first_poll_when_nothing_changed(operator, node, types):
    register_desync([node])
    html = operator.get(detail(node)).content.decode()
    poll_url = re.search(LIVE_POLL_URL, html).group(1).replace("&amp;", "&")

    assert "mode=fast" in poll_url
    assert operator.get(poll_url, headers=HTMX).status_code == 204


def test_it_stops_polling_a_deleted_node(operator, node):
    live = action_url("detail_live", node)
    node.delete()

    response = operator.get(live, headers=HTMX)

    assert response.status_code == 286
    assert "This node was deleted" in response.content.decode()


# --- Actions on one node --------------------------------------------------------------------


def test_it_synchronizes_every_type_again(operator, node, types):
    response = operator.post(action_url("resync", node), {"action": ""})

    assert response.status_code == 302 and response["Location"] == detail(node)
    assert Node2Sync.objects.filter(node=node).count() == 2
    assert "Registered 2 synchronizer types for alpha" in messages_of(response)[0]
    node.refresh_from_db()
    assert node.status == NodeStatus.SYNCHRONIZING


def test_it_synchronizes_one_type_again(operator, node, types):
    response = operator.post(action_url("resync", node), {"action": types[1].pk})

    assert list(Node2Sync.objects.filter(node=node).values_list("action", flat=True)) == [
        types[1].pk
    ]
    assert "T-Second" in messages_of(response)[0]


@pytest.mark.parametrize("value", ["abc", "999999", "1; drop", "99999999999999999999999"])
def test_it_reports_a_bad_type_without_registering(operator, node, types, value):
    response = operator.post(action_url("resync", node), {"action": value})

    assert response.status_code == 302
    assert not Node2Sync.objects.exists()
    assert messages_of(response)[0].startswith("Nothing registered")


def test_it_retries_now(operator, node, types):
    register_desync([node], [types[0]])
    later = timezone.now() + timedelta(hours=1)
    Node2Sync.objects.update(state=DesyncState.FAILED, attempts=3, next_attempt_at=later)

    response = operator.post(action_url("retry", node))

    row = Node2Sync.objects.get()
    assert row.state == DesyncState.PENDING and row.next_attempt_at <= timezone.now()
    assert "due now" in messages_of(response)[0]


def test_it_says_when_there_is_nothing_to_retry(operator, node):
    response = operator.post(action_url("retry", node))

    assert "Nothing is waiting" in messages_of(response)[0]


def test_it_forces_completion_of_a_hanging_run(operator, node, types):
    assert claim_node(node.pk, "hanging-worker")
    register_desync([node], [types[0]])
    assert start_next_run(node.pk, "hanging-worker")

    response = operator.post(action_url("force", node))

    assert "Forced completion on alpha" in messages_of(response)[0]
    run = SyncRun.objects.get()
    assert run.outcome == Outcome.FORCED and "forced-by-op" in run.log
    node.refresh_from_db()
    assert node.lease_owner == "" and not node.is_processing
    assert Node2Sync.objects.get().state == DesyncState.PENDING


def test_it_says_when_there_was_nothing_to_force(operator, node):
    response = operator.post(action_url("force", node))

    assert "Nothing was running on alpha" in messages_of(response)[0]


def test_it_switches_maintenance_on_and_off(operator, node):
    operator.post(action_url("maintenance", node), {"on": "1"})
    assert Node.objects.get(pk=node.pk).maintenance

    response = operator.post(action_url("maintenance", node), {"on": "0"})

    assert not Node.objects.get(pk=node.pk).maintenance
    assert "Maintenance of alpha ended" in messages_of(response)[-1]


@pytest.mark.parametrize("data", [{}, {"on": "yes"}, {"on": ["1", "0"]}])
def test_it_reports_bad_maintenance_data(operator, node, data):
    response = operator.post(action_url("maintenance", node), data)

    assert response.status_code == 302
    assert not Node.objects.get(pk=node.pk).maintenance or data == {"on": ["1", "0"]}


def test_it_deletes_a_node_after_a_confirmation_page(operator, make_node):
    # An SSH node: a local one is the panel's own server, which only superusers delete.
    node = make_node("alpha", transport="ssh", host="192.0.2.1")
    page = operator.get(action_url("delete", node))
    assert page.status_code == 200 and "Delete the node alpha?" in page.content.decode()

    response = operator.post(action_url("delete", node))

    assert response["Location"] == reverse("nodes:list")
    assert not Node.objects.exists()
    assert messages_of(response) == ["Deleted the node alpha."]


def test_it_has_no_host_key_to_accept_on_a_local_node(operator, node):
    response = operator.get(action_url("accept_key", node))

    assert response.status_code == 302
    assert "no host key" in messages_of(response)[0]


def test_it_redirects_only_to_its_own_pages(operator, node):
    evil = operator.post(action_url("retry", node), {"next": "https://evil.example/"})
    ours = operator.post(action_url("retry", node), {"next": "/nodes/?status=ready"})

    assert evil["Location"] == detail(node)
    assert ours["Location"] == "/nodes/?status=ready"


# --- Bulk actions ---------------------------------------------------------------------------


def bulk(client, action: str, ids, **extra):
    return client.post(
        reverse("nodes:bulk"), {"action": action, "ids": ids, "next": "/nodes/?q=n", **extra}
    )


def test_it_synchronizes_selected_nodes_again(operator, make_node, types):
    a, b = make_node("a"), make_node("b")
    make_node("c")

    response = bulk(operator, "resync", [a.pk, b.pk])

    assert response["Location"] == "/nodes/?q=n"
    assert set(Node2Sync.objects.values_list("node__name", flat=True)) == {"a", "b"}
    assert "2 node(s): a, b" in messages_of(response)[0]


def test_it_switches_maintenance_of_selected_nodes(operator, make_node):
    a, b = make_node("a"), make_node("b")
    make_node("c")

    bulk(operator, "maintenance_on", [a.pk, b.pk])
    assert set(Node.objects.filter(maintenance=True).values_list("name", flat=True)) == {"a", "b"}

    bulk(operator, "maintenance_off", [a.pk])
    assert set(Node.objects.filter(maintenance=True).values_list("name", flat=True)) == {"b"}


def test_it_deletes_selected_nodes_after_a_confirmation(operator, make_node):
    # SSH nodes: local ones are the panel's own server, which only superusers delete.
    a, b = (make_node(name, transport="ssh", host="192.0.2.1") for name in "ab")
    make_node("c")

    page = bulk(operator, "delete", [a.pk, b.pk])
    assert page.status_code == 200
    assert "Delete 2 nodes?" in page.content.decode()
    assert Node.objects.count() == 3

    response = bulk(operator, "delete", [a.pk, b.pk], confirm="1")

    assert list(Node.objects.values_list("name", flat=True)) == ["c"]
    assert "Deleted 2 node(s): a, b" in messages_of(response)[0]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"action": "resync"}, "Select at least one node."),
        ({"action": "resync", "ids": ["abc"]}, "not a node"),
        ({"action": "resync", "ids": ["99999999999999999999999"]}, "not a node"),
        ({"action": "explode", "ids": ["1"]}, "Select a valid choice"),
        ({}, "This field is required"),
        ({"action": "resync", "ids": ["424242"]}, "None of the selected nodes exists"),
    ],
)
def test_it_reports_bad_bulk_data(operator, node, types, data, message):
    response = operator.post(reverse("nodes:bulk"), data)

    assert response.status_code == 302
    assert message in messages_of(response)[0]
    assert not Node2Sync.objects.exists()


# --- Adding and editing (local nodes; SSH in test_dashboard_ssh.py) -------------------------


def test_it_shows_the_panels_public_key_with_a_copy_button(operator):
    html = operator.get(reverse("nodes:add")).content.decode()

    assert "ssh-ed25519 " in html
    assert 'data-copy-target="#panel-key"' in html


def test_it_adds_a_local_node_with_roles_and_registers_every_type(admin_client, types):
    """Adding the panel's own server is for superusers (tests/test_local_nodes.py)."""
    Role.objects.create(name="web")

    response = admin_client.post(
        reverse("nodes:add"), {"name": "web-1", "transport": "local", "roles": ["web"]}
    )

    node = Node.objects.get(name="web-1")
    assert response["Location"] == detail(node)
    assert node.transport == "local" and node.host == "localhost"
    assert list(node.roles.values_list("name", flat=True)) == ["web"]
    assert Node2Sync.objects.filter(node=node).count() == len(types)
    assert "registered 2 synchronizer types" in messages_of(response)[0]


@pytest.mark.parametrize(
    "data, field, error",
    [
        ({"name": "Bad_Name", "transport": "local"}, "name", "lower-case"),
        ({"name": "", "transport": "local"}, "name", "required"),
        ({"name": "ok", "transport": "ssh", "host": ""}, "host", "Enter the host name"),
        ({"name": "ok", "transport": "ssh", "host": "bad host!"}, "host", "host name"),
        ({"name": "ok", "transport": "ssh", "host": "-oProxy=x"}, "host", "host name"),
        ({"name": "ok", "transport": "ssh", "host": "h", "port": "0"}, "port", "greater than"),
        ({"name": "ok", "transport": "ssh", "host": "h", "port": "65536"}, "port", "less than"),
        ({"name": "ok", "transport": "ssh", "host": "h", "port": "x"}, "port", "whole number"),
        ({"name": "ok", "transport": "ssh", "host": "h", "username": "a b"}, "username", "user"),
        ({"name": "ok", "transport": "local", "roles": ["nope"]}, "roles", "Unknown role nope"),
        ({"name": "ok", "transport": "teleport"}, "transport", "valid choice"),
    ],
)
def test_it_reports_field_errors_when_adding(operator, data, field, error):
    response = operator.post(reverse("nodes:add"), data)

    assert response.status_code == 200
    form = response.context["form"]
    assert error in " ".join(form.errors[field]), form.errors
    assert not Node.objects.filter(name="ok").exists()


def test_it_refuses_a_duplicate_name(operator, node):
    response = operator.post(reverse("nodes:add"), {"name": "alpha", "transport": "local"})

    assert response.status_code == 200
    assert "already exists" in " ".join(response.context["form"].errors["name"])
    assert Node.objects.count() == 1


def test_it_refuses_an_invalid_node_in_the_service():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        add_node(
            Node(name="Not Valid", transport="local", host="localhost"),
            by=Actor.command("addnode"),
        )
    assert not Node.objects.exists()


def test_it_edits_name_roles_and_maintenance(admin_client, make_node, types):
    web, db = Role.objects.create(name="web"), Role.objects.create(name="db")
    node = make_node("alpha", lease_owner="w-1", status=NodeStatus.INSTALLING)
    node.roles.set([web])

    response = admin_client.post(
        action_url("edit", node), {"name": "alpha-2", "roles": ["db"], "maintenance": "on"}
    )

    assert response["Location"] == detail(node)
    node.refresh_from_db()
    assert node.name == "alpha-2" and node.maintenance
    assert list(node.roles.values_list("name", flat=True)) == ["db"]
    # Only the edited columns were written: what the engine owns is untouched.
    assert node.lease_owner == "w-1" and node.status == NodeStatus.INSTALLING
    assert db.pk


def test_it_reports_a_duplicate_name_when_editing(admin_client, make_node):
    make_node("taken")
    node = make_node("alpha")

    response = admin_client.post(action_url("edit", node), {"name": "taken"})

    assert response.status_code == 200
    assert "already exists" in " ".join(response.context["form"].errors["name"])
    assert "Edit alpha" in response.content.decode()
    assert Node.objects.get(pk=node.pk).name == "alpha"


@pytest.mark.parametrize(
    "url",
    ["nodes:add", "nodes:edit", "nodes:resync", "nodes:maintenance", "nodes:bulk", "nodes:delete"],
)
@pytest.mark.parametrize(
    "data",
    [
        {"name": ["a", "b"], "ids": ["1", "x"], "on": "\x00", "action": "\x00"},
        {"port": "1e9", "roles": "", "confirmed_key": "garbage", "scanned_for": "x:1"},
        {"next": "javascript:alert(1)", "confirm": "maybe"},
    ],
)
def test_it_never_fails_with_a_500_on_bad_post_data(operator, node, url, data):
    args = [] if url in ("nodes:add", "nodes:bulk") else [node.pk]

    response = operator.post(reverse(url, args=args), data)

    assert response.status_code < 500

"""The admin: every changelist renders, the engine's tables are read-only, no per-row queries."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from nodes.models import Node, Role
from sync.models import Node2Sync, SyncAction, SyncRun

pytestmark = pytest.mark.django_db

CHANGELISTS = [
    "admin:nodes_node_changelist",
    "admin:nodes_role_changelist",
    "admin:sync_syncaction_changelist",
    "admin:sync_node2sync_changelist",
    "admin:sync_syncrun_changelist",
]


@pytest.fixture
def actions():
    return [
        SyncAction.objects.create(
            name=f"test-admin-{i}",
            title=f"Test admin {i}",
            priority=100 + i,
            node_status="synchronizing" if i % 2 else "installing",
            timeout=60,
        )
        for i in range(2)
    ]


def make_rows(count: int, actions: list[SyncAction], start: int = 0) -> None:
    """Nodes with a role, a desynchronization per type and a finished run each."""
    now = timezone.now()
    role, _ = Role.objects.get_or_create(name="web")
    for i in range(start, start + count):
        node = Node.objects.create(
            name=f"admin-node-{i:03d}",
            transport="local",
            last_error="failed" if i % 2 else "",
            current_action_id=actions[0].pk,
            lease_owner="worker-1",
            lease_until=now + timedelta(seconds=30),
        )
        node.roles.add(role)
        for action in actions:
            Node2Sync.objects.create(
                node=node, action=action, registered_at=now, next_attempt_at=now, attempts=i % 3
            )
        SyncRun.objects.create(
            node=node,
            action=actions[0],
            worker="worker-1",
            started_at=now - timedelta(seconds=5),
            finished_at=now,
            outcome="success",
            log="line 1\nline <2>",
        )


@pytest.mark.parametrize("url_name", CHANGELISTS)
def test_it_renders_every_changelist(admin_client, actions, url_name):
    make_rows(3, actions)

    response = admin_client.get(reverse(url_name))

    assert response.status_code == 200


@pytest.mark.parametrize("url_name", CHANGELISTS)
def test_it_uses_the_same_number_of_queries_for_3_and_30_rows(admin_client, actions, url_name):
    make_rows(3, actions)
    admin_client.get(reverse(url_name))  # warm up

    with CaptureQueriesContext(connection) as few:
        admin_client.get(reverse(url_name))
    make_rows(27, actions, start=3)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(reverse(url_name))

    assert response.status_code == 200
    assert len(many) == len(few), [q["sql"] for q in many]


def test_it_orders_desyncs_by_node_name_then_priority(admin_client, actions):
    make_rows(2, actions)

    response = admin_client.get(reverse("admin:sync_node2sync_changelist"))

    rows = list(response.context["cl"].result_list)
    assert [(r.node.name, r.action.priority) for r in rows] == [
        ("admin-node-000", 100),
        ("admin-node-000", 101),
        ("admin-node-001", 100),
        ("admin-node-001", 101),
    ]


def test_it_renders_nodes_with_read_only_engine_fields(admin_client, actions):
    make_rows(1, actions)
    node = Node.objects.get()

    response = admin_client.get(reverse("admin:nodes_node_change", args=[node.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="name"' in html
    assert 'name="lease_owner"' not in html
    assert 'name="facts"' not in html


def test_it_shows_desyncs_and_runs_read_only(admin_client, actions):
    make_rows(1, actions)
    desync = Node2Sync.objects.first()
    run = SyncRun.objects.get()

    desync_page = admin_client.get(reverse("admin:sync_node2sync_change", args=[desync.pk]))
    run_page = admin_client.get(reverse("admin:sync_syncrun_change", args=[run.pk]))

    assert desync_page.status_code == 200
    assert run_page.status_code == 200
    assert 'name="state"' not in desync_page.content.decode()
    assert 'name="log"' not in run_page.content.decode()
    assert "line &lt;2&gt;" in run_page.content.decode()
    assert admin_client.get(reverse("admin:sync_node2sync_add")).status_code == 403
    assert admin_client.get(reverse("admin:sync_syncrun_add")).status_code == 403
    resp = admin_client.post(
        reverse("admin:sync_node2sync_change", args=[desync.pk]), {"state": "failed"}
    )
    assert resp.status_code == 403


def test_it_does_not_let_anyone_add_a_synchronizer_type(admin_client, actions):
    assert admin_client.get(reverse("admin:sync_syncaction_add")).status_code == 403
    response = admin_client.get(reverse("admin:sync_syncaction_change", args=[actions[0].pk]))
    assert response.status_code == 200
    # Every column comes from the code (migrate writes it back): nothing is editable.
    for column in ("name", "title", "priority", "node_status", "timeout"):
        assert f'name="{column}"' not in response.content.decode()


def test_a_post_to_a_synchronizer_types_admin_page_changes_nothing(admin_client, actions):
    """An edit of a type's priority would be reverted by the next migrate: refused."""
    action = actions[0]
    url = reverse("admin:sync_syncaction_change", args=[action.pk])
    response = admin_client.post(url, {"title": "Other", "priority": 999, "timeout": 5})
    assert response.status_code == 403
    action.refresh_from_db()
    assert (action.title, action.priority) != ("Other", 999)

"""The cluster nodes page: login, the Status cell contract, htmx polling, query count.

More of the dashboard (filters, the node page, forms, actions, access) is in
tests/test_dashboard*.py; the browser tests are in tests/e2e/.
"""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from nodes.choices import NodeStatus
from nodes.models import Node, Role
from sync.engine import register_desync
from sync.models import Node2Sync, SyncAction

# The page's live poller (not the cluster banner's, which also polls).
LIVE_POLL_URL = r'id="live-poll"[^>]*hx-get="([^"]+)"'

pytestmark = pytest.mark.django_db

URL = "/nodes/"
LIVE = "/nodes/live/"
HTMX = {"HX-Request": "true"}


@pytest.fixture
def user_client(client, django_user_model):
    from django.contrib.auth.models import Group

    from nodes.access import OPERATORS, ensure_groups

    ensure_groups()
    user = django_user_model.objects.create_user("operator", password="secret-pass-1")
    user.groups.add(Group.objects.get(name=OPERATORS))
    client.force_login(user)
    return client


@pytest.fixture
def action():
    return SyncAction.objects.create(
        name="test-web-a", title="Test web A", priority=10, node_status="synchronizing", timeout=60
    )


def status_cell(html: str, node_name: str) -> tuple[str, str]:
    """The opening tag and the body of a node's Status cell."""
    match = re.search(
        rf'(<td\b[^>]*\bdata-node="{re.escape(node_name)}"[^>]*>)(.*?)</td>', html, re.DOTALL
    )
    assert match, f"no status cell for {node_name}"
    return match.group(1), match.group(2)


def make_busy_fleet(count: int, action: SyncAction, start: int = 0) -> None:
    """Nodes with roles, a desynchronization each, and every other one processing."""
    now = timezone.now()
    web, _ = Role.objects.get_or_create(name="web")
    mail, _ = Role.objects.get_or_create(name="mail")
    for i in range(start, start + count):
        node = Node.objects.create(
            name=f"node-{i:03d}",
            transport="local",
            last_error="boom " * 40 if i % 3 == 0 else "",
            last_sync_at=now if i % 2 else None,
            current_action_id=action.pk if i % 2 == 0 else None,
            lease_until=now + timedelta(seconds=60) if i % 2 == 0 else None,
        )
        node.roles.set([web, mail])
        Node2Sync.objects.create(node=node, action=action, registered_at=now, next_attempt_at=now)


def test_it_redirects_anonymous_users_to_the_login_page(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={URL}"


def test_it_renders_the_login_page(client):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_it_shows_nodes_with_their_status_label(user_client):
    Node.objects.create(name="alpha", transport="local", status=NodeStatus.INSTALLING)

    response = user_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Cluster nodes" in html
    assert "alpha" in html
    _, body = status_cell(html, "alpha")
    assert NodeStatus.INSTALLING.label in body
    assert f"#{NodeStatus.INSTALLING.icon}" in body


def test_it_shows_address_pending_count_and_truncated_error(user_client, action):
    node = Node.objects.create(
        name="alpha", transport="ssh", host="10.0.0.5", port=2222, last_error="x" * 300
    )
    register_desync([node], [action])

    html = user_client.get(URL).content.decode()

    assert node.address in html
    assert 'title="' + "x" * 300 + '"' in html
    assert "x" * 59 + "…" in html
    assert re.search(rf'<td id="pending-{node.pk}" class="[^"]*\bnum\b[^"]*">\s*1\s*</td>', html)


def test_it_marks_a_processing_node_busy_with_a_spinner(user_client, action):
    Node.objects.create(
        name="busy",
        transport="local",
        status=NodeStatus.SYNCHRONIZING,
        current_action_id=action.pk,
        lease_owner="worker-1",
        lease_until=timezone.now() + timedelta(seconds=60),
    )
    Node.objects.create(name="idle", transport="local")

    html = user_client.get(URL).content.decode()

    tag, body = status_cell(html, "busy")
    assert 'class="status-cell' in tag
    assert 'aria-busy="true"' in tag
    assert re.search(r'class="[^"]*\bspinner\b', body)
    assert 'role="img"' in body
    assert 'aria-label="Synchronizing: Test web A"' in body
    assert re.search(r">\s*Test web A\s*<", body), "the running type is named in visible text"

    tag, body = status_cell(html, "idle")
    assert 'aria-busy="true"' not in tag
    assert "spinner" not in body


def test_it_does_not_show_a_spinner_when_the_lease_has_expired(user_client, action):
    Node.objects.create(
        name="stale",
        transport="local",
        current_action_id=action.pk,
        lease_until=timezone.now() - timedelta(seconds=1),
    )

    tag, body = status_cell(user_client.get(URL).content.decode(), "stale")

    assert 'aria-busy="true"' not in tag
    assert "spinner" not in body


def test_it_polls_the_live_url_every_second_while_work_waits(user_client, action):
    node = Node.objects.create(name="alpha", transport="local")
    now = timezone.now()
    Node2Sync.objects.create(node=node, action=action, registered_at=now, next_attempt_at=now)

    html = unescape(user_client.get(URL).content.decode())

    assert f'hx-get="{LIVE}?mode=fast&since=' in html
    assert (
        "hx-trigger=\"every 1s [document.visibilityState=='visible'], "
        "every 10s [document.visibilityState=='hidden']\"" in html
    )
    assert "django_htmx/htmx-2.min.js" in html
    assert "//cdn" not in html and "https://" not in html


def test_it_only_watches_slowly_when_the_cluster_is_idle(user_client):
    Node.objects.create(name="alpha", transport="local")

    html = unescape(user_client.get(URL).content.decode())

    assert f'hx-get="{LIVE}?mode=watch&since=' in html
    assert 'hx-trigger="every 10s"' in html


def test_it_answers_a_poll_with_out_of_band_cells_only(user_client, action):
    node = Node.objects.create(name="alpha", transport="local")
    now = timezone.now()
    Node2Sync.objects.create(node=node, action=action, registered_at=now, next_attempt_at=now)

    response = user_client.get(LIVE, headers=HTMX)

    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert "<tbody" not in html
    assert "Cluster panel" not in html
    assert 'type="checkbox"' not in html, "a refresh must never reset the selection"
    tag, _ = status_cell(html, "alpha")
    assert 'hx-swap-oob="true"' in tag
    assert '<div id="status-counts"' in html
    assert 'id="live-poll"' in html


def test_it_keeps_polling_while_a_node_is_processing(user_client, action):
    Node.objects.create(
        name="busy",
        transport="local",
        current_action_id=action.pk,
        lease_until=timezone.now() + timedelta(seconds=60),
    )

    assert user_client.get(LIVE, headers=HTMX).status_code == 200


def test_it_answers_204_while_nothing_changed(user_client, action):
    Node.objects.create(
        name="busy",
        transport="local",
        current_action_id=action.pk,
        lease_until=timezone.now() + timedelta(seconds=60),
    )
    html = user_client.get(URL).content.decode()
    poll_url = re.search(LIVE_POLL_URL, html).group(1).replace("&amp;", "&")

    assert user_client.get(poll_url, headers=HTMX).status_code == 204


def test_it_stops_polling_when_nothing_is_processing_or_pending(user_client):
    Node.objects.create(name="alpha", transport="local")

    response = user_client.get(f"{LIVE}?mode=fast", headers=HTMX)

    assert response.status_code == 286
    html = response.content.decode()
    # The final cells are still sent: htmx swaps them in before it stops, and the slow
    # watcher replaces the poller.
    assert 'data-node="alpha"' in html
    assert 'data-mode="watch"' in html and 'hx-trigger="every 10s"' in html


def test_it_renders_the_full_page_even_when_idle(user_client):
    Node.objects.create(name="alpha", transport="local")

    assert user_client.get(URL).status_code == 200


def test_it_shows_an_empty_table_without_nodes(user_client):
    response = user_client.get(URL)

    assert response.status_code == 200
    assert "No nodes yet." in response.content.decode()


@pytest.mark.parametrize("url", [URL, LIVE], ids=["page", "live"])
def test_it_uses_the_same_number_of_queries_for_3_and_30_nodes(user_client, action, url):
    make_busy_fleet(3, action)
    user_client.get(url, headers=HTMX)  # warm up the session and the template cache

    with CaptureQueriesContext(connection) as few:
        assert user_client.get(url, headers=HTMX).status_code == 200

    make_busy_fleet(27, action, start=3)
    with CaptureQueriesContext(connection) as many:
        response = user_client.get(url, headers=HTMX)

    assert response.status_code == 200
    assert response.content.decode().count('class="status-cell') == 30
    assert len(many) == len(few), [q["sql"] for q in many]


@pytest.mark.django_db
def test_every_page_carries_a_content_security_policy_of_its_own_origin(client, admin_user):
    """Scripts, styles and form targets from the panel only (panel/csp.py); the browser tests
    check that the pages need nothing else."""
    from panel.csp import POLICY

    client.force_login(admin_user)
    for url in ("/accounts/login/", "/nodes/", "/admin/", "/healthz", "/no-such-page/"):
        response = client.get(url)
        assert response["Content-Security-Policy"] == POLICY, url
    assert "script-src 'self'" in POLICY and "unsafe" not in POLICY
    assert "frame-ancestors 'none'" in POLICY and "form-action 'self'" in POLICY


@pytest.mark.django_db
def test_a_session_lasts_twelve_hours_by_default(client, django_user_model):
    django_user_model.objects.create_user("alice", password="correct horse battery staple")
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    assert response.cookies["sessionid"]["max-age"] == 12 * 3600
    assert client.session.get_expiry_age() == 12 * 3600

"""The node page's poll compares a fingerprint of the data, not of rendered HTML: a poll that
changes nothing renders no template and reads a few small rows, however long the logs; a
change still shows; the first load renders the page once."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from nodes.models import Node
from sync.engine import claim_node, register_desync, start_next_run
from sync.models import Outcome, SyncRun

# The page's live poller (not the cluster banner's, which also polls).
LIVE_POLL_URL = r'id="live-poll"[^>]*hx-get="([^"]+)"'

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
LOG = "x" * 20_000


def template_names(response) -> list[str]:
    return [t.name for t in response.templates]


def poll_url_of(html: str) -> str:
    return re.search(LIVE_POLL_URL, html).group(1).replace("&amp;", "&")


@pytest.fixture
def busy(make_node, make_type):
    """A node running a type (a live lease, a running run) with twenty long logs behind it."""
    node = make_node("n1")
    action = make_type("t-hang", timeout=300)
    now = timezone.now()
    SyncRun.objects.bulk_create(
        SyncRun(
            node=node,
            action=action,
            worker="w",
            started_at=now - timedelta(minutes=i + 1),
            finished_at=now - timedelta(minutes=i + 1) + timedelta(seconds=1),
            outcome=Outcome.SUCCESS,
            log=LOG,
        )
        for i in range(25)
    )
    register_desync([node], [action])
    assert claim_node(node.pk, "hanging-worker")
    ticket = start_next_run(node.pk, "hanging-worker")
    SyncRun.objects.filter(pk=ticket.run_id).update(
        current_command="apt-get install -y nc-demo", current_output="Get:1 first", log="step 1"
    )
    return node, ticket.run_id


def test_an_unchanged_poll_renders_no_template_and_reads_a_few_rows(operator, busy):
    node, _ = busy
    page = operator.get(reverse("nodes:detail", args=[node.pk]))
    poll_url = poll_url_of(page.content.decode())
    assert "mode=fast" in poll_url
    operator.get(poll_url, headers=HTMX)  # warm up the session

    with CaptureQueriesContext(connection) as queries:
        response = operator.get(poll_url, headers=HTMX)

    assert response.status_code == 204
    assert template_names(response) == []
    # Beside the session, the user and the permissions: the node with its run counts, its
    # roles, its desyncs and its running run's progress hashes, never the history's logs.
    data = [q["sql"] for q in queries if "django_" not in q["sql"] and "auth_" not in q["sql"]]
    assert len(data) <= 4, data
    assert not any(re.search(r'[`"]log[`"]', sql) and "MD5" not in sql for sql in data)


def test_a_change_of_the_running_output_shows_on_the_next_poll(operator, busy):
    node, run_id = busy
    poll_url = poll_url_of(operator.get(reverse("nodes:detail", args=[node.pk])).content.decode())

    # The same length: a length would not tell this change, the fingerprint must.
    SyncRun.objects.filter(pk=run_id).update(current_output="Get:2 later")
    response = operator.get(poll_url, headers=HTMX)

    assert response.status_code == 200
    assert "nodes/_detail_live.html" in template_names(response)
    assert "Get:2 later" in response.content.decode()
    assert operator.get(poll_url_of(response.content.decode()), headers=HTMX).status_code == 204


def test_a_new_run_and_a_finished_one_show_on_the_next_poll(operator, busy):
    node, run_id = busy
    poll_url = poll_url_of(operator.get(reverse("nodes:detail", args=[node.pk])).content.decode())

    SyncRun.objects.filter(pk=run_id).update(
        outcome=Outcome.SUCCESS, finished_at=timezone.now(), log="all done"
    )

    response = operator.get(poll_url, headers=HTMX)
    assert response.status_code == 200
    assert "all done" in response.content.decode()


def test_the_running_clock_alone_does_not_redraw_the_page(operator, busy):
    """The elapsed time is counted in the browser (static/js/panel.js): the server sends it
    once, and a poll seconds later with nothing else changed still answers 204."""
    node, _ = busy
    html = operator.get(reverse("nodes:detail", args=[node.pk])).content.decode()
    assert re.search(r'class="run-elapsed"[^>]*data-elapsed="[0-9.]+"', html)

    later = timezone.now() + timedelta(seconds=5)
    with mock.patch("django.utils.timezone.now", return_value=later):
        response = operator.get(poll_url_of(html), headers=HTMX)

    assert response.status_code == 204


def test_an_expired_lease_takes_the_spinner_away_on_the_next_poll(operator, busy):
    node, _ = busy
    html = operator.get(reverse("nodes:detail", args=[node.pk])).content.decode()
    assert 'aria-busy="true"' in html

    # The lease runs out (on the database's clock, which decides: the worker stopped renewing).
    Node.objects.filter(pk=node.pk).update(lease_until=timezone.now() - timedelta(minutes=5))
    response = operator.get(poll_url_of(html), headers=HTMX)

    assert response.status_code == 200
    assert 'aria-busy="true"' not in response.content.decode()


def test_a_condition_change_its_digest_and_a_delivery_show_on_the_next_poll(operator, busy):
    """The Alerts card follows the poll: a new change, its digest, a failed delivery."""
    from django.test import override_settings

    from sync.alerts.digests import make_digest
    from sync.models import AlertDelivery, ConditionChange

    node, _ = busy
    detail = reverse("nodes:detail", args=[node.pk])
    poll_url = poll_url_of(operator.get(detail).content.decode())
    assert operator.get(poll_url, headers=HTMX).status_code == 204

    def poll() -> str:
        nonlocal poll_url
        response = operator.get(poll_url, headers=HTMX)
        assert response.status_code == 200
        html = response.content.decode()
        poll_url = poll_url_of(html)
        assert re.search(r'<section id="alerts"[^>]*hx-swap-oob="true"', html)
        return html

    ConditionChange.objects.create(
        at=timezone.now(),
        node=node,
        node_name=node.name,
        condition="unreachable",
        entered=True,
        message="no route to host",
    )
    html = poll()
    assert "no route to host" in html and "Waiting for the next alert digest" in html

    with override_settings(PANEL_ALERT_GATHER_SECONDS=0):
        digest = make_digest([])
    assert digest is not None
    AlertDelivery.objects.create(
        digest=digest,
        channel="c",
        label="json://hooks.example.com/in",
        next_attempt_at=timezone.now(),
    )
    html = poll()
    assert "Waiting for the next alert digest" not in html and digest.title in html

    AlertDelivery.objects.filter(digest=digest).update(attempts=1, last_error="refused by peer")
    assert "refused by peer" in poll()
    assert operator.get(poll_url, headers=HTMX).status_code == 204


def test_the_first_load_renders_the_live_fragments_once(operator, busy):
    node, _ = busy

    response = operator.get(reverse("nodes:detail", args=[node.pk]))

    names = template_names(response)
    assert "nodes/_detail_live.html" not in names
    for fragment in ("nodes/_runs.html", "nodes/_desyncs.html", "nodes/_node_summary.html"):
        assert names.count(fragment) == 1, fragment


def test_the_web_app_has_no_copy_of_the_processing_rule():
    """``Node.is_processing`` and ``processing_q()`` say whether a node is processing; the
    views, filters and counts use them, never the lease's columns."""
    web = Path(__file__).resolve().parent.parent / "web"
    for path in web.rglob("*.py"):
        assert "lease_until" not in path.read_text(), path

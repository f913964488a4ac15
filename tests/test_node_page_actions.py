"""The node page explains a hanging or broken node and offers the action that fixes it first;
cancel and skip work from the page; a running run shows its command, time and output."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.urls import reverse

from nodes.models import Node
from nodes.transports import TransportError
from nodes.transports.ssh import HostKeyChanged
from sync.engine import claim_node, register_desync, run_nodes, start_next_run
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun

pytestmark = pytest.mark.django_db


def page(client, node: Node) -> str:
    response = client.get(reverse("nodes:detail", args=[node.pk]))
    assert response.status_code == 200
    return response.content.decode()


def fail_with(make_node, make_type, error: BaseException) -> Node:
    async def fail(ctx) -> None:
        raise error

    node = make_node("n1")
    register_desync([node], [make_type("t-a", run=fail)])
    run_nodes([node.pk])
    node.refresh_from_db()
    return node


def fix_first(html: str) -> str:
    """The fix-first block: from its start to the card's other actions after it."""
    start = html.index('id="fix-first"')
    return html[start : html.index('id="node-actions"', start)]


def test_it_puts_accepting_the_key_first_when_the_host_key_changed(operator, make_node, make_type):
    node = fail_with(make_node, make_type, HostKeyChanged("host key changed: 127.0.0.1:22"))
    block = fix_first(page(operator, node))
    assert "Host key changed" in block
    assert reverse("nodes:accept_key", args=[node.pk]) in block


def test_it_puts_retry_first_for_a_failing_node_and_says_why(operator, make_node, make_type):
    node = fail_with(make_node, make_type, ValueError("unit nc-demo not found"))
    block = fix_first(page(operator, node))
    assert "T-A failing: unit nc-demo not found" in block
    assert reverse("nodes:retry", args=[node.pk]) in block


def test_it_shows_no_fix_for_a_fine_node(operator, make_node):
    assert 'id="fix-first"' not in page(operator, make_node("n1"))


def test_it_says_what_cancel_and_skip_will_do_before_they_do_it(operator, make_node, make_type):
    node = make_node("n1")
    start_and_hang(node, make_type("t-hang"))
    html = page(operator, node)
    assert "What will happen: the run on n1 is ended now" in html
    assert "What will happen: the chosen desynchronization is dropped without running" in html


def start_and_hang(node, action):
    register_desync([node], [action])
    assert claim_node(node.pk, "hanging-worker")
    return start_next_run(node.pk, "hanging-worker")


def test_it_cancels_from_the_page_and_names_who(operator, make_node, make_type):
    node = make_node("n1")
    ticket = start_and_hang(node, make_type("t-hang"))

    response = operator.post(reverse("nodes:cancel", args=[node.pk]))

    assert response.status_code == 302
    run = SyncRun.objects.get(pk=ticket.run_id)
    assert run.outcome == Outcome.CANCELLED and run.acted_by == "op"
    assert Node2Sync.objects.get().state == DesyncState.HELD
    shown = page(operator, node)
    assert "By op." in shown
    assert "Cancelled by op at " in shown and "Retry now" in shown


def test_it_skips_one_type_from_the_page(operator, make_node, make_type):
    node = make_node("n1")
    keep, skip = make_type("t-keep"), make_type("t-skip")
    register_desync([node], [keep, skip])

    operator.post(reverse("nodes:skip", args=[node.pk]), {"action": skip.pk})

    assert list(Node2Sync.objects.values_list("action__name", flat=True)) == ["t-keep"]
    assert SyncRun.objects.get().outcome == Outcome.SKIPPED


def test_it_answers_a_bad_skip_with_a_message(operator, make_node):
    node = make_node("n1")
    response = operator.post(reverse("nodes:skip", args=[node.pk]), {"action": "x\x00"})
    assert response.status_code == 302


@pytest.mark.parametrize("name", ["cancel", "skip"])
def test_it_refuses_cancel_and_skip_to_readers_and_gets(reader, operator, make_node, name):
    node = make_node("n1")
    assert reader.post(reverse(f"nodes:{name}", args=[node.pk])).status_code == 403
    assert operator.get(reverse(f"nodes:{name}", args=[node.pk])).status_code == 405


def test_it_shows_the_running_command_its_time_and_output(operator, make_node, make_type):
    node = make_node("n1")
    ticket = start_and_hang(node, make_type("t-hang", timeout=300))
    SyncRun.objects.filter(pk=ticket.run_id).update(
        current_command="apt-get install -y nc-demo",
        log="resolving\ndownloading",
        current_output="Get:1 http://deb.example nc-demo 1.0 [20 kB]",
    )

    html = page(operator, node)

    assert "of its 300 s timeout" in html
    assert "apt-get install -y nc-demo" in html
    assert "downloading" in html
    assert "Get:1 http://deb.example nc-demo" in html


def test_it_says_a_run_is_still_finishing_after_maintenance_went_on(operator, make_node, make_type):
    node = make_node("n1")
    start_and_hang(node, make_type("t-hang"))

    response = operator.post(reverse("nodes:maintenance", args=[node.pk]), {"on": "1"})

    assert response.status_code == 302
    html = page(operator, node)
    assert "still finishing" in html
    started = SyncRun.objects.get(outcome=Outcome.RUNNING).started_at
    shown = re.search(r'at the latest until <time datetime="([^"]+)">', html).group(1)
    assert datetime.fromisoformat(shown) == started + timedelta(seconds=30)  # its timeout


def test_maintenance_offers_to_stop_the_running_type_and_does(operator, make_node, make_type):
    """Maintenance during a run: the page offers both choices; "stop it now" cancels the run
    (held, named) in the same action, so "the panel runs nothing here" is true at once."""
    node = make_node("n1")
    ticket = start_and_hang(node, make_type("t-hang"))
    html = page(operator, node)
    assert "Maintenance on, let “T-Hang” finish" in html
    assert "Maintenance on, stop “T-Hang” now" in html

    response = operator.post(reverse("nodes:maintenance", args=[node.pk]), {"on": "1", "stop": "1"})

    assert response.status_code == 302
    run = SyncRun.objects.get(pk=ticket.run_id)
    assert run.outcome == Outcome.CANCELLED and run.acted_by == "op"
    assert Node2Sync.objects.get().state == DesyncState.HELD
    html = page(operator, node)
    assert "still finishing" not in html and "was stopped" in html
    from sync.models import AuditEntry

    assert "Stopped the running type on 1 node(s)." in AuditEntry.objects.latest("pk").summary


@pytest.mark.django_db(transaction=True)
def test_it_publishes_the_command_and_the_log_while_the_run_runs(make_node, make_type):
    node = make_node("n1")
    release = threading.Event()

    async def slow(ctx) -> None:
        ctx.log("step one done")
        command = ["sh", "-c", "echo fetching the index; sleep 30"]
        task = asyncio.ensure_future(ctx.transport.run(command))
        while not release.is_set():
            await asyncio.sleep(0.1)
        task.cancel()
        raise TransportError("stopped by the test")

    register_desync([node], [make_type("t-slow", run=slow, timeout=60)])

    def worker() -> None:
        try:
            run_nodes([node.pk])
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        run = None
        while time.monotonic() < deadline:
            run = SyncRun.objects.filter(outcome=Outcome.RUNNING).first()
            if run and run.current_output:
                break
            time.sleep(0.2)
        assert run is not None
        assert run.current_command == "sh -c 'echo fetching the index; sleep 30'"
        assert run.current_output == "fetching the index\n"
        assert run.log == "step one done"
    finally:
        release.set()
        thread.join(20)
    run = SyncRun.objects.get()
    assert run.current_command == "" and run.current_output == ""
    # It failed: its log keeps what the command it was running had printed.
    assert "last output of `sh -c 'echo fetching the index; sleep 30'`:" in run.log
    assert "fetching the index" in run.log


def test_it_refreshes_the_fix_first_block_with_the_page_for_operators_only(
    operator, reader, make_node, make_type
):
    node = fail_with(make_node, make_type, ValueError("unit nc-demo not found"))
    live = reverse("nodes:detail_live", args=[node.pk])

    body = operator.get(live).content.decode()
    assert 'id="fix-first-slot" hx-swap-oob="true"' in body
    assert "T-A failing: unit nc-demo not found" in body
    assert 'id="fix-first-slot"' not in reader.get(live).content.decode()


def test_it_puts_maintenance_off_first_for_a_node_in_maintenance(operator, make_node):
    node = make_node("n1")
    operator.post(reverse("nodes:maintenance", args=[node.pk]), {"on": "1"})
    block = fix_first(page(operator, node))
    assert "Maintenance off" in block


def test_bulk_maintenance_can_stop_the_running_types(operator, make_node, make_type):
    busy, idle = make_node("n1"), make_node("n2")
    ticket = start_and_hang(busy, make_type("t-hang"))

    response = operator.post(
        reverse("nodes:bulk"), {"action": "maintenance_stop", "ids": [busy.pk, idle.pk]}
    )

    assert response.status_code == 302
    assert SyncRun.objects.get(pk=ticket.run_id).outcome == Outcome.CANCELLED
    assert set(Node.objects.values_list("maintenance", flat=True)) == {True}

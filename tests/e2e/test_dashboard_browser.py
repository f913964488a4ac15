"""The dashboard in a real browser, with the engine really running its synchronizers."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from nodes.choices import NodeStatus
from nodes.models import Node
from nodes.transports import TransportError
from sync.engine import claim_node, register_desync, release_node, start_next_run
from sync.models import Outcome, SyncRun
from tests.e2e.conftest import login

pytestmark = pytest.mark.django_db(transaction=True)

BUSY = '[aria-busy="true"]'


async def _slow(ctx) -> None:
    ctx.log("working slowly")
    await asyncio.sleep(3)


async def _failing(ctx) -> None:
    raise TransportError("cannot reach e2e-host:22: connection refused")


def status_cell(page, name: str):
    return page.locator(f'td.status-cell[data-node="{name}"]')


def mark_page(page) -> None:
    """Tag the document: the tag survives htmx swaps, not a reload."""
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def wait_until_busy(page, name: str, timeout: float = 10) -> float:
    """Wait for the spinner; return the time it was seen (time.time())."""
    expect(status_cell(page, name)).to_have_attribute("aria-busy", "true", timeout=timeout * 1000)
    return time.time()


def test_it_adds_a_local_node_and_shows_its_spinner_then_ready(page, superuser, make_type, engine):
    make_type("e2e-slow", priority=10, run=_slow)
    engine.start()
    login(page, superuser)

    page.get_by_role("link", name="Add node").click()
    page.get_by_label("Name").fill("web-1")
    page.get_by_label("Local (the panel's own server)").check()
    page.get_by_role("button", name="Add the node").click()

    expect(page.locator("#messages")).to_contain_text("Added the node web-1")
    mark_page(page)
    cell = status_cell(page, "web-1")
    seen = wait_until_busy(page, "web-1")
    expect(cell).to_contain_text("E2E-Slow")  # the running type is named in visible text
    expect(cell.locator(".spinner")).to_be_visible()
    run = SyncRun.objects.get(node__name="web-1")
    assert seen - run.started_at.timestamp() <= 2.0, "the spinner showed late"

    expect(cell).not_to_have_attribute("aria-busy", "true", timeout=10_000)
    expect(cell).to_contain_text(NodeStatus.READY.label)
    assert_not_reloaded(page)
    assert Node.objects.get(name="web-1").status == NodeStatus.READY


def test_it_shows_the_spinner_on_the_list_within_2_s_and_then_ready(
    page, operator, make_type, engine, make_node
):
    slow = make_type("e2e-slow", priority=10, run=_slow)
    node = make_node("db-1")
    register_desync([node], [slow])
    login(page, operator)  # lands on the list: work is pending, so it polls fast
    mark_page(page)
    cell = status_cell(page, "db-1")
    expect(cell).not_to_have_attribute("aria-busy", "true")

    engine.start()
    seen = wait_until_busy(page, "db-1")
    run = SyncRun.objects.get(node=node)
    assert seen - run.started_at.timestamp() <= 2.0, "the spinner showed late"
    expect(cell).to_contain_text("E2E-Slow")

    expect(cell).not_to_have_attribute("aria-busy", "true", timeout=10_000)
    expect(cell).to_contain_text(NodeStatus.READY.label)
    expect(page.locator(f"#pending-{node.pk}")).to_have_text("0")
    # Idle: the fast poll got 286 and a slow watcher took its place.
    expect(page.locator("#live-poll")).to_have_attribute("data-mode", "watch")

    assert_not_reloaded(page)


def test_it_watches_an_idle_list_and_polls_fast_again_when_work_appears(
    page, operator, make_type, engine, make_node
):
    slow = make_type("e2e-slow", priority=10, run=_slow)
    node = make_node("db-1")
    engine.start()
    login(page, operator)  # nothing runs or waits: only the slow watcher
    mark_page(page)
    poller = page.locator("#live-poll")
    expect(poller).to_have_attribute("data-mode", "watch")

    # Work registered elsewhere (a command, another user), held by another worker for a
    # moment so that it cannot start and end between two looks of the watcher.
    assert claim_node(node.pk, "other-worker")
    register_desync([node], [slow])
    expect(poller).to_have_attribute("data-mode", "fast", timeout=12_000)
    release_node(node.pk, "other-worker")

    seen = wait_until_busy(page, "db-1", timeout=5)
    assert seen - SyncRun.objects.get(node=node).started_at.timestamp() <= 2.0
    expect(status_cell(page, "db-1")).not_to_have_attribute("aria-busy", "true", timeout=10_000)
    expect(poller).to_have_attribute("data-mode", "watch")
    assert_not_reloaded(page)


def test_it_shows_the_error_of_a_failing_node(page, operator, make_type, engine, make_node):
    failing = make_type("e2e-fail", priority=10, run=_failing)
    node = make_node("mail-1")
    register_desync([node], [failing])
    login(page, operator)
    mark_page(page)

    engine.start()
    error = page.locator(f"#error-{node.pk}")
    expect(error).to_contain_text("connection refused", timeout=10_000)
    expect(page.locator(f"#pending-{node.pk}")).to_contain_text("1 failed")
    assert_not_reloaded(page)

    page.get_by_role("link", name="mail-1").click()
    expect(page.locator("#node-summary")).to_contain_text(
        "E2E-Fail: cannot reach e2e-host:22: connection refused"
    )
    expect(page.locator("#desyncs")).to_contain_text("Failed")
    page.locator("#runs summary").first.click()
    expect(page.locator("#runs .run-log").first).to_contain_text("ERROR: cannot reach")


def test_it_forces_completion_of_a_hanging_node(page, operator, make_type, engine, make_node):
    quick = make_type("e2e-quick", priority=10)
    node = make_node("hang-1")
    assert claim_node(node.pk, "hanging-worker")
    register_desync([node], [quick])
    assert start_next_run(node.pk, "hanging-worker") is not None
    engine.start()  # it leaves the node alone: the hanging worker holds a live lease
    login(page, operator)

    page.get_by_role("link", name="hang-1").click()
    cell = status_cell(page, "hang-1")
    expect(cell).to_have_attribute("aria-busy", "true")
    # Force asks first, saying what will happen, then acts.
    page.locator("summary", has_text="Force completion").click()
    expect(page.get_by_text("What will happen: the panel takes hang-1")).to_be_visible()
    page.get_by_role("button", name="Force completion", exact=True).click()

    expect(page.locator("#messages")).to_contain_text("Forced completion on hang-1")
    expect(cell).not_to_have_attribute("aria-busy", "true", timeout=10_000)
    expect(cell).to_contain_text(NodeStatus.READY.label, timeout=10_000)
    outcomes = list(SyncRun.objects.filter(node=node).order_by("id").values_list("outcome", "log"))
    assert outcomes[0][0] == Outcome.FORCED
    assert "forced-by-operator" in outcomes[0][1]
    expect(page.locator("#runs")).to_contain_text("Forced", timeout=5_000)
    _wait_for(lambda: Node.objects.get(pk=node.pk).status == NodeStatus.READY)
    assert SyncRun.objects.filter(node=node, outcome=Outcome.SUCCESS).exists()


def test_a_running_runs_clock_counts_in_the_browser_without_redrawing_the_page(
    page, operator, make_type, make_node
):
    """The node page's poll answers 204 while the run's data stays the same; its elapsed
    time still counts (static/js/panel.js), and a change of its output still shows."""
    hang = make_type("e2e-hang", priority=10, timeout=300)
    node = make_node("clock-1")
    register_desync([node], [hang])
    assert claim_node(node.pk, "hanging-worker")
    ticket = start_next_run(node.pk, "hanging-worker")
    login(page, operator)
    page.get_by_role("link", name="clock-1").click()
    expect(page.locator("#live-poll")).to_have_attribute("data-mode", "fast")
    page.evaluate("document.getElementById('runs').__kept = true")
    clock = page.locator("#runs .run-elapsed")
    first = clock.inner_text()

    expect(clock).not_to_have_text(first, timeout=5_000)
    time.sleep(2)  # two polls or more, all 204
    assert page.evaluate("document.getElementById('runs').__kept === true"), "runs redrawn"

    SyncRun.objects.filter(pk=ticket.run_id).update(current_output="Get:1 e2e-output")
    expect(page.locator("#runs")).to_contain_text("Get:1 e2e-output", timeout=5_000)
    release_node(node.pk, "hanging-worker")


def test_it_puts_two_selected_nodes_in_maintenance_and_keeps_the_selection_live(
    page, operator, make_type, make_node
):
    action = make_type("e2e-quick", priority=10)
    make_node("a-1"), make_node("b-1")
    c = make_node("busy-1")
    Node.objects.filter(pk=c.pk).update(
        current_action_id=action.pk,
        lease_owner="someone",
        lease_until=timezone.now() + timedelta(seconds=60),
    )
    login(page, operator)  # something runs: the list polls every second
    mark_page(page)
    page.get_by_label("Select a-1").check()
    page.get_by_label("Select b-1").check()
    expect(page.locator("[data-selected-count]")).to_have_text("2 nodes selected")

    # The run ends elsewhere: the next poll swaps busy-1's cell, the selection stays.
    Node.objects.filter(pk=c.pk).update(current_action_id=None, lease_owner="", lease_until=None)
    expect(status_cell(page, "busy-1")).not_to_have_attribute("aria-busy", "true")
    assert_not_reloaded(page)
    expect(page.get_by_label("Select a-1")).to_be_checked()
    expect(page.get_by_label("Select b-1")).to_be_checked()
    expect(page.get_by_label("Select busy-1")).not_to_be_checked()

    page.get_by_role("button", name="Maintenance on").click()

    expect(page.locator("#messages")).to_contain_text("Maintenance on for 2 node(s): a-1, b-1")
    expect(status_cell(page, "a-1")).to_contain_text("Maintenance")
    expect(status_cell(page, "b-1")).to_contain_text("Maintenance")
    expect(status_cell(page, "busy-1")).not_to_contain_text("Maintenance")
    assert set(Node.objects.filter(maintenance=True).values_list("name", flat=True)) == {
        "a-1",
        "b-1",
    }


def test_it_lets_a_read_only_user_look_but_not_act(page, reader, make_node):
    node = make_node("ro-1")
    login(page, reader)

    expect(status_cell(page, "ro-1")).to_contain_text(NodeStatus.READY.label)
    expect(page.get_by_role("link", name="Add node")).to_have_count(0)
    expect(page.locator("input.row-select")).to_have_count(0)
    expect(page.get_by_role("button", name="Maintenance on")).to_have_count(0)

    page.get_by_role("link", name="ro-1").click()
    expect(page.locator("#node-summary")).to_be_visible()
    for name in ("Synchronize again", "Retry now", "Force completion", "Maintenance on"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_role("link", name="Edit")).to_have_count(0)

    # A hand-made POST with a valid CSRF token is still refused on the server.
    token = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    urls = [f"/nodes/{node.pk}/maintenance/", "/nodes/bulk/", f"/nodes/{node.pk}/force/"]
    statuses = page.evaluate(
        """async ([token, id, urls]) => {
            const out = [];
            for (const url of urls) {
                const body = new URLSearchParams({csrfmiddlewaretoken: token, on: "1",
                                                  action: "maintenance_on", ids: id});
                out.push((await fetch(url, {method: "POST", body})).status);
            }
            return out;
        }""",
        [token, str(node.pk), urls],
    )
    assert statuses == [403, 403, 403]
    assert not Node.objects.get(pk=node.pk).maintenance


def _wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.1)


def test_it_remembers_the_dark_mode_choice_and_follows_the_system_by_default(
    browser, live_server, reader
):
    context = browser.new_context(base_url=live_server.url, color_scheme="dark")
    page = context.new_page()
    try:
        page.goto("/accounts/login/")
        html = page.locator("html")
        expect(html).to_have_attribute("data-bs-theme", "dark")  # from prefers-color-scheme
        toggle = page.get_by_role("button", name="Dark mode")
        expect(toggle).to_have_attribute("aria-pressed", "true")

        toggle.click()
        expect(html).to_have_attribute("data-bs-theme", "light")
        login(page, reader)  # another page: the choice is remembered
        expect(html).to_have_attribute("data-bs-theme", "light")
        expect(page.get_by_role("button", name="Dark mode")).to_have_attribute(
            "aria-pressed", "false"
        )
    finally:
        context.close()


def test_it_can_be_used_from_the_keyboard(page, reader, make_node):
    make_node("kb-1")
    login(page, reader)

    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()

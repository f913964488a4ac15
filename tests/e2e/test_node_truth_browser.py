"""One truth per node, as a browser user sees it, against a real sshd node: a node whose sshd
was killed shows no Ready check and is not counted Ready."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from nodes.choices import NodeStatus
from nodes.models import Node
from sync.engine import register_desync
from sync.models import Node2Sync
from tests.e2e.conftest import login
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_node_whose_sshd_was_killed_is_not_ready_nor_counted_ready(
    page, operator, make_type, engine, make_ssh_node, settings
):
    # A short threshold: one failed contact is an outage.
    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 0}
    node, server = make_ssh_node("dies-1")

    async def probe(ctx):
        await ctx.transport.run(["true"])

    # A probe like the built-in one (only test types run here, see conftest).
    probe_type = make_type(
        "e2e-probe", priority=1, node_status=NodeStatus.READY, run=probe, needs=()
    )
    register_desync([node], [probe_type])
    login(page, operator)
    engine.start()

    cell = page.locator(f"#status-{node.pk}")
    ready = page.locator("#count-ready .count-number")
    expect(cell).to_have_attribute("data-shown", "ready", timeout=15_000)
    expect(cell.locator("use[href$='#check-circle']")).to_have_count(1)
    expect(ready).to_have_text("1")
    wait_for(lambda: not Node2Sync.objects.filter(node=node).exists(), timeout=15)  # it ran

    server.stop()  # its sshd killed: nothing listens any more
    register_desync([node], [probe_type])  # as the health pass registers the probe

    # The list notices by itself (its poll), as a person watching it would see.
    expect(cell).to_have_attribute("data-shown", "unreachable", timeout=30_000)
    expect(cell).to_contain_text("Unreachable since")
    expect(cell.locator("use[href$='#check-circle']")).to_have_count(0)
    expect(ready).to_have_text("0")
    stored = Node.objects.get(pk=node.pk)
    assert (stored.shown, stored.usable, stored.status) == ("unreachable", False, "ready")

    page.get_by_role("link", name="dies-1").click()
    summary = page.locator("#node-summary")
    expect(summary).to_contain_text("Unreachable since")
    expect(summary.locator("use[href$='#check-circle']")).to_have_count(0)
    expect(summary).to_contain_text("Last contact")

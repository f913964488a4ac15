"""Bulk changes on the Cluster nodes list in a real browser: a role given to three selected
nodes, after a confirmation whose count leaves out the node that keeps the data through
another role."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from nodes.models import Role
from sync.synchronizers.files import ManagedFile
from tests.e2e.conftest import login

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_role_is_given_to_three_selected_nodes_after_a_counted_confirmation(
    page, operator, make_node
):
    nodes = [make_node(name, transport="ssh", host=f"10.9.0.{i}", port=1)
             for i, name in enumerate(("a-1", "b-1", "c-1"), start=1)]  # fmt: skip
    make_node("d-1", transport="ssh", host="10.9.0.4", port=1)  # not selected
    web, base = Role.objects.create(name="web"), Role.objects.create(name="base")
    ManagedFile.objects.create(path="/etc/web.conf", content="x\n").roles.add(web, base)
    nodes[2].roles.add(base)  # c-1 has the file already, through "base"

    login(page, operator)
    for node in nodes:
        page.get_by_label(f"Select {node.name}").check()
    expect(page.locator("[data-selected-count]")).to_have_text("3 nodes selected")
    page.get_by_label("Role to give or take").select_option("web")
    page.get_by_role("button", name="Give role…").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Give the role web to 3 nodes?")
    expect(page.locator("#roles-effect")).to_have_text("2 nodes will synchronize files.")
    assert not web.nodes.exists()
    page.get_by_role("button", name="Give the role").click()

    page.wait_for_url("**/nodes/")
    expect(page.locator("#messages")).to_contain_text(
        "Gave the role web to 3 node(s): a-1, b-1, c-1. 2 nodes will synchronize files."
    )
    assert sorted(web.nodes.values_list("name", flat=True)) == ["a-1", "b-1", "c-1"]
    expect(page.locator("#node-" + str(nodes[0].pk) + " .node-roles")).to_contain_text("web")

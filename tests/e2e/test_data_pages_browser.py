"""The data pages and the Cluster nodes list as an operator uses them, against real sshd
nodes and a running cluster.

A role, a file and a user are made through the pages; the role is given to three nodes in
one bulk action of the Cluster nodes list; the file and the user reach real sshd nodes (each
with its own /etc and /home, so the test machine keeps its own) through a real django-q
cluster (``manage.py qcluster``) that takes the work the pages' saves registered. Every
confirmation's count is the watches': the node ``keeper`` keeps the file through a second
role, so giving the first role to the three nodes has two of them synchronize files (all
three users), and taking the file off the first role concerns the two others only: they
lose the file for real, ``keeper`` keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from playwright.sync_api import expect

from nodes.choices import Transport
from nodes.models import Node, Role
from sync.synchronizers import update_syncactions
from tests.conftest import process_env
from tests.e2e.conftest import login
from tests.integration.conftest import QCluster, unavailable, wait_for
from tests.integration.private_nodes import PrivateNodeServer
from tests.integration.private_nodes import unavailable as private_nodes_unavailable

pytestmark = pytest.mark.django_db(transaction=True)

KEY = (
    asyncssh.generate_private_key("ssh-ed25519", comment="dev@example")
    .export_public_key()
    .decode()
    .strip()
)
PATH = "/etc/e2e-data-pages.conf"
CONTENT = "greeting = hello from the panel\n"


@dataclass
class Fleet:
    nodes: dict[str, Node]
    servers: dict[str, PrivateNodeServer]
    state_dir: str

    def placed(self, name: str) -> Path:
        """Where the file is on the node ``name``."""
        return self.servers[name].etc / PATH.removeprefix("/etc/")

    def has_user(self, name: str) -> bool:
        server = self.servers[name]
        keys = server.home / "e2edev" / ".ssh" / "authorized_keys"
        return bool(server.passwd("e2edev")) and keys.exists() and KEY in keys.read_text()


@pytest.fixture
def fleet(sshd, settings, tmp_path):
    """Three real nodes: ``web-1``, ``web-2`` and ``keeper`` (role ``base``)."""
    if reason := private_nodes_unavailable():
        unavailable(reason)
    # Where the panel keeps what it put on the node (the node's filesystem is this one but
    # for /etc, /home and /run): the cluster is told the same.
    settings.SYNC_NODE_STATE_DIR = str(tmp_path / "state")
    update_syncactions()  # the built-in types: they run on a node of its own /etc and /home
    nodes, servers = {}, {}
    for name in ("web-1", "web-2", "keeper"):
        server = servers[name] = sshd(PrivateNodeServer)
        nodes[name] = Node.objects.create(
            name=name,
            transport=Transport.SSH,
            host="127.0.0.1",
            port=server.port,
            username="root",
            host_key=server.host_key,
        )
    nodes["keeper"].roles.add(Role.objects.create(name="base"))
    return Fleet(nodes, servers, settings.SYNC_NODE_STATE_DIR)


@pytest.fixture
def cluster(fleet, tmp_path):
    """A real django-q cluster on the test database, started before the pages are used."""
    running = QCluster(tmp_path / "qcluster.log", process_env(PANEL_NODE_STATE_DIR=fleet.state_dir))
    yield running
    running.stop()


def save_and_confirm(page, says: str) -> None:
    """Save, read what it will do, confirm."""
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#what-will-happen")).to_contain_text(says)
    page.get_by_role("button", name="Confirm and save").click()
    expect(page.locator("#messages")).to_contain_text(says)


def test_a_role_a_file_and_a_user_made_on_the_pages_reach_real_nodes_by_one_bulk_action(
    page, operator, fleet, cluster
):
    login(page, operator)

    page.get_by_role("link", name="Roles", exact=True).click()
    page.get_by_role("link", name="Add role").click()
    page.get_by_label("Name").fill("web")
    save_and_confirm(page, "No node will synchronize anything")

    page.get_by_role("link", name="Files", exact=True).click()
    page.get_by_role("link", name="Add managed file").click()
    page.get_by_label("Path").fill(PATH)
    page.get_by_label("Content").fill(CONTENT)
    page.get_by_label("Mode").fill("0640")
    page.get_by_label("web", exact=True).check()
    page.get_by_label("base", exact=True).check()
    save_and_confirm(page, "1 node will synchronize files")  # keeper, through base

    page.get_by_role("link", name="Users", exact=True).click()
    page.get_by_role("link", name="Add managed user").click()
    page.get_by_label("Name").fill("e2edev")
    page.get_by_label("Authorized keys").fill(KEY)
    page.get_by_label("web", exact=True).check()
    save_and_confirm(page, "No node will synchronize anything")

    # One bulk action gives web to the three nodes; keeper has the file through base already.
    page.get_by_role("link", name="Cluster nodes", exact=True).click()
    for name in ("web-1", "web-2", "keeper"):
        page.get_by_label(f"Select {name}").check()
    expect(page.locator("[data-selected-count]")).to_have_text("3 nodes selected")
    page.get_by_label("Role to give or take").select_option("web")
    page.get_by_role("button", name="Give role…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Give the role web to 3 nodes?")
    says = "2 nodes will synchronize files; 3 nodes will synchronize users."
    expect(page.locator("#roles-effect")).to_have_text(says)
    assert not Role.objects.get(name="web").nodes.exists()
    page.get_by_role("button", name="Give the role").click()
    page.wait_for_url("**/nodes/")
    expect(page.locator("#messages")).to_contain_text(
        f"Gave the role web to 3 node(s): keeper, web-1, web-2. {says}"
    )

    for name in ("web-1", "web-2", "keeper"):
        placed = fleet.placed(name)
        wait_for(lambda placed=placed: placed.exists(), timeout=30)
        assert placed.read_text() == CONTENT
        assert placed.stat().st_mode & 0o7777 == 0o640
        wait_for(lambda name=name: fleet.has_user(name), timeout=30)
    web_1 = fleet.nodes["web-1"]
    page.goto(f"/nodes/{web_1.pk}/")
    expect(page.locator(f"#status-{web_1.pk}")).to_contain_text("Ready", timeout=30_000)

    # keeper has the file through base too: taking it off web concerns web-1 and web-2 alone.
    page.goto("/files/")
    page.get_by_role("link", name=PATH).click()
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("web", exact=True).uncheck()
    save_and_confirm(page, "2 nodes will synchronize files")
    for name in ("web-1", "web-2"):
        wait_for(lambda name=name: not fleet.placed(name).exists(), timeout=30)
    assert fleet.placed("keeper").read_text() == CONTENT

"""The data pages as an operator uses them, against a real sshd node and a running cluster.

A role, a file and a user are made through the pages; the role is given to the nodes with
the role page's node picker; the file and the user reach a real sshd node (one with its own
/etc and /home, so the test machine keeps its own) through a real django-q cluster
(``manage.py qcluster``) that takes the work the pages' saves registered. Every
confirmation's count is the watches': the node ``keeper`` (in maintenance: it is counted,
never contacted) keeps the file through a second role, so taking the file off the first role
concerns one node only, and that node then loses the file for real.
"""

from __future__ import annotations

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


@pytest.fixture
def fleet(sshd, settings, tmp_path):
    """The real node ``web-1`` and the node ``keeper`` (role ``base``, in maintenance)."""
    if reason := private_nodes_unavailable():
        unavailable(reason)
    # Where the panel keeps what it put on the node (the node's filesystem is this one but
    # for /etc, /home and /run): the cluster is told the same.
    settings.SYNC_NODE_STATE_DIR = str(tmp_path / "state")
    update_syncactions()  # the built-in types: they run on a node of its own /etc and /home
    server = sshd(PrivateNodeServer)
    node = Node.objects.create(
        name="web-1",
        transport=Transport.SSH,
        host="127.0.0.1",
        port=server.port,
        username="root",
        host_key=server.host_key,
    )
    keeper = Node.objects.create(
        name="keeper", transport=Transport.SSH, host="192.0.2.30", maintenance=True
    )
    keeper.roles.add(Role.objects.create(name="base"))
    return node, server, settings.SYNC_NODE_STATE_DIR


@pytest.fixture
def cluster(fleet, tmp_path):
    """A real django-q cluster on the test database, started before the pages are used."""
    _, _, state_dir = fleet
    running = QCluster(tmp_path / "qcluster.log", process_env(PANEL_NODE_STATE_DIR=state_dir))
    yield running
    running.stop()


def save_and_confirm(page, says: str) -> None:
    """Save, read what it will do, confirm."""
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#what-will-happen")).to_contain_text(says)
    page.get_by_role("button", name="Confirm and save").click()
    expect(page.locator("#messages")).to_contain_text(says)


def test_a_role_a_file_and_a_user_made_on_the_pages_reach_a_real_node(
    page, operator, fleet, cluster
):
    node, server, _ = fleet
    login(page, operator)

    page.get_by_role("link", name="Roles", exact=True).click()
    page.get_by_role("link", name="Add role").click()
    page.get_by_label("Name").fill("web")
    page.get_by_label("web-1").check()
    page.get_by_label("keeper").check()
    save_and_confirm(page, "No node will synchronize anything")

    page.get_by_role("link", name="Files", exact=True).click()
    page.get_by_role("link", name="Add managed file").click()
    page.get_by_label("Path").fill(PATH)
    page.get_by_label("Content").fill("greeting = hello from the panel\n")
    page.get_by_label("Mode").fill("0640")
    page.get_by_label("web", exact=True).check()
    page.get_by_label("base", exact=True).check()
    save_and_confirm(page, "2 nodes will synchronize files")

    page.get_by_role("link", name="Users", exact=True).click()
    page.get_by_role("link", name="Add managed user").click()
    page.get_by_label("Name").fill("e2edev")
    page.get_by_label("Authorized keys").fill(KEY)
    page.get_by_label("web", exact=True).check()
    save_and_confirm(page, "2 nodes will synchronize users")

    placed = server.etc / PATH.removeprefix("/etc/")
    wait_for(lambda: placed.exists(), timeout=30)
    assert placed.read_text() == "greeting = hello from the panel\n"
    assert placed.stat().st_mode & 0o7777 == 0o640
    wait_for(lambda: server.passwd("e2edev"), timeout=30)
    keys = server.home / "e2edev" / ".ssh" / "authorized_keys"
    wait_for(lambda: keys.exists() and KEY in keys.read_text(), timeout=30)
    page.goto(f"/nodes/{node.pk}/")
    expect(page.locator(f"#status-{node.pk}")).to_contain_text("Ready", timeout=30_000)

    # keeper has the file through base too: taking it off web concerns web-1 alone.
    page.goto("/files/")
    page.get_by_role("link", name=PATH).click()
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("web", exact=True).uncheck()
    save_and_confirm(page, "1 node will synchronize files")
    wait_for(lambda: not placed.exists(), timeout=30)

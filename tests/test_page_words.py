"""Every word on the node pages once, true, and whole one click away; each action offered once
and only where it applies; a deletion of managed data says what it does on the nodes."""

from __future__ import annotations

import asyncio
import re
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from nodes.models import Node, Role
from nodes.transports.ssh import SSHTransport
from sync.engine import register_desync
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.services import Service
from sync.synchronizers.software import Package
from sync.synchronizers.users import ManagedUser
from web.templatetags.panel import cut_at_word

pytestmark = pytest.mark.django_db


def page(client, node: Node) -> str:
    response = client.get(reverse("nodes:detail", args=[node.pk]))
    assert response.status_code == 200
    return response.content.decode()


def with_condition(node: Node, condition: str, message: str) -> Node:
    """The node as the engine leaves it with this condition (sync.conditions)."""
    Node.objects.filter(pk=node.pk).update(
        condition=condition,
        conditions=[{"type": condition, "since": timezone.now().isoformat(), "message": message}],
    )
    node.refresh_from_db()
    return node


def text(html: str) -> str:
    """The page's words, tags dropped and blanks folded, as a reader sees them."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def buttons(html: str, name: str) -> int:
    return len(re.findall(r"<button[^>]*>\s*" + re.escape(name) + r"\s*</button>", html))


# --- no doubled prefixes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition, message, shown",
    [
        (
            "host-key-changed",
            "host key changed: 127.0.0.1:22 presented SHA256:abc, the panel pinned SHA256:def.",
            "Host key changed: 127.0.0.1:22 presented SHA256:abc",
        ),
        (
            "unreachable",
            "unreachable: cannot connect to 127.0.0.1:22: Connection refused",
            "Unreachable: cannot connect to 127.0.0.1:22: Connection refused",
        ),
        ("failing", "Units failing: Unit nc-demo not found.", "Units failing: Unit nc-demo"),
        ("stuck", "T-Wait is pending for 31 minutes", "Stuck: T-Wait is pending"),
    ],
)
def test_it_never_doubles_a_conditions_name(operator, make_node, condition, message, shown):
    node = with_condition(make_node("n1"), condition, message)
    words = text(page(operator, node)) + text(operator.get(reverse("nodes:list")).content.decode())
    assert shown in words
    for label in ("Host key changed", "Unreachable", "Failing", "Stuck"):
        assert not re.search(rf"{label}: {label}", words, re.IGNORECASE), words
    assert not re.search(r"Failing: \S+ failing", words)


# --- each action once, only where it applies --------------------------------------------------


def test_it_offers_retry_once_for_a_failing_node(operator, make_node, make_type):
    node = make_node("n1")
    register_desync([node], [make_type("t-a")])
    Node2Sync.objects.filter(node=node).update(state=DesyncState.FAILED, attempts=1)
    node = with_condition(node, "failing", "T-A failing: no such unit")
    assert buttons(page(operator, node), "Retry now") == 1


def test_it_offers_maintenance_off_once(operator, make_node):
    node = make_node("n1")
    operator.post(reverse("nodes:maintenance", args=[node.pk]), {"on": "1"})
    html = page(operator, node)
    assert buttons(html, "Maintenance off") == 1
    assert buttons(html, "Maintenance on") == 0


def test_it_offers_no_retry_cancel_force_or_skip_on_a_node_with_nothing_to_do(operator, make_node):
    html = page(operator, make_node("n1"))
    assert buttons(html, "Retry now") == 0
    for summary in ("Cancel the running synchronizer", "Force completion", "Skip work done"):
        assert summary not in html
    assert "accept the new host key" not in html.lower()
    assert buttons(html, "Maintenance on") == 1


def test_it_offers_the_host_key_once_by_its_own_button_never_a_command(
    operator, make_node, make_type
):
    """The transport's own words, raised by connecting without a pinned key."""
    ssh = make_node("s1")
    Node.objects.filter(pk=ssh.pk).update(transport="ssh", host="127.0.0.1", port=1, host_key="")
    ssh.refresh_from_db()
    with pytest.raises(Exception) as raised:
        asyncio.run(SSHTransport.connect(ssh))
    node = with_condition(ssh, "host-key-changed", str(raised.value))
    html = page(operator, node)
    assert "manage.py" not in html
    assert html.count(reverse("nodes:accept_key", args=[node.pk])) == 1
    assert "Check and accept the new host key" in html


def test_the_accept_page_offers_no_accept_for_the_pinned_key(operator, make_ssh_node):
    node, _ = make_ssh_node("s1")
    html = operator.get(reverse("nodes:accept_key", args=[node.pk])).content.decode()
    assert "nothing to accept" in html
    assert buttons(html, "Accept this key") == 0


# --- cut at a word, whole one click away -------------------------------------------------------


def test_it_cuts_at_a_word():
    assert cut_at_word("alpha beta gamma delta", 13) == "alpha beta…"
    assert cut_at_word("short", 13) == "short"
    # A role's slug is cut where its words join.
    assert cut_at_word("web-frontend-nodes-of-the-west-region", 24) == "web-frontend-nodes-of…"
    assert cut_at_word("database_replicas_which_answer", 24) == "database_replicas_which…"


def test_a_long_role_name_is_cut_at_a_word_with_its_page_one_click_away(operator, make_node):
    name = "web-frontend-nodes-of-the-west-region-behind-proxy"
    role = Role.objects.create(name=name)
    node = make_node("n1")
    node.roles.add(role)
    url = reverse("data:roles_detail", args=[role.pk])
    badge = (
        f'<a class="badge rounded-pill text-bg-light border role-badge" href="{url}"'
        f' title="{name}">web-frontend-nodes-of…</a>'
    )
    for html in (page(operator, node), operator.get(reverse("nodes:list")).content.decode()):
        assert badge in html
    assert name in operator.get(url).content.decode()


def test_a_long_error_is_cut_at_a_word_with_the_whole_of_it_on_the_page(operator, make_node):
    words = " ".join(f"word{i:03d}" for i in range(40))  # 319 characters
    node = with_condition(make_node("n1"), "failing", f"T-A failing: {words}")
    Node.objects.filter(pk=node.pk).update(last_error=words)
    for html in (page(operator, node), operator.get(reverse("nodes:list")).content.decode()):
        cuts = re.findall(r'<span class="cut-short">([^<]*)…</span>', html)
        assert cuts, "nothing was cut"
        for cut in cuts:
            assert re.fullmatch(r".*word\d{3}", cut), f"cut mid-word: {cut!r}"
        assert f'<span class="cut-whole">{words}</span>' in html or words in html
        assert re.search(r"<details[^>]*cut-text", html)


# --- run output -------------------------------------------------------------------------------


@pytest.mark.parametrize("output, says_none", [("fetching the index\n", False), ("", True)])
def test_it_says_no_output_yet_only_when_there_is_none(
    operator, make_node, make_type, output, says_none
):
    node = make_node("n1")
    SyncRun.objects.create(
        node=node,
        action=make_type("t-a"),
        outcome=Outcome.RUNNING,
        started_at=timezone.now(),
        current_output=output,
        worker="w",
    )
    assert ("No output yet." in page(operator, node)) is says_none


# --- deleting managed data says what happens on the nodes --------------------------------------


def ten_nodes_with_a_role(make_node) -> Role:
    role = Role.objects.create(name="web")
    for i in range(10):
        make_node(f"n{i}").roles.add(role)
    make_node("other")  # without the role: not counted
    return role


def admin_delete_page(admin_client, row) -> str:
    opts = row._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_delete", args=[row.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    return text(response.content.decode())


def admin_bulk_delete_page(admin_client, rows) -> str:
    opts = rows[0]._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    response = admin_client.post(
        url, {"action": "delete_selected", "_selected_action": [r.pk for r in rows]}
    )
    assert response.status_code == 200
    return text(response.content.decode())


def test_the_admin_says_userdel_remove_and_on_how_many_nodes(admin_client, make_node):
    role = ten_nodes_with_a_role(make_node)
    alice = ManagedUser.objects.create(name="alice")
    alice.roles.add(role)
    for words in (
        admin_delete_page(admin_client, alice),
        admin_bulk_delete_page(admin_client, [alice]),
    ):
        assert "On 10 nodes" in words
        assert "deleted with userdel --remove, its home folder and everything in it" in words
        assert "took over is locked and its keys taken back" in words


@pytest.mark.parametrize(
    "make_row, said",
    [
        (
            lambda: ManagedFile.objects.create(path="/etc/x.conf", content="x"),
            "Removed from 10 nodes",
        ),
        (lambda: Package.objects.create(name="nginx"), "Nothing is uninstalled on the 10 nodes"),
        (lambda: Service.objects.create(name="nginx"), "Left as it is on the 10 nodes"),
    ],
)
def test_the_admin_says_what_deleting_files_packages_services_does(
    admin_client, make_node, make_row, said
):
    role = ten_nodes_with_a_role(make_node)
    row = make_row()
    row.roles.add(role)
    assert said in admin_delete_page(admin_client, row)
    assert said in admin_bulk_delete_page(admin_client, [row])


def test_the_admin_says_what_deleting_a_role_takes_from_its_nodes(admin_client, make_node):
    role = ten_nodes_with_a_role(make_node)
    ManagedUser.objects.create(name="alice").roles.add(role)
    ManagedFile.objects.create(path="/etc/x.conf", content="x").roles.add(role)
    Package.objects.create(name="nginx").roles.add(role)
    for words in (
        admin_delete_page(admin_client, role),
        admin_bulk_delete_page(admin_client, [role]),
    ):
        assert "On 10 nodes, unless another of a node's roles carries them too" in words
        assert "managed users alice: an account the panel created is deleted with userdel" in words
        assert "/etc/x.conf: removed" in words
        assert "nginx: left installed" in words


def test_the_commands_name_the_command_that_accepts_a_changed_key(make_node):
    """The node's error names no command (the page has its button); `nodes` adds it."""
    from io import StringIO

    from django.core.management import call_command

    with_condition(make_node("s1"), "host-key-changed", "host key changed: 127.0.0.1:22")
    make_node("fine")
    out = StringIO()
    call_command("nodes", stdout=out)
    hints = [line for line in out.getvalue().splitlines() if "acceptkey" in line]
    assert hints == ["s1: if its new key is right, accept it with `manage.py acceptkey s1`"]

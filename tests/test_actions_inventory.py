"""Adding, editing, giving roles and accepting a host key, through the pages, the commands
and the admin, against real sshd nodes: each leaves exactly one audit entry naming the user,
the node, and the before/after that applies (fingerprints, roles, maintenance); and
``manage.py audit --json`` lists them."""

from __future__ import annotations

import json
import re
from io import StringIO

import asyncssh
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from nodes.keys import fingerprint
from nodes.models import Node, Role
from sync.actions import Act
from sync.models import AuditEntry

pytestmark = pytest.mark.django_db

ADD = "/nodes/add/"


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1).replace("&#x27;", "'").replace("&amp;", "&")


def reinstalled_node(make_ssh_node) -> tuple[Node, object]:
    """A node whose pinned key is not the one its server holds now (as after a reinstall):
    set on the row, not by restarting sshd, which races with its own listener."""
    node, server = make_ssh_node("s1")
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    Node.objects.filter(pk=node.pk).update(host_key=key)
    node.refresh_from_db()
    return node, server


def audit_json(*args: str) -> list[dict]:
    out = StringIO()
    call_command("audit", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def only_entry(act: str, user: str = "op") -> AuditEntry:
    [entry] = AuditEntry.objects.all()
    assert (entry.action, entry.actor_name) == (act, user)
    return entry


def node_names(entry: AuditEntry) -> list[str]:
    return sorted(t.name for t in entry.targets.filter(kind="node"))


def test_adding_on_the_page_is_one_entry_with_the_pinned_fingerprint(operator, sshd):
    server = sshd()
    data = {"name": "s1", "transport": "ssh", "host": "127.0.0.1", "port": server.port}
    first = operator.post(ADD, data)
    assert not AuditEntry.objects.exists()  # shown, nothing done yet
    confirm = {
        "confirmed_key": hidden(first.content.decode(), "confirmed_key"),
        "scanned_for": f"127.0.0.1:{server.port}",
    }
    assert operator.post(ADD, {**data, **confirm}).status_code == 302
    entry = only_entry(Act.NODE_ADD)
    assert node_names(entry) == ["s1"]
    assert entry.after["host_key"] == fingerprint(server.host_key)


def test_addnode_takes_a_fingerprint_and_roles_and_is_one_entry(sshd):
    server = sshd()
    Role.objects.create(name="web")
    call_command(
        "addnode",
        "s1",
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--fingerprint",
        fingerprint(server.host_key),
        "--role",
        "web",
        stdout=StringIO(),
    )
    [entry] = AuditEntry.objects.all()
    assert entry.action == Act.NODE_ADD and entry.actor_kind == "command"
    assert entry.after["roles"] == ["web"]
    assert [r.name for r in Node.objects.get(name="s1").roles.all()] == ["web"]


def test_editing_on_the_page_records_what_changed(operator, make_ssh_node):
    node, _ = make_ssh_node("s1")
    Role.objects.create(name="web")
    response = operator.post(
        reverse("nodes:edit", args=[node.pk]),
        {
            "name": "s1-renamed",
            "host": node.host,
            "port": node.port,
            "username": node.username,
            "roles": "web",
            "maintenance": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:1000]
    entry = only_entry(Act.NODE_EDIT)
    assert entry.before == {"maintenance": False, "name": "s1", "roles": []}
    assert entry.after == {"maintenance": True, "name": "s1-renamed", "roles": ["web"]}
    assert node_names(entry) == ["s1-renamed"]
    assert [r["action"] for r in audit_json("--node", "s1-renamed")] == [Act.NODE_EDIT]


def test_accepting_a_key_on_the_page_records_both_fingerprints(operator, make_ssh_node):
    node, server = reinstalled_node(make_ssh_node)
    old = fingerprint(node.host_key)
    url = reverse("nodes:accept_key", args=[node.pk])
    page = operator.get(url).content.decode()
    response = operator.post(
        url, {"key": hidden(page, "key"), "fingerprint": fingerprint(server.host_key)}
    )
    assert response.status_code == 302
    entry = only_entry(Act.ACCEPT_KEY)
    assert entry.before == {"host_key": old}
    assert entry.after == {"host_key": fingerprint(server.host_key)}
    [row] = audit_json("--action", Act.ACCEPT_KEY)
    assert row["actor"] == "op" and row["targets"][0]["name"] == "s1"


def test_acceptkey_is_one_entry_by_the_command(make_ssh_node):
    node, server = reinstalled_node(make_ssh_node)
    call_command(
        "acceptkey", "s1", "--fingerprint", fingerprint(server.host_key), stdout=StringIO()
    )
    [entry] = AuditEntry.objects.all()
    assert entry.action == Act.ACCEPT_KEY and entry.actor_kind == "command"
    assert entry.after == {"host_key": fingerprint(server.host_key)}


# --- The admin ------------------------------------------------------------------------------


def admin_form(node: Node, **changes) -> dict:
    data = {
        "name": node.name,
        "roles": [r.pk for r in node.roles.all()],
        "transport": node.transport,
        "host": node.host,
        "port": node.port,
        "username": node.username,
    }
    data.update(changes)
    return data


def test_an_admin_edit_is_one_entry_and_maintenance_is_read_only_there(admin_client, make_node):
    node = make_node("a", transport="ssh", host="127.0.0.1", port=1, host_key="k")
    role = Role.objects.create(name="web")
    url = reverse("admin:nodes_node_change", args=[node.pk])
    response = admin_client.post(url, admin_form(node, roles=[role.pk], maintenance="on"))
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = only_entry(Act.NODE_ROLES, "admin")
    assert (entry.before, entry.after) == ({"roles": []}, {"roles": ["web"]})
    assert not Node.objects.get(pk=node.pk).maintenance  # not a field here: an action


@pytest.mark.parametrize("on", [True, False])
def test_maintenance_from_the_admin_list_is_one_entry(admin_client, make_node, on):
    a = make_node("a", transport="ssh", host="127.0.0.1", port=1, maintenance=not on)
    b = make_node("b", transport="ssh", host="127.0.0.2", port=1, maintenance=not on)
    response = admin_client.post(
        reverse("admin:nodes_node_changelist"),
        {"action": "maintenance_on" if on else "maintenance_off", "_selected_action": [a.pk, b.pk]},
    )
    assert response.status_code == 302
    entry = only_entry(Act.MAINTENANCE_ON if on else Act.MAINTENANCE_OFF, "admin")
    assert node_names(entry) == ["a", "b"]
    assert set(Node.objects.values_list("maintenance", flat=True)) == {on}


def test_the_admins_delete_and_bulk_delete_go_through_the_action(admin_client, make_node):
    a = make_node("a", transport="ssh", host="127.0.0.1", port=1)
    b = make_node("b", transport="ssh", host="127.0.0.2", port=1)
    c = make_node("c", transport="ssh", host="127.0.0.3", port=1)
    response = admin_client.post(reverse("admin:nodes_node_delete", args=[a.pk]), {"post": "yes"})
    assert response.status_code == 302
    response = admin_client.post(
        reverse("admin:nodes_node_changelist"),
        {"action": "delete_selected", "_selected_action": [b.pk, c.pk], "post": "yes"},
    )
    assert response.status_code == 302
    first, second = AuditEntry.objects.order_by("pk")
    assert (first.action, node_names(first)) == (Act.NODE_DELETE, ["a"])
    assert (second.action, node_names(second)) == (Act.NODE_DELETE, ["b", "c"])
    assert not Node.objects.exists()


def test_deleting_a_desync_in_the_admin_is_a_recorded_skip(admin_client, make_node, make_type):
    from sync.engine import register_desync
    from sync.models import Node2Sync, Outcome, SyncRun

    node = make_node("a", transport="ssh", host="127.0.0.1", port=1)
    register_desync([node], [make_type("t-a")])
    row = Node2Sync.objects.get()
    response = admin_client.post(
        reverse("admin:sync_node2sync_delete", args=[row.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    entry = only_entry(Act.SKIP, "admin")
    assert node_names(entry) == ["a"]
    assert SyncRun.objects.get().outcome == Outcome.SKIPPED
    node.refresh_from_db()
    assert node.status == "ready" and not Node2Sync.objects.exists()


def test_roles_deleted_in_the_admin_are_recorded(admin_client):
    role = Role.objects.create(name="web")
    response = admin_client.post(
        reverse("admin:nodes_role_delete", args=[role.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    entry = only_entry(Act.DATA_DELETE, "admin")
    assert [(t.kind, t.name) for t in entry.targets.all()] == [("role", "web")]


def test_audit_json_lists_key_maintenance_and_edits_from_the_pages_and_the_admin(
    operator, admin_client, make_ssh_node
):
    node, server = reinstalled_node(make_ssh_node)
    url = reverse("nodes:accept_key", args=[node.pk])
    page = operator.get(url).content.decode()
    key = {"key": hidden(page, "key"), "fingerprint": fingerprint(server.host_key)}
    assert operator.post(url, key).status_code == 302
    node.refresh_from_db()
    edit = {"name": "s1", "host": node.host, "port": node.port, "username": "root"}
    assert operator.post(reverse("nodes:edit", args=[node.pk]), edit).status_code == 302
    maintenance = reverse("nodes:maintenance", args=[node.pk])
    assert operator.post(maintenance, {"on": "1"}).status_code == 302
    changelist = reverse("admin:nodes_node_changelist")
    off = {"action": "maintenance_off", "_selected_action": [node.pk]}
    assert admin_client.post(changelist, off).status_code == 302
    Role.objects.create(name="web")
    data = admin_form(node, roles=[Role.objects.get().pk])
    response = admin_client.post(reverse("admin:nodes_node_change", args=[node.pk]), data)
    assert response.status_code == 302

    rows = audit_json("--node", "s1")
    assert [(r["action"], r["actor"]) for r in rows] == [
        (Act.NODE_ROLES, "admin"),
        (Act.MAINTENANCE_OFF, "admin"),
        (Act.MAINTENANCE_ON, "op"),
        (Act.NODE_EDIT, "op"),
        (Act.ACCEPT_KEY, "op"),
    ]
    assert rows[-1]["after"] == {"host_key": fingerprint(server.host_key)}
    assert rows[0]["after"] == {"roles": ["web"]}


def addnode_exit(*args: str) -> tuple[int, str]:
    try:
        call_command("addnode", *args, stdout=StringIO(), stderr=StringIO())
    except CommandError as e:
        return e.returncode, str(e)
    return 0, ""


def test_addnode_refuses_another_fingerprint_and_adds_nothing(sshd):
    server = sshd()
    wrong = "SHA256:" + "A" * 43
    code, message = addnode_exit(
        "s1", "--host", "127.0.0.1", "--port", str(server.port), "--fingerprint", wrong
    )
    assert code == 1 and wrong in message and fingerprint(server.host_key) in message
    assert "nothing was pinned" in message
    assert not Node.objects.exists() and not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("s1", "--host", "127.0.0.1", "--role", "nosuch"),
        ("s1", "--host", "127.0.0.1", "--fingerprint", "MD5:aa"),
        ("s1", "--local", "--fingerprint", "SHA256:" + "A" * 43),
    ],
)
def test_addnode_refuses_bad_roles_and_fingerprints_with_exit_2(args):
    code, message = addnode_exit(*args)
    assert code == 2 and "\n" not in message
    assert not Node.objects.exists()


def test_the_edit_form_can_stop_the_running_type_with_maintenance(
    operator, make_ssh_node, make_type
):
    """Maintenance from the edit form takes the same choice as the node page's button."""
    from sync.engine import claim_node, register_desync, start_next_run
    from sync.models import DesyncState, Node2Sync, Outcome, SyncRun

    node, _ = make_ssh_node("s1")
    register_desync([node], [make_type("t-hang")])
    assert claim_node(node.pk, "hanging-worker")
    ticket = start_next_run(node.pk, "hanging-worker")
    edit = {"name": "s1", "host": node.host, "port": node.port, "username": node.username}
    response = operator.post(
        reverse("nodes:edit", args=[node.pk]), {**edit, "maintenance": "on", "stop_running": "on"}
    )
    assert response.status_code == 302, response.content.decode()[:1000]
    assert SyncRun.objects.get(pk=ticket.run_id).outcome == Outcome.CANCELLED
    assert Node2Sync.objects.get(node=node).state == DesyncState.HELD
    assert Node.objects.get(pk=node.pk).maintenance

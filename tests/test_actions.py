"""Every operator action, through every path that offers it (page, command, admin), leaves
exactly one audit entry naming who acted and the right targets."""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from nodes.choices import Transport
from nodes.models import Node, Role
from sync import engine
from sync.actions import Act, change_roles
from sync.actor import Actor, ActorKind
from sync.engine import claim_node, register_desync
from sync.models import AuditEntry, Node2Sync, Outcome, SyncAction, SyncRun
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.software import Package
from sync.validators import sha256_text

pytestmark = pytest.mark.django_db


def command(*args: str) -> None:
    call_command(*args, stdout=StringIO(), stderr=StringIO())


@dataclass(frozen=True)
class Path:
    """One way to do one action: ``run(client, nodes)`` with two nodes ``a`` and ``b``."""

    act: str
    via: str  # page, command or admin
    run: Callable
    targets: tuple[str, ...] = ("a",)


def post(client, name: str, node: Node, **data) -> None:
    response = client.post(reverse(f"nodes:{name}", args=[node.pk]), data)
    assert response.status_code == 302, response.content.decode()[:500]


def bulk(client, action: str, nodes: list[Node], **data) -> None:
    response = client.post(
        reverse("nodes:bulk"), {"action": action, "ids": [n.pk for n in nodes], **data}
    )
    assert response.status_code == 302, response.content.decode()[:500]


def admin_list_action(client, action: str, nodes: list[Node], **data) -> None:
    response = client.post(
        reverse("admin:nodes_node_changelist"),
        {"action": action, "_selected_action": [n.pk for n in nodes], **data},
    )
    assert response.status_code == 302, response.content.decode()[:500]


def admin_post(client, url: str, data: dict) -> None:
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]


def admin_skip(client, node: Node) -> None:
    row = Node2Sync.objects.get(node=node)
    admin_post(client, reverse("admin:sync_node2sync_delete", args=[row.pk]), {"post": "yes"})


def admin_roles(client, node: Node) -> None:
    role = Role.objects.create(name="web")
    data = {"name": node.name, "roles": [role.pk], "transport": node.transport}
    data.update(host=node.host, port=node.port, username=node.username)
    admin_post(client, reverse("admin:nodes_node_change", args=[node.pk]), data)


def force_by_command(node: Node) -> None:
    claim_node(node.pk, "hanging-worker")
    with pytest.raises(CommandError):  # the run itself fails: nothing listens there
        command("nodesync", "--node", node.name, "--force")


PATHS = [
    Path(Act.REGISTER, "page", lambda c, a, b: post(c, "resync", a)),
    Path(Act.REGISTER, "page bulk", lambda c, a, b: bulk(c, "resync", [a, b]), ("a", "b")),
    Path(Act.REGISTER, "command desync", lambda c, a, b: command("desync", "a", "b"), ("a", "b")),
    Path(Act.RETRY, "page", lambda c, a, b: post(c, "retry", a)),
    Path(Act.FORCE, "page", lambda c, a, b: post(c, "force", a)),
    Path(Act.FORCE, "command nodesync", lambda c, a, b: force_by_command(a)),
    Path(Act.CANCEL, "page", lambda c, a, b: post(c, "cancel", a)),
    Path(
        Act.CANCEL,
        "command nodesync",
        lambda c, a, b: command("nodesync", "--node", "a", "--cancel"),
    ),
    Path(Act.SKIP, "page", lambda c, a, b: post(c, "skip", a)),
    Path(
        Act.SKIP, "command nodesync", lambda c, a, b: command("nodesync", "--node", "a", "--skip")
    ),
    Path(Act.MAINTENANCE_ON, "page", lambda c, a, b: post(c, "maintenance", a, on="1")),
    Path(Act.MAINTENANCE_OFF, "page", lambda c, a, b: post(c, "maintenance", a, on="0")),
    Path(
        Act.MAINTENANCE_ON,
        "page bulk",
        lambda c, a, b: bulk(c, "maintenance_on", [a, b]),
        ("a", "b"),
    ),
    Path(Act.NODE_DELETE, "page", lambda c, a, b: post(c, "delete", a)),
    Path(
        Act.NODE_DELETE,
        "page bulk",
        lambda c, a, b: bulk(c, "delete", [a, b], confirm="on"),
        ("a", "b"),
    ),
    Path(Act.SKIP, "admin", lambda c, a, b: admin_skip(c, a)),
    Path(Act.NODE_ROLES, "admin", lambda c, a, b: admin_roles(c, a)),
    Path(
        Act.MAINTENANCE_ON,
        "admin",
        lambda c, a, b: admin_list_action(c, "maintenance_on", [a, b]),
        ("a", "b"),
    ),
    Path(
        Act.NODE_DELETE,
        "admin",
        lambda c, a, b: admin_post(
            c, reverse("admin:nodes_node_delete", args=[a.pk]), {"post": "yes"}
        ),
    ),
    Path(
        Act.NODE_DELETE,
        "admin bulk",
        lambda c, a, b: admin_list_action(c, "delete_selected", [a, b], post="yes"),
        ("a", "b"),
    ),
]


@pytest.fixture
def two_nodes(make_node, make_type) -> tuple[Node, Node]:
    # Port 1 on the loopback refuses at once: a run there fails fast.
    a = make_node("a", transport=Transport.SSH, host="127.0.0.1", port=1, host_key="k")
    b = make_node("b", transport=Transport.SSH, host="127.0.0.2", port=1, host_key="k")
    register_desync([a, b], [make_type("t-a")])
    return a, b


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.act}-{p.via}")
def test_each_path_leaves_one_entry_naming_who_and_what(path, operator, admin_client, two_nodes):
    a, b = two_nodes
    by_admin = path.via.startswith("admin")
    path.run(admin_client if by_admin else operator, a, b)
    [entry] = AuditEntry.objects.all()
    assert entry.action == path.act
    node_targets = sorted(t.name for t in entry.targets.filter(kind="node"))
    assert node_targets == sorted(path.targets)
    assert [t.object_id for t in entry.targets.filter(kind="node").order_by("name")] == [
        {"a": a.pk, "b": b.pk}[name] for name in sorted(path.targets)
    ]
    if path.via.startswith(("page", "admin")):
        who = "admin" if by_admin else "op"
        assert (entry.actor_kind, entry.actor_name) == (ActorKind.USER, who)
        assert entry.user.username == who
        assert entry.address == "127.0.0.1"
    else:
        assert entry.actor_kind == ActorKind.COMMAND and entry.user is None
        assert entry.actor_name == f"{getpass.getuser()} ({path.via.split()[1]})"


def test_an_entry_outlives_the_nodes_and_the_user_it_names(operator, two_nodes, django_user_model):
    a, _ = two_nodes
    SyncRun.objects.create(
        node=a,
        action=SyncAction.objects.get(name="t-a"),
        worker="w",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        outcome=Outcome.SUCCESS,
        log="done",
    )
    post(operator, "delete", a)
    django_user_model.objects.filter(username="op").delete()
    [entry] = AuditEntry.objects.all()
    assert entry.user is None and entry.actor_name == "op"
    assert [(t.kind, t.object_id, t.name) for t in entry.targets.all()] == [("node", a.pk, "a")]
    assert entry.before["nodes"]["a"]["address"] == "root@127.0.0.1:1"
    [run] = entry.before["nodes"]["a"]["runs"]
    assert (run["type"], run["outcome"]) == ("t-a", "success") and "done" in run["log_tail"]
    assert not Node2Sync.objects.filter(node_id=a.pk).exists()


def test_a_refused_action_writes_nothing(reader, two_nodes):
    a, _ = two_nodes
    response = reader.post(reverse("nodes:maintenance", args=[a.pk]), {"on": "1"})
    assert response.status_code == 403
    assert not AuditEntry.objects.exists()


def audit_json(*args: str) -> list[dict]:
    out = StringIO()
    call_command("audit", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def test_audit_lists_page_actions_with_filters(operator, two_nodes):
    a, b = two_nodes
    post(operator, "maintenance", a, on="1")
    post(operator, "delete", b)
    rows = audit_json()
    assert [r["action"] for r in rows] == [Act.NODE_DELETE, Act.MAINTENANCE_ON]
    assert rows[1]["actor"] == "op" and rows[1]["address"] == "127.0.0.1"
    assert rows[1]["before"] == {"maintenance": {"a": False}}
    assert rows[1]["after"] == {"maintenance": {"a": True}}
    assert [r["action"] for r in audit_json("--node", "b")] == [Act.NODE_DELETE]
    assert [r["action"] for r in audit_json("--action", Act.MAINTENANCE_ON)] == [Act.MAINTENANCE_ON]
    assert audit_json("--since", "1h") == rows
    assert audit_json("--since", "2999-01-01") == []


@pytest.mark.parametrize("since", ["yesterday", "7x", "", "-1d"])
def test_audit_refuses_a_bad_since_in_one_line(since):
    with pytest.raises(CommandError) as e:
        call_command("audit", f"--since={since}", stdout=StringIO())
    assert e.value.returncode == 2 and "\n" not in str(e.value)


def test_old_entries_are_pruned_by_the_health_pass(operator, two_nodes, settings):
    a, _ = two_nodes
    post(operator, "maintenance", a, on="1")
    post(operator, "maintenance", a, on="0")
    old, new = AuditEntry.objects.order_by("pk")
    AuditEntry.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=31))
    settings.PANEL_AUDIT_DAYS = 30
    assert engine.check_health()["audit_pruned"] == 1
    assert list(AuditEntry.objects.all()) == [new]


def shown(html: str) -> list[str]:
    """The actions of the entries the audit page lists."""
    return re.findall(r"<td><code>([^<]+)</code></td>", html)


def test_read_only_users_browse_and_filter_the_audit_page(operator, reader, nobody, two_nodes):
    a, b = two_nodes
    post(operator, "maintenance", a, on="1")
    post(operator, "delete", b)
    html = reader.get(reverse("audit")).content.decode()
    assert shown(html) == [Act.NODE_DELETE, Act.MAINTENANCE_ON] and "127.0.0.1" in html
    assert 'href="/audit/"' in reader.get(reverse("nodes:list")).content.decode()
    assert shown(reader.get(reverse("audit"), {"node": "b"}).content.decode()) == [Act.NODE_DELETE]
    response = reader.get(reverse("audit"), {"since": "soon", "action": "nope"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Ignored" in html and len(shown(html)) == 2
    assert nobody.get(reverse("audit")).status_code == 403


# --- Managed data through the admin -------------------------------------------------------


def file_form(role: Role, content: str, **extra) -> dict:
    return {
        "path": "/tmp/pt-audit.conf",
        "content": content,
        "mode": "0640",
        "owner": "root",
        "group": "root",
        "roles": [role.pk],
        **extra,
    }


def test_file_edits_in_the_admin_record_old_and_new_checksums(admin_client):
    role = Role.objects.create(name="web")
    response = admin_client.post(reverse("admin:sync_managedfile_add"), file_form(role, "one\n"))
    assert response.status_code == 302
    f = ManagedFile.objects.get()
    response = admin_client.post(
        reverse("admin:sync_managedfile_change", args=[f.pk]), file_form(role, "two\n")
    )
    assert response.status_code == 302
    response = admin_client.post(
        reverse("admin:sync_managedfile_delete", args=[f.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    added, changed, deleted = AuditEntry.objects.order_by("pk")
    assert [e.action for e in (added, changed, deleted)] == [
        Act.DATA_ADD,
        Act.DATA_CHANGE,
        Act.DATA_DELETE,
    ]
    assert {e.actor_name for e in (added, changed, deleted)} == {"admin"}
    one, two = (f"sha256:{sha256_text(t)}" for t in ("one\n", "two\n"))
    assert added.before is None and added.after["content"] == one
    assert (changed.before["content"], changed.after["content"]) == (one, two)
    assert "content" in changed.summary and "one" not in json.dumps(changed.after)
    assert deleted.before["/tmp/pt-audit.conf"]["content"] == two
    for entry in (added, changed, deleted):
        assert [(t.kind, t.object_id) for t in entry.targets.all()] == [("managed file", f.pk)]


def test_the_admins_bulk_delete_of_data_is_one_entry(admin_client):
    for name in ("pt-a", "pt-b"):
        Package.objects.create(name=name)
    response = admin_client.post(
        reverse("admin:sync_package_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": list(Package.objects.values_list("pk", flat=True)),
            "post": "yes",
        },
    )
    assert response.status_code == 302
    [entry] = AuditEntry.objects.all()
    assert entry.action == Act.DATA_DELETE and not Package.objects.exists()
    assert sorted(t.name for t in entry.targets.all()) == ["pt-a", "pt-b"]


def test_data_changes_show_before_and_after_only_to_who_may_view_that_data(
    admin_client, reader, django_user_model
):
    role = Role.objects.create(name="web")
    admin_client.post(reverse("admin:sync_managedfile_add"), file_form(role, "one\n"))
    checksum = f"sha256:{sha256_text('one' + chr(10))}"
    assert checksum in admin_client.get(reverse("audit")).content.decode()
    # Read-only users may view files (their paths, modes, owners): they see the change too.
    assert checksum in reader.get(reverse("audit")).content.decode()
    viewer = django_user_model.objects.create_user("nodes-only")
    viewer.user_permissions.add(Permission.objects.get(codename="view_node"))
    nodes_only = Client()
    nodes_only.force_login(viewer)
    html = nodes_only.get(reverse("audit")).content.decode()
    assert shown(html) == [Act.DATA_ADD] and checksum not in html


def test_giving_and_taking_roles_is_one_entry_with_each_roles_nodes(two_nodes, django_user_model):
    a, b = two_nodes
    web, db = Role.objects.create(name="web"), Role.objects.create(name="db")
    a.roles.add(db)
    op = django_user_model.objects.get_or_create(username="op2", is_superuser=True)[0]
    result = change_roles(Actor.for_user(op), [a, b], give=[web], take=[db])
    entry = AuditEntry.objects.get(pk=result.entry_id)
    assert entry.before == {"role_nodes": {"web": [], "db": ["a"]}}
    assert entry.after == {"role_nodes": {"web": ["a", "b"], "db": []}}
    assert sorted(t.name for t in entry.targets.all()) == ["a", "b", "db", "web"]


def test_giving_a_role_of_secret_files_is_refused_and_writes_nothing(
    operator, two_nodes, django_user_model
):
    a, _ = two_nodes
    secret = Role.objects.create(name="vault")
    ManagedFile.objects.create(path="/etc/s.env", content="k\n", secret=True).roles.add(secret)
    actor = Actor.for_user(django_user_model.objects.get(username="op"))
    with pytest.raises(PermissionDenied):
        change_roles(actor, [a], give=[secret])
    assert not a.roles.exists() and not AuditEntry.objects.exists()


def test_the_node_page_links_to_its_audit_trail(reader, two_nodes):
    a, _ = two_nodes
    html = reader.get(reverse("nodes:detail", args=[a.pk])).content.decode()
    assert 'href="/audit/?node=a"' in html


def test_the_audit_page_costs_the_same_queries_for_3_and_30_entries(reader, two_nodes):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from sync.actions import set_maintenance

    a, b = two_nodes
    actor = Actor.command("test")

    def queries_for(count: int) -> int:
        AuditEntry.objects.all().delete()
        for i in range(count):
            set_maintenance(actor, [a, b], bool(i % 2))
        with CaptureQueriesContext(connection) as seen:
            assert reader.get(reverse("audit")).status_code == 200
        return len(seen.captured_queries)

    queries_for(3)  # warm up (sessions, permissions)
    assert queries_for(3) == queries_for(30)

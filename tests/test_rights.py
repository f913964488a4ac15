"""The rights rules of ``sync.rights`` through every door: the pages, the admin, the commands.

Two rules, each asked of an Operator, a Read-only user and a superuser:

- the panel's own server (``Node.is_panel_host``): only superusers change it, give it roles,
  delete it, or point another node at its address;
- the data a node's roles carry: giving a role, adding a node with roles, moving an SSH node
  or accepting its key needs view rights on all of it, ``view_secret`` for secret files.

Nothing here reaches a node: each refusal happens before any scan (hosts are in 192.0.2.0/24,
TEST-NET-1, which nothing answers). The rules that need a real key are in
tests/test_panel_host.py.
"""

from __future__ import annotations

from html import unescape
from io import StringIO

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from nodes.access import OPERATORS, ensure_groups
from nodes.choices import NodeCondition
from nodes.models import Node, Role
from sync.actor import Actor
from sync.rights import (
    NodeChange,
    check_node_change,
    delivery_refusals,
    may_deliver_roles,
    node_change_refusals,
)
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.software import Package
from sync.synchronizers.users import ManagedUser

pytestmark = pytest.mark.django_db

ADD = "/nodes/add/"
DATA_VIEW_PERMS = ("view_managedfile", "view_manageduser", "view_package", "view_service")


@pytest.fixture
def superuser(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("boss"))
    return client


def operator_user(django_user_model, name: str = "op2", *perms: str, staff: bool = False):
    ensure_groups()
    user = django_user_model.objects.create_user(name, is_staff=staff)
    user.groups.add(Group.objects.get(name=OPERATORS))
    if perms:
        user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
    return user


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def data_operator(django_user_model) -> Client:
    """An operator who may view every kind of role data, but not secret file content."""
    return logged_in(operator_user(django_user_model, "data-op", *DATA_VIEW_PERMS))


@pytest.fixture
def staff_operator(django_user_model) -> Client:
    return logged_in(operator_user(django_user_model, "staff-op", staff=True))


@pytest.fixture
def panel_host(make_node) -> Node:
    """The panel's own server as an SSH node (the systemd units' recommended set-up)."""
    node = make_node("panel", transport="ssh", host="192.0.2.10", port=22, is_panel_host=True)
    node.roles.set([Role.objects.create(name="base")])
    return node


@pytest.fixture
def ssh_node(make_node) -> Node:
    return make_node("other", transport="ssh", host="192.0.2.20", port=22)


@pytest.fixture
def secret_role() -> Role:
    role = Role.objects.create(name="app")
    secret = ManagedFile.objects.create(
        path="/etc/app/secrets.env", content="TOKEN=s3cr3t\n", mode=0o600, secret=True
    )
    secret.roles.add(role)
    return role


@pytest.fixture
def files_role() -> Role:
    role = Role.objects.create(name="web")
    ManagedFile.objects.create(path="/etc/motd", content="hello\n").roles.add(role)
    return role


def text(response) -> str:
    return unescape(response.content.decode())


def form_errors(response) -> str:
    form = response.context["form"]
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def edit_data(node: Node, **extra) -> dict:
    data = {"name": node.name, "host": node.host, "port": node.port, "username": node.username}
    return {**data, **extra}


# --- The panel's own server: pages ------------------------------------------------------------


def test_it_refuses_the_edit_page_of_the_panels_ssh_node_to_an_operator(operator, panel_host):
    Role.objects.create(name="web")
    url = reverse("nodes:edit", args=[panel_host.pk])

    page = operator.get(url)
    response = operator.post(url, edit_data(panel_host, name="renamed", roles=["web"]))

    for answer in (page, response):
        assert answer.status_code == 403
        assert "Only a superuser may change the panel's own server" in text(answer)
    panel_host.refresh_from_db()
    assert panel_host.name == "panel" and [r.name for r in panel_host.roles.all()] == ["base"]


def test_it_lets_a_superuser_give_the_panels_ssh_node_roles(superuser, panel_host):
    Role.objects.create(name="web")

    response = superuser.post(
        reverse("nodes:edit", args=[panel_host.pk]), edit_data(panel_host, roles=["web"])
    )

    assert response.status_code == 302
    assert [r.name for r in panel_host.roles.all()] == ["web"]


def test_it_refuses_every_change_to_a_read_only_user(reader, panel_host, ssh_node):
    for url, data in (
        (reverse("nodes:edit", args=[ssh_node.pk]), edit_data(ssh_node, name="x")),
        (reverse("nodes:delete", args=[panel_host.pk]), {}),
        (reverse("nodes:accept_key", args=[ssh_node.pk]), {}),
        (ADD, {"name": "x", "transport": "ssh", "host": "192.0.2.30"}),
    ):
        assert reader.post(url, data).status_code == 403, url
    assert Node.objects.count() == 2 and Node.objects.filter(name="other").exists()


def test_it_refuses_an_operator_a_node_at_the_panels_address(operator, panel_host):
    data = {"name": "sneaky", "transport": "ssh", "host": "192.0.2.10", "port": 22}

    response = operator.post(ADD, {**data, "username": "root"})

    assert response.status_code == 200
    assert "point a node at the panel's own server" in form_errors(response)
    assert "192.0.2.10:22 is the address of panel" in form_errors(response)
    assert not Node.objects.filter(name="sneaky").exists()


def test_it_refuses_an_operator_to_move_a_node_to_the_panels_address(
    operator, panel_host, ssh_node
):
    response = operator.post(
        reverse("nodes:edit", args=[ssh_node.pk]), edit_data(ssh_node, host="192.0.2.10")
    )

    assert response.status_code == 200
    assert "point a node at the panel's own server" in form_errors(response)
    assert Node.objects.get(pk=ssh_node.pk).host == "192.0.2.20"


def test_the_address_rule_ignores_the_case_of_the_host_but_not_the_port(
    django_user_model, panel_host
):
    user = operator_user(django_user_model)
    change = NodeChange(adding=True, roles=())
    other_port = Node(name="x", transport="ssh", host="192.0.2.10", port=2222)
    assert node_change_refusals(user, other_port, change) == []
    panel_host.host = "Panel.Example"
    panel_host.save()
    same = Node(name="y", transport="ssh", host="panel.example", port=22)
    assert node_change_refusals(user, same, change)[0].field == "host"


def test_it_refuses_an_operator_to_delete_the_panels_node(operator, panel_host, make_node):
    local = make_node("local-panel")
    for node in (panel_host, local):
        url = reverse("nodes:delete", args=[node.pk])
        page, response = operator.get(url), operator.post(url)
        assert page.status_code == 403 and response.status_code == 403
    assert Node.objects.count() == 2


def test_it_refuses_an_operator_to_delete_the_panels_node_in_bulk(operator, panel_host, ssh_node):
    data = {"action": "delete", "ids": [panel_host.pk, ssh_node.pk], "confirm": "1"}

    response = operator.post(reverse("nodes:bulk"), data)

    assert response.status_code == 302
    assert "Nothing was deleted" in messages_of(response)[0]
    assert Node.objects.count() == 2


def test_it_lets_a_superuser_delete_the_panels_node(superuser, panel_host):
    response = superuser.post(reverse("nodes:delete", args=[panel_host.pk]))

    assert response.status_code == 302
    assert not Node.objects.exists()


def test_it_refuses_an_operator_to_accept_a_key_of_the_panels_node(operator, panel_host):
    url = reverse("nodes:accept_key", args=[panel_host.pk])

    for answer in (operator.get(url), operator.post(url, {"key": "x", "fingerprint": "y"})):
        assert answer.status_code == 403
        assert "panel's own server" in text(answer)


def test_it_still_lets_an_operator_resync_and_pause_the_panels_node(operator, panel_host):
    for name, data in (("resync", {}), ("maintenance", {"on": "1"})):
        response = operator.post(reverse(f"nodes:{name}", args=[panel_host.pk]), data)
        assert response.status_code == 302, name
    panel_host.refresh_from_db()
    assert panel_host.maintenance


# --- The panel's own server: the admin --------------------------------------------------------


def admin_change_url(node: Node) -> str:
    return reverse("admin:nodes_node_change", args=[node.pk])


def test_the_admin_shows_the_panels_node_read_only_to_staff(staff_operator, panel_host):
    page = staff_operator.get(admin_change_url(panel_host))
    response = staff_operator.post(admin_change_url(panel_host), {"name": "renamed"})

    assert page.status_code == 200 and 'name="name"' not in page.content.decode()
    assert response.status_code == 403
    assert Node.objects.get(pk=panel_host.pk).name == "panel"


def test_the_admin_refuses_staff_to_delete_the_panels_node(staff_operator, panel_host, ssh_node):
    single = staff_operator.post(
        reverse("admin:nodes_node_delete", args=[panel_host.pk]), {"post": "yes"}
    )
    bulk = staff_operator.post(
        reverse("admin:nodes_node_changelist"),
        {"action": "delete_selected", "_selected_action": [panel_host.pk], "post": "yes"},
    )

    assert single.status_code == 403
    assert bulk.status_code == 403
    assert Node.objects.filter(pk=panel_host.pk).exists()


def test_only_a_superuser_sets_the_flag_in_the_admin(staff_operator, superuser, ssh_node):
    data = {"name": "other", "transport": "ssh", "is_panel_host": "on", "maintenance": ""}

    staff_page = staff_operator.get(admin_change_url(ssh_node)).content.decode()
    staff_operator.post(admin_change_url(ssh_node), data)
    assert 'name="is_panel_host"' not in staff_page
    assert not Node.objects.get(pk=ssh_node.pk).is_panel_host

    full = {**data, "host": "192.0.2.20", "port": "22", "username": "root"}
    response = superuser.post(admin_change_url(ssh_node), full)
    assert response.status_code == 302
    assert Node.objects.get(pk=ssh_node.pk).is_panel_host


# --- The panel's own server: commands ----------------------------------------------------------


def test_bootstrap_flags_the_local_node_as_the_panels_own(settings, tmp_path):
    settings.DATA_DIR = tmp_path

    call_command("bootstrap", stdout=StringIO())

    assert list(Node.objects.values_list("transport", "is_panel_host")) == [("local", True)]


def test_the_commands_pass_the_rules_with_full_rights(panel_host, secret_role):
    change = NodeChange(roles=(secret_role,), address=True, accepting_key=True)

    command = Actor.command("addnode").subject
    check_node_change(command, panel_host, change)  # raises nothing
    assert may_deliver_roles(command, [secret_role])


# --- Data a user may deliver: pages -----------------------------------------------------------


def test_it_refuses_a_user_to_add_a_node_with_a_role_of_files_they_may_not_view(
    django_user_model, files_role
):
    """Node rights alone (no Operators group, so no view right on files) deliver no files."""
    user = django_user_model.objects.create_user("nodes-only")
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="nodes",
            codename__in=["view_node", "add_node", "change_node", "view_role"],
        )
    )
    data = {"name": "mine", "transport": "ssh", "host": "192.0.2.30", "roles": ["web"]}

    response = logged_in(user).post(ADD, data)

    assert response.status_code == 200
    errors = response.context["form"].errors["roles"]
    assert "managed files that you may not view" in " ".join(errors)
    assert "key_step" not in response.context or response.context["key_step"] is None
    assert not Node.objects.filter(name="mine").exists()


def test_it_refuses_an_operator_to_give_a_role_of_secret_files(
    data_operator, ssh_node, secret_role
):
    response = data_operator.post(
        reverse("nodes:edit", args=[ssh_node.pk]), edit_data(ssh_node, roles=["app"])
    )

    assert response.status_code == 200
    assert "secret managed files whose content you may not view" in form_errors(response)
    assert not ssh_node.roles.exists()


def test_it_lets_an_operator_give_a_role_whose_data_they_may_view(data_operator, ssh_node):
    role = Role.objects.create(name="tools")
    Package.objects.create(name="htop").roles.add(role)
    ManagedUser.objects.create(name="alice").roles.add(role)
    ManagedFile.objects.create(path="/etc/tools.conf", content="x\n").roles.add(role)

    response = data_operator.post(
        reverse("nodes:edit", args=[ssh_node.pk]), edit_data(ssh_node, roles=["tools"])
    )

    assert response.status_code == 302
    assert [r.name for r in ssh_node.roles.all()] == ["tools"]


def test_the_operators_group_may_view_role_data_but_not_secret_content(operator, ssh_node):
    user = django_user_model_of(operator)
    for codename in DATA_VIEW_PERMS:
        assert user.has_perm(f"sync.{codename}"), codename
    assert not user.has_perm("sync.view_secret_managedfile")


def django_user_model_of(client: Client):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(pk=client.session["_auth_user_id"])


def test_it_lets_an_operator_give_a_role_that_carries_nothing(operator, ssh_node):
    Role.objects.create(name="empty")

    response = operator.post(
        reverse("nodes:edit", args=[ssh_node.pk]), edit_data(ssh_node, roles=["empty"])
    )

    assert response.status_code == 302


def test_it_lets_an_operator_rename_a_node_whose_roles_they_may_not_view(
    operator, ssh_node, secret_role
):
    ssh_node.roles.set([secret_role])

    response = operator.post(
        reverse("nodes:edit", args=[ssh_node.pk]),
        edit_data(ssh_node, name="renamed", roles=["app"]),
    )

    assert response.status_code == 302
    assert Node.objects.get(pk=ssh_node.pk).name == "renamed"


@pytest.mark.parametrize(
    "field, value", [("host", "192.0.2.99"), ("port", 2222), ("username", "x")]
)
def test_it_refuses_an_operator_to_move_a_node_with_secret_data(
    data_operator, ssh_node, secret_role, field, value
):
    ssh_node.roles.set([secret_role])

    response = data_operator.post(
        reverse("nodes:edit", args=[ssh_node.pk]),
        edit_data(ssh_node, roles=["app"], **{field: value}),
    )

    assert response.status_code == 200
    assert "secret managed files" in form_errors(response)
    assert getattr(Node.objects.get(pk=ssh_node.pk), field) == getattr(ssh_node, field)


def test_it_refuses_an_operator_to_accept_a_key_for_a_node_with_secret_data(
    data_operator, ssh_node, secret_role
):
    ssh_node.roles.set([secret_role])
    url = reverse("nodes:accept_key", args=[ssh_node.pk])

    for answer in (data_operator.get(url), data_operator.post(url, {"key": "x"})):
        assert answer.status_code == 403
        assert "secret managed files" in text(answer)


def test_a_user_with_view_secret_may_deliver_secret_files(django_user_model, secret_role):
    user = operator_user(django_user_model, "trusted", *DATA_VIEW_PERMS, "view_secret_managedfile")
    plain = operator_user(django_user_model, "plain", *DATA_VIEW_PERMS)

    assert may_deliver_roles(user, [secret_role])
    assert not may_deliver_roles(plain, [secret_role])
    assert delivery_refusals(plain, [secret_role])[0].field == "roles"


# --- Data a user may deliver: the admin -------------------------------------------------------


def test_the_admin_refuses_staff_a_role_whose_secret_files_they_may_not_view(
    staff_operator, ssh_node, secret_role
):
    data = {"name": "other", "transport": "ssh", "roles": [secret_role.pk], "maintenance": ""}

    response = staff_operator.post(admin_change_url(ssh_node), data)

    assert response.status_code == 200
    assert "secret managed files whose content you may not view" in response.content.decode()
    assert not ssh_node.roles.exists()


def test_the_admin_keeps_the_address_and_key_read_only(staff_operator, superuser, ssh_node):
    data = {
        "name": "other",
        "transport": "ssh",
        "host": "192.0.2.99",
        "port": "2222",
        "username": "mallory",
        "host_key": "ssh-ed25519 AAAA",
        "maintenance": "",
    }

    staff_page = staff_operator.get(admin_change_url(ssh_node)).content.decode()
    super_page = superuser.get(admin_change_url(ssh_node)).content.decode()
    staff_operator.post(admin_change_url(ssh_node), data)

    for field in ("host", "port", "username", "host_key"):
        assert f'name="{field}"' not in staff_page, field
    assert 'name="host"' in super_page and 'name="host_key"' not in super_page
    stored = Node.objects.get(pk=ssh_node.pk)
    assert (stored.host, stored.port, stored.username, stored.host_key) == (
        "192.0.2.20",
        22,
        "root",
        "",
    )
    superuser.post(admin_change_url(ssh_node), data)
    assert Node.objects.get(pk=ssh_node.pk).host_key == ""  # pinned only with proof


def test_the_admin_refuses_staff_to_add_nodes(staff_operator):
    assert staff_operator.get(reverse("admin:nodes_node_add")).status_code == 403


# --- Secret files in the admin ----------------------------------------------------------------


@pytest.fixture
def file_staff(django_user_model) -> Client:
    """Staff who may view and change managed files, but not secret content."""
    perms = ("view_managedfile", "change_managedfile")
    return logged_in(operator_user(django_user_model, "files-staff", *perms, staff=True))


def file_url(row: ManagedFile) -> str:
    return reverse("admin:sync_managedfile_change", args=[row.pk])


def test_the_admin_hides_secret_content_without_view_secret(file_staff, superuser, secret_role):
    secret = ManagedFile.objects.get(secret=True)

    page = file_staff.get(file_url(secret)).content.decode()
    full = superuser.get(file_url(secret)).content.decode()

    assert "s3cr3t" not in page
    assert "/etc/app/secrets.env" in page and "0600" in page and "app" in page
    assert "shown only to users allowed to view secret files" in page
    assert "s3cr3t" in full


def test_the_admin_refuses_changes_to_secret_files_without_view_secret(file_staff, secret_role):
    secret = ManagedFile.objects.get(secret=True)
    other = Role.objects.create(name="mine")
    data = {
        "path": "/tmp/leak",
        "content": "",
        "mode": "0644",
        "owner": "root",
        "group": "root",
        "roles": [other.pk],
    }

    response = file_staff.post(file_url(secret), data)

    assert response.status_code == 403
    secret.refresh_from_db()
    assert secret.path == "/etc/app/secrets.env" and secret.content == "TOKEN=s3cr3t\n"
    assert list(secret.roles.all()) == [secret_role]


def test_the_admin_search_does_not_look_into_content_without_view_secret(
    file_staff, superuser, secret_role
):
    url = reverse("admin:sync_managedfile_changelist")

    assert "secrets.env" not in file_staff.get(url, {"q": "s3cr3t"}).content.decode()
    assert "secrets.env" in superuser.get(url, {"q": "s3cr3t"}).content.decode()


def test_the_admin_shows_plain_content_and_does_not_let_staff_mark_secrets(file_staff):
    plain = ManagedFile.objects.create(path="/etc/motd", content="hello there\n")

    page = file_staff.get(file_url(plain)).content.decode()

    assert "hello there" in page and 'name="content"' in page
    assert 'name="secret"' not in page


def test_the_node_page_offers_an_operator_no_change_of_the_panels_node(
    operator, superuser, panel_host
):
    # A changed key, so that accepting one applies (the page offers it only then).
    Node.objects.filter(pk=panel_host.pk).update(
        condition=NodeCondition.HOST_KEY_CHANGED,
        conditions=[
            {
                "type": NodeCondition.HOST_KEY_CHANGED,
                "since": timezone.now().isoformat(),
                "message": "host key changed",
            }
        ],
    )
    links = [
        reverse(name, args=[panel_host.pk])
        for name in ("nodes:edit", "nodes:delete", "nodes:accept_key")
    ]
    detail = reverse("nodes:detail", args=[panel_host.pk])

    as_operator = operator.get(detail).content.decode()
    as_superuser = superuser.get(detail).content.decode()

    assert not [link for link in links if link in as_operator]
    assert all(link in as_superuser for link in links)


# --- Secret files through the data actions (what the admin and the coming API call) ------------


def test_the_data_action_refuses_a_change_of_a_secret_file_to_a_non_viewer(
    django_user_model, secret_role
):
    from django.core.exceptions import PermissionDenied

    from sync.actions.data import save_data
    from sync.synchronizers.files import ManagedFileForm

    perms = ("view_managedfile", "change_managedfile", "add_managedfile")
    user = operator_user(django_user_model, "editor", *perms)
    secret = ManagedFile.objects.get(secret=True)
    moved = {"path": "/tmp/leak", "content": "", "mode": "0644", "owner": "root", "group": "root"}
    change = ManagedFileForm({**moved, "roles": [secret_role.pk]}, instance=secret)
    unmark = ManagedFileForm({**moved, "path": "/etc/new", "secret": ""})
    mark = ManagedFileForm({**moved, "path": "/etc/other", "secret": "on"})
    assert change.is_valid() and unmark.is_valid() and mark.is_valid()

    with pytest.raises(PermissionDenied, match="may change"):
        save_data(Actor.for_user(user), change)
    with pytest.raises(PermissionDenied, match="mark one secret"):
        save_data(Actor.for_user(user), mark)
    save_data(Actor.for_user(user), unmark)  # a plain new file: theirs to add

    secret.refresh_from_db()
    assert secret.path == "/etc/app/secrets.env" and secret.content == "TOKEN=s3cr3t\n"
    assert not ManagedFile.objects.filter(path="/etc/other").exists()

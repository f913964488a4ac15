"""The data pages (roles, packages, files, users, services) and the rights on each.

Operators change, Read-only users look, users without the view permission see nothing; a
secret file's content is for ``view_secret_managedfile``; data that reaches the panel's own
server is changed by superusers only. Every save and deletion is confirmed first with what
it will do on the nodes, counted by the watches: a node that keeps the data through another
role is not counted.
"""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from nodes.models import Node, Role
from sync.models import AuditEntry, Node2Sync
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.services import Service
from sync.synchronizers.software import Package
from sync.synchronizers.users import ManagedUser
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

KINDS = ("roles", "packages", "files", "users", "services")


def text(response) -> str:
    return unescape(response.content.decode())


def url(kind: str, view: str, row=None) -> str:
    return reverse(f"data:{kind}_{view}", args=[row.pk] if row is not None else [])


def confirm(client: Client, address: str, data: dict):
    """Submit a form as a person does: once, read what it will do, confirm."""
    first = client.post(address, data)
    assert first.status_code == 200, text(first)
    digest = re.search(r'name="confirmed" value="([0-9a-f]+)"', first.content.decode())
    assert digest, f"no confirmation: {text(first)[:2000]}"
    return first, client.post(address, {**data, "confirmed": digest.group(1)})


def said(response) -> str:
    """What the confirmation says will happen."""
    match = re.search(r'id="what-will-happen">(.*?)</div>', text(response), re.S)
    assert match, "no confirmation shown"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


@pytest.fixture
def superuser(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("boss"))
    return client


@pytest.fixture
def secret_viewer(django_user_model) -> Client:
    from nodes.access import OPERATORS

    client = client_for(django_user_model, "keeper", OPERATORS)
    user = django_user_model.objects.get(username="keeper")
    user.user_permissions.add(Permission.objects.get(codename="view_secret_managedfile"))
    return client


@pytest.fixture
def fleet(make_node):
    """Nodes a (roles web, base) and b (web); the file /etc/app.conf on web and base."""
    web, base = Role.objects.create(name="web"), Role.objects.create(name="base")
    a = make_node("a", transport="ssh", host="192.0.2.1")
    b = make_node("b", transport="ssh", host="192.0.2.2")
    a.roles.set([web, base])
    b.roles.set([web])
    conf = ManagedFile.objects.create(path="/etc/app.conf", content="x=1\n")
    conf.roles.set([web, base])
    Node2Sync.objects.all().delete()
    return {"web": web, "base": base, "a": a, "b": b, "conf": conf}


def file_data(row: ManagedFile | None = None, **changes) -> dict:
    data = {"path": "/etc/new.conf", "content": "", "mode": "0644", "owner": "root"}
    data["group"] = "root"
    if row is not None:
        data.update(path=row.path, content=row.content, mode=f"{row.mode:04o}", owner=row.owner)
        data.update(group=row.group, roles=[r.pk for r in row.roles.all()])
        if row.secret:
            data["secret"] = "on"
    data.update(changes)
    return data


# --- Looking ---------------------------------------------------------------------------------


def test_read_only_users_see_every_list_and_page(reader, fleet):
    ManagedUser.objects.create(name="alice").roles.add(fleet["web"])
    Package.objects.create(name="nginx").roles.add(fleet["web"])
    Service.objects.create(name="nginx").files.add(fleet["conf"])
    for kind in KINDS:
        listing = reader.get(url(kind, "list"))
        assert listing.status_code == 200, kind
        assert "Add " not in text(listing).split("<main", 1)[1].split("<table", 1)[0]
    html = text(reader.get(url("files", "list")))
    assert "/etc/app.conf" in html and "0644" in html and "root:root" in html and "web" in html
    page = reader.get(url("files", "detail", fleet["conf"]))
    assert "x=1" in text(page) and ">Edit<" not in text(page)
    role_page = text(reader.get(url("roles", "detail", fleet["web"])))
    assert "/etc/app.conf" in role_page and "alice" in role_page and "nginx" in role_page
    assert ">a<" in role_page and ">b<" in role_page


def test_the_header_links_to_every_data_page(reader):
    html = text(reader.get(reverse("nodes:list")))
    for kind in KINDS:
        assert f'href="{url(kind, "list")}"' in html


def test_users_without_the_view_permission_see_no_data_page(nobody, fleet):
    for kind in KINDS:
        assert nobody.get(url(kind, "list")).status_code == 403
    assert nobody.get(url("files", "detail", fleet["conf"])).status_code == 403


def test_read_only_users_change_nothing(reader, fleet):
    conf = fleet["conf"]
    for address in (url("files", "add"), url("files", "edit", conf), url("files", "delete", conf)):
        assert reader.get(address).status_code == 403
        assert reader.post(address, file_data(conf, content="changed")).status_code == 403
    conf.refresh_from_db()
    assert conf.content == "x=1\n" and not AuditEntry.objects.exists()


def test_lists_search_filter_by_role_and_paginate(reader, fleet):
    Package.objects.bulk_create([Package(name=f"pkg{i:02}") for i in range(60)])
    Package.objects.get(name="pkg07").roles.add(fleet["base"])
    first = text(reader.get(url("packages", "list")))
    assert "pkg00" in first and "pkg59" not in first and "1–50 of 60" in first
    assert "pkg59" in text(reader.get(url("packages", "list"), {"page": 2}))
    found = text(reader.get(url("packages", "list"), {"q": "KG3"}))
    assert "pkg30" in found and "pkg31" in found and "pkg07" not in found
    by_role = text(reader.get(url("packages", "list"), {"role": "base"}))
    assert "pkg07" in by_role and "pkg08" not in by_role
    assert "Nothing matches" in text(reader.get(url("packages", "list"), {"role": "nope"}))


def test_a_missing_or_huge_id_is_404(reader):
    assert reader.get("/files/999/").status_code == 404
    assert reader.get(f"/files/{2**70}/").status_code == 404


# --- Saving, with what it will do -------------------------------------------------------------


def test_a_save_is_confirmed_with_the_nodes_it_concerns_then_made(operator, fleet):
    web = fleet["web"]
    first, done = confirm(
        operator, url("files", "add"), file_data(content="hello\n", roles=[web.pk])
    )
    assert "2 nodes will synchronize files" in said(first)
    assert done.status_code == 302
    row = ManagedFile.objects.get(path="/etc/new.conf")
    assert done.url == url("files", "detail", row)
    pairs = set(Node2Sync.objects.values_list("node__name", "action__name"))
    assert pairs == {("a", "files"), ("b", "files")}
    entry = AuditEntry.objects.get()
    assert entry.actor_name == "op" and "2 nodes will synchronize files" in entry.summary


def test_the_confirmation_changes_nothing(operator, fleet):
    first = operator.post(url("files", "add"), file_data(roles=[fleet["web"].pk]))
    assert "Confirm and save" in text(first)
    assert not ManagedFile.objects.filter(path="/etc/new.conf").exists()
    assert not Node2Sync.objects.exists() and not AuditEntry.objects.exists()


def test_a_node_that_keeps_the_file_through_another_role_is_not_counted(operator, fleet):
    """a keeps /etc/app.conf through base: taking web off the file concerns b only."""
    conf, base = fleet["conf"], fleet["base"]
    first, done = confirm(operator, url("files", "edit", conf), file_data(conf, roles=[base.pk]))
    assert said(first) == "What saving will do 1 node will synchronize files. " + (
        "Check the form above; changing anything asks again."
    )
    assert done.status_code == 302
    assert set(Node2Sync.objects.values_list("node__name", flat=True)) == {"b"}


def test_data_changed_after_the_confirmation_is_confirmed_again(operator, fleet):
    conf = fleet["conf"]
    first = operator.post(url("files", "edit", conf), file_data(conf, content="y=2\n"))
    digest = re.search(r'name="confirmed" value="([0-9a-f]+)"', first.content.decode()).group(1)
    again = operator.post(
        url("files", "edit", conf), file_data(conf, content="z=3\n", confirmed=digest)
    )
    assert again.status_code == 200 and "Confirm and save" in text(again)
    conf.refresh_from_db()
    assert conf.content == "x=1\n"


def test_bad_input_is_a_form_error(operator, fleet):
    response = operator.post(url("files", "add"), file_data(mode="999", path="etc"))
    assert response.status_code == 200
    assert "Enter an octal mode" in text(response)
    assert not ManagedFile.objects.filter(path="etc").exists()


def test_a_role_is_made_with_its_nodes_and_the_count_is_the_watches(operator, fleet):
    """A new role given to a and b that carries nothing yet: nothing to synchronize."""
    first, done = confirm(
        operator, url("roles", "add"), {"name": "mail", "nodes": [fleet["a"].pk, fleet["b"].pk]}
    )
    assert "No node will synchronize anything" in said(first)
    assert done.status_code == 302
    mail = Role.objects.get(name="mail")
    assert set(mail.nodes.values_list("name", flat=True)) == {"a", "b"}
    assert AuditEntry.objects.get().after["nodes"] == ["a", "b"]


def test_taking_a_role_from_a_node_counts_only_what_it_loses(operator, fleet):
    """b leaves base? b has no base. a leaves web: it keeps the file through base, and
    loses the user alice."""
    web = fleet["web"]
    ManagedUser.objects.create(name="alice").roles.add(web)
    Node2Sync.objects.all().delete()
    first, done = confirm(
        operator, url("roles", "edit", web), {"name": "web", "nodes": [fleet["b"].pk]}
    )
    assert "1 node will synchronize users" in said(first)
    assert "files" not in said(first)
    assert set(Node2Sync.objects.values_list("node__name", "action__name")) == {("a", "users")}


def test_deleting_a_user_says_userdel_on_its_nodes(operator, fleet):
    alice = ManagedUser.objects.create(name="alice")
    alice.roles.add(fleet["web"])
    page = operator.get(url("users", "delete", alice))
    assert page.status_code == 200
    words = said(page)
    assert "2 nodes will synchronize users" in words
    assert "On 2 nodes" in words and "userdel --remove" in words
    assert ManagedUser.objects.filter(pk=alice.pk).exists()
    done = operator.post(url("users", "delete", alice))
    assert done.status_code == 302 and not ManagedUser.objects.exists()
    assert AuditEntry.objects.get().action == "data.delete"


def test_deleting_a_role_counts_the_nodes_that_lose_something(operator, fleet):
    """Deleting base: a keeps the file through web; nothing else is on base."""
    page = operator.get(url("roles", "delete", fleet["base"]))
    assert "No node will synchronize anything" in said(page)
    assert operator.post(url("roles", "delete", fleet["base"])).status_code == 302
    assert not Role.objects.filter(name="base").exists() and not Node2Sync.objects.exists()


def test_a_service_page_lists_the_files_that_reload_it(operator, fleet):
    first, done = confirm(
        operator,
        url("services", "add"),
        {"name": "nginx", "roles": [fleet["web"].pk], "files": [fleet["conf"].pk]},
    )
    assert "2 nodes will synchronize services" in said(first)
    service = Service.objects.get(name="nginx")
    assert "/etc/app.conf" in text(operator.get(url("services", "detail", service)))
    assert "nginx" in text(operator.get(url("files", "detail", fleet["conf"])))


# --- Secret files ------------------------------------------------------------------------------


@pytest.fixture
def secret(fleet) -> ManagedFile:
    row = ManagedFile.objects.create(
        path="/etc/app/secret.env", content="TOKEN=s3cr3t\n", mode=0o600, secret=True
    )
    row.roles.add(fleet["web"])
    return row


def test_secret_content_is_shown_only_with_view_secret(operator, reader, secret_viewer, secret):
    for client in (operator, reader):
        html = text(client.get(url("files", "detail", secret)))
        assert "/etc/app/secret.env" in html and "0600" in html
        assert "s3cr3t" not in html and "Secret: shown only to users" in html
    assert "s3cr3t" in text(secret_viewer.get(url("files", "detail", secret)))


def test_only_a_secret_viewer_changes_a_secret_file(operator, secret_viewer, secret):
    assert operator.get(url("files", "edit", secret)).status_code == 403
    response = operator.post(url("files", "edit", secret), file_data(secret, content="leak"))
    assert response.status_code == 403
    assert operator.get(url("files", "delete", secret)).status_code == 403
    secret.refresh_from_db()
    assert secret.content == "TOKEN=s3cr3t\n"
    _, done = confirm(secret_viewer, url("files", "edit", secret), file_data(secret, mode="0640"))
    assert done.status_code == 302
    secret.refresh_from_db()
    assert secret.mode == 0o640 and secret.secret


def test_an_operator_cannot_mark_a_file_secret_or_not(operator, fleet):
    conf = fleet["conf"]
    page = text(operator.get(url("files", "edit", conf)))
    assert re.search(r'<input[^>]*name="secret"[^>]*disabled', page)
    confirm(operator, url("files", "edit", conf), file_data(conf, secret="on", content="y\n"))
    conf.refresh_from_db()
    assert conf.content == "y\n" and not conf.secret


# --- The panel's own server ----------------------------------------------------------------


@pytest.fixture
def panel_host(make_node, fleet) -> Node:
    node = make_node("panel", transport="ssh", host="192.0.2.10", is_panel_host=True)
    node.roles.set([Role.objects.create(name="panel")])
    return node


def test_data_that_reaches_the_panels_server_is_changed_by_superusers_only(
    operator, superuser, panel_host
):
    motd = ManagedFile.objects.create(path="/etc/motd", content="hi\n")
    motd.roles.add(panel_host.roles.get())
    page = text(operator.get(url("files", "detail", motd)))
    assert "Only a superuser may make this change" in page and ">Edit<" not in page
    for address in (url("files", "edit", motd), url("files", "delete", motd)):
        assert operator.get(address).status_code == 403
    assert operator.post(url("files", "delete", motd)).status_code == 403
    assert ManagedFile.objects.filter(pk=motd.pk).exists()
    _, done = confirm(superuser, url("files", "edit", motd), file_data(motd, content="bye\n"))
    assert done.status_code == 302
    motd.refresh_from_db()
    assert motd.content == "bye\n"


def test_an_operator_cannot_send_data_to_the_panels_server(operator, panel_host):
    """A new file on the panel's role: refused at the confirmation, nothing saved."""
    role = panel_host.roles.get()
    response = operator.post(url("files", "add"), file_data(roles=[role.pk]))
    assert response.status_code == 403
    assert "Only a superuser may make this change" in text(response)
    assert not ManagedFile.objects.filter(path="/etc/new.conf").exists()
    assert not AuditEntry.objects.exists()


def test_an_operator_cannot_give_the_panels_server_a_role(operator, superuser, panel_host, fleet):
    web = fleet["web"]
    nodes = [fleet["a"].pk, fleet["b"].pk, panel_host.pk]
    response = operator.post(url("roles", "edit", web), {"name": "web", "nodes": nodes})
    assert response.status_code == 403 and "superuser" in text(response)
    assert not web.nodes.filter(pk=panel_host.pk).exists()
    _, done = confirm(superuser, url("roles", "edit", web), {"name": "web", "nodes": nodes})
    assert done.status_code == 302 and web.nodes.filter(pk=panel_host.pk).exists()


def test_only_a_superuser_deletes_a_role_of_the_panels_server(operator, superuser, panel_host):
    role = panel_host.roles.get()
    assert operator.get(url("roles", "delete", role)).status_code == 403
    assert operator.post(url("roles", "delete", role)).status_code == 403
    assert Role.objects.filter(pk=role.pk).exists()
    assert superuser.post(url("roles", "delete", role)).status_code == 302
    assert not Role.objects.filter(pk=role.pk).exists()


# --- The node form and the admin ------------------------------------------------------------


def test_the_node_form_links_to_the_roles_page(operator):
    html = text(operator.get(reverse("nodes:add")))
    assert f'href="{url("roles", "list")}"' in html and "in the admin" not in html


# --- Every page of every kind, for each kind of user ------------------------------------------


def one_of(kind: str, role: Role):
    """A row of ``kind`` on ``role`` (the role itself for roles)."""
    if kind == "roles":
        return role
    model = {"packages": Package, "files": ManagedFile, "users": ManagedUser}.get(kind, Service)
    row = model.objects.create(
        **({"path": "/etc/one.conf"} if kind == "files" else {"name": "one"})
    )
    row.roles.add(role)
    return row


def pages_of(kind: str, row) -> list[str]:
    return [url(kind, "add"), url(kind, "edit", row), url(kind, "delete", row)]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_lets_operators_act_and_read_only_users_look(
    kind, operator, reader, nobody, fleet
):
    row = one_of(kind, fleet["web"])
    for client, status in ((operator, 200), (reader, 200), (nobody, 403)):
        assert client.get(url(kind, "list")).status_code == status, kind
        assert client.get(url(kind, "detail", row)).status_code == status, kind
    for address in pages_of(kind, row):
        assert operator.get(address).status_code == 200, address
        assert reader.get(address).status_code == 403, address
        assert reader.post(address, {"name": "changed"}).status_code == 403, address
    assert str(row) in text(reader.get(url(kind, "list")))
    assert operator.post(url(kind, "delete", row)).status_code == 302
    assert not type(row).objects.filter(pk=row.pk).exists()


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_on_the_panels_server_is_a_superusers(kind, operator, superuser, panel_host):
    """A role is judged by what its change does (the next tests): its edit page is open."""
    row = one_of(kind, panel_host.roles.get())
    for address in pages_of(kind, row)[1 if kind != "roles" else 2 :]:
        refused = operator.get(address)
        assert refused.status_code == 403, address
        assert "panel's own server" in text(refused)
        assert superuser.get(address).status_code == 200, address
    assert operator.post(url(kind, "delete", row)).status_code == 403
    assert superuser.post(url(kind, "delete", row)).status_code == 302
    assert not type(row).objects.filter(pk=row.pk).exists()


def test_an_operator_gives_the_panels_role_to_other_nodes_but_not_renames_it_away(
    operator, panel_host, fleet
):
    """Giving the panel's role to other nodes leaves the panel's server as it is."""
    role = panel_host.roles.get()
    motd = ManagedFile.objects.create(path="/etc/motd", content="hi\n")
    motd.roles.add(role)
    nodes = [panel_host.pk, fleet["b"].pk]
    first, done = confirm(operator, url("roles", "edit", role), {"name": "panel", "nodes": nodes})
    assert "1 node will synchronize files" in said(first) and done.status_code == 302
    assert set(role.nodes.values_list("name", flat=True)) == {"panel", "b"}
    taken = operator.post(url("roles", "edit", role), {"name": "panel", "nodes": [fleet["b"].pk]})
    assert taken.status_code == 403 and role.nodes.filter(pk=panel_host.pk).exists()


def test_the_action_refuses_an_operator_a_new_role_on_a_file_of_the_panels_server(
    django_user_model, panel_host, fleet
):
    """The admin and the pages share the rule: it is the action's."""
    from django.core.exceptions import PermissionDenied

    from nodes.access import OPERATORS
    from sync.actions.data import save_data
    from sync.actor import Actor
    from tests.conftest import client_for
    from web.data.forms import FileForm

    client_for(django_user_model, "op3", OPERATORS)
    op = django_user_model.objects.get(username="op3")
    motd = ManagedFile.objects.create(path="/etc/motd", content="hi\n")
    motd.roles.add(panel_host.roles.get())
    roles = [panel_host.roles.get().pk, fleet["web"].pk]
    form = FileForm(file_data(motd, roles=roles), instance=motd, user=op)
    assert form.is_valid(), form.errors
    with pytest.raises(PermissionDenied, match="panel's own server"):
        save_data(Actor.for_user(op), form)
    assert list(motd.roles.values_list("name", flat=True)) == ["panel"]

"""Giving or taking a role for many nodes from the list: the confirmation counts what will
synchronize from the watches themselves, and the action is one entry that says what it did."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from nodes.models import Node, Role
from sync.actions import change_roles
from sync.actor import Actor
from sync.audit import AuditEntry
from sync.models import Node2Sync
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.users import ManagedUser

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(make_node):
    """Three nodes; ``c`` already has the file of ``web`` through the role ``base``."""
    a, b, c = (make_node(n, transport="ssh", host=f"127.0.0.{i}", port=1) for i, n in
               enumerate("abc", start=1))  # fmt: skip
    web, base = Role.objects.create(name="web"), Role.objects.create(name="base")
    conf = ManagedFile.objects.create(path="/etc/web.conf", content="x\n")
    conf.roles.add(web, base)
    ManagedUser.objects.create(name="deploy").roles.add(web)
    c.roles.add(base)
    Node2Sync.objects.all().delete()
    return [a, b, c], web


def registered(node: Node) -> set[str]:
    return set(Node2Sync.objects.filter(node=node).values_list("action__name", flat=True))


def test_the_rehearsal_counts_from_the_watches_and_keeps_nothing(fleet, django_user_model):
    nodes, web = fleet
    chief = Actor.for_user(django_user_model.objects.create_superuser("chief"))
    rehearsed = change_roles(chief, nodes, give=[web], dry_run=True)
    # c keeps /etc/web.conf through "base": only a and b synchronize files; all three get
    # the user, which only "web" carries.
    assert rehearsed.extra["effect"].by_type == (("Files", 2), ("Users", 3))
    assert rehearsed.count == 3
    assert {o.outcome for o in rehearsed.nodes} == {"roles changed"}
    assert not web.nodes.exists() and not Node2Sync.objects.exists()
    assert not AuditEntry.objects.exists()


def test_giving_a_role_says_per_node_what_it_registered(fleet, django_user_model):
    nodes, web = fleet
    chief = django_user_model.objects.create_superuser("chief")
    done = change_roles(Actor.for_user(chief), nodes, give=[web])
    titles = {o.name: set(o.titles) for o in done.nodes}
    assert titles == {"a": {"Files", "Users"}, "b": {"Files", "Users"}, "c": {"Users"}}
    assert registered(nodes[2]) == {"users"}
    assert done.count == 3
    entry = AuditEntry.objects.get(pk=done.entry_id)
    assert "2 nodes will synchronize files; 3 nodes will synchronize users." in entry.summary


def test_the_list_offers_roles_to_operators_only(operator, reader, fleet):
    page = operator.get(reverse("nodes:list")).content.decode()
    assert 'name="role"' in page and 'value="give_role"' in page and ">web</option>" in page
    assert 'value="give_role"' not in reader.get(reverse("nodes:list")).content.decode()


def test_the_confirmation_says_what_will_happen_then_the_action_does_it(operator, fleet):
    nodes, web = fleet
    ids = [n.pk for n in nodes]
    form = {"action": "give_role", "role": "web", "ids": ids, "next": "/nodes/"}

    page = operator.post(reverse("nodes:bulk"), form)
    text = page.content.decode()
    assert page.status_code == 200
    assert "2 nodes will synchronize files; 3 nodes will synchronize users." in text
    assert not web.nodes.exists()

    done = operator.post(reverse("nodes:bulk"), {**form, "confirm": "1"})
    assert done.status_code == 302 and done["Location"] == "/nodes/"
    said = [str(m) for m in get_messages(done.wsgi_request)]
    assert said == [
        "Gave the role web to 3 node(s): a, b, c. 2 nodes will synchronize files; "
        "3 nodes will synchronize users."
    ]
    assert set(web.nodes.values_list("name", flat=True)) == {"a", "b", "c"}
    assert AuditEntry.objects.filter(action="node.roles").count() == 1

    # Taken again: c keeps the file through "base", so only a and b lose it.
    text = operator.post(reverse("nodes:bulk"), {**form, "action": "take_role"}).content.decode()
    assert "2 nodes will synchronize files" in text


def test_nodes_that_have_the_role_already_are_named_and_not_counted(operator, fleet):
    nodes, web = fleet
    nodes[0].roles.add(web)
    Node2Sync.objects.all().delete()
    form = {"action": "give_role", "role": "web", "ids": [n.pk for n in nodes]}
    text = operator.post(reverse("nodes:bulk"), form).content.decode()
    assert "1 of the selected nodes already has it" in text
    assert "1 node will synchronize files; 2 nodes will synchronize users." in text


@pytest.mark.parametrize(
    "form, said",
    [
        ({"action": "give_role"}, "Choose the role to give or take."),
        ({"action": "give_role", "role": "nope"}, "That role does not exist (any more)."),
    ],
)
def test_a_missing_or_unknown_role_is_a_message(operator, fleet, form, said):
    nodes, _ = fleet
    response = operator.post(reverse("nodes:bulk"), {**form, "ids": [nodes[0].pk]})
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == [said]


def test_readers_may_not_and_secret_roles_need_the_right(operator, reader, fleet):
    nodes, web = fleet
    form = {"action": "give_role", "role": "web", "ids": [nodes[0].pk], "confirm": "1"}
    assert reader.post(reverse("nodes:bulk"), form).status_code == 403
    vault = Role.objects.create(name="vault")
    ManagedFile.objects.create(path="/etc/s.env", content="k\n", secret=True).roles.add(vault)
    response = operator.post(reverse("nodes:bulk"), {**form, "role": "vault"})
    assert "No role was changed" in str(list(get_messages(response.wsgi_request))[0])
    assert not vault.nodes.exists() and not web.nodes.exists()

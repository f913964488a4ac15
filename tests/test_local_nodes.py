"""Local nodes are the panel's own server: only superusers add them or change their roles.

Also: a rename that loses a race for the name is a form error, not a 500.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db.models.signals import pre_save
from django.test import Client
from django.urls import reverse

from nodes.access import OPERATORS, ensure_groups
from nodes.models import Node, Role

pytestmark = pytest.mark.django_db

ADD = "/nodes/add/"


@pytest.fixture
def superuser(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("boss"))
    return client


@pytest.fixture
def staff_operator(django_user_model) -> Client:
    """An operator who may also use the admin (staff, not superuser)."""
    ensure_groups()
    user = django_user_model.objects.create_user("staff-op", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATORS))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def local_node(make_node) -> Node:
    node = make_node("panel-host")
    node.roles.set([Role.objects.create(name="base")])
    return node


def role_names(node: Node) -> list[str]:
    return list(node.roles.values_list("name", flat=True))


# --- The add form ---------------------------------------------------------------------------


def test_it_refuses_a_local_node_to_an_operator_with_a_form_error(operator):
    Role.objects.create(name="web")

    response = operator.post(ADD, {"name": "mine", "transport": "local", "roles": ["web"]})

    assert response.status_code == 200
    assert "Only a superuser" in " ".join(response.context["form"].errors["transport"])
    assert not Node.objects.exists()


def test_it_does_not_offer_the_local_choice_to_an_operator(operator, superuser):
    assert 'value="local"' not in operator.get(ADD).content.decode()
    assert 'value="local"' in superuser.get(ADD).content.decode()


def test_it_lets_a_superuser_add_a_local_node(superuser):
    response = superuser.post(ADD, {"name": "mine", "transport": "local"})

    node = Node.objects.get(name="mine")
    assert response["Location"] == reverse("nodes:detail", args=[node.pk])
    assert node.transport == "local"


# --- The edit page and the actions ----------------------------------------------------------


def test_it_refuses_the_edit_page_of_a_local_node_to_an_operator(operator, local_node):
    Role.objects.create(name="web")
    url = reverse("nodes:edit", args=[local_node.pk])

    page = operator.get(url)
    response = operator.post(url, {"name": "renamed", "roles": ["web"]})

    for answer in (page, response):
        assert answer.status_code == 403
        assert "Only a superuser may add or change a local node" in answer.content.decode()
    local_node.refresh_from_db()
    assert local_node.name == "panel-host" and role_names(local_node) == ["base"]


def test_it_hides_the_edit_button_of_a_local_node_from_an_operator(operator, local_node):
    edit = reverse("nodes:edit", args=[local_node.pk])
    detail = reverse("nodes:detail", args=[local_node.pk])

    assert edit not in operator.get(detail).content.decode()


def test_it_lets_a_superuser_edit_a_local_node(superuser, local_node):
    Role.objects.create(name="web")

    response = superuser.post(
        reverse("nodes:edit", args=[local_node.pk]), {"name": "renamed", "roles": ["web"]}
    )

    assert response.status_code == 302
    local_node.refresh_from_db()
    assert local_node.name == "renamed" and role_names(local_node) == ["web"]


def test_it_still_lets_an_operator_resync_and_pause_a_local_node(operator, local_node):
    for name, data in (("resync", {}), ("maintenance", {"on": "1"})):
        response = operator.post(reverse(f"nodes:{name}", args=[local_node.pk]), data)
        assert response.status_code == 302, name
    local_node.refresh_from_db()
    assert local_node.maintenance


# --- The admin ------------------------------------------------------------------------------


def test_it_refuses_changes_to_a_local_node_in_the_admin_to_staff(staff_operator, local_node):
    url = reverse("admin:nodes_node_change", args=[local_node.pk])

    page = staff_operator.get(url)
    response = staff_operator.post(url, {"name": "renamed", "transport": "local"})

    assert page.status_code == 200 and 'name="name"' not in page.content.decode()  # read-only
    assert response.status_code == 403
    local_node.refresh_from_db()
    assert local_node.name == "panel-host"


def admin_add_data(**extra) -> dict:
    return {
        "name": "mine",
        "transport": "ssh",
        "host": "127.0.0.1",
        "port": "22",
        "username": "root",
        "host_key": "",
        **extra,
    }


def test_it_refuses_to_add_a_local_node_in_the_admin_to_staff(staff_operator):
    """Staff who are not superusers add no node in the admin at all (403): nodes are added on
    the page, which confirms the host key and checks the rights first (``sync.rights``)."""
    page = staff_operator.get(reverse("admin:nodes_node_add"))
    response = staff_operator.post(
        reverse("admin:nodes_node_add"), admin_add_data(transport="local")
    )

    assert 'value="local"' not in page.content.decode()
    assert page.status_code == 403 and response.status_code == 403
    assert not Node.objects.exists()


def test_it_refuses_to_turn_a_node_local_in_the_admin_to_staff(staff_operator, make_node):
    node = make_node("remote", transport="ssh", host="127.0.0.1")

    response = staff_operator.post(
        reverse("admin:nodes_node_change", args=[node.pk]), admin_add_data(transport="local")
    )

    assert response.status_code == 200
    assert Node.objects.get(pk=node.pk).transport == "ssh"


def test_it_lets_a_superuser_add_and_change_local_nodes_in_the_admin(superuser):
    response = superuser.post(reverse("admin:nodes_node_add"), admin_add_data(transport="local"))

    assert response.status_code == 302
    node = Node.objects.get(name="mine")
    assert node.transport == "local"
    response = superuser.post(
        reverse("admin:nodes_node_change", args=[node.pk]),
        admin_add_data(name="renamed", transport="local"),
    )
    assert response.status_code == 302
    assert Node.objects.get(pk=node.pk).name == "renamed"


# --- A rename racing another ----------------------------------------------------------------


def test_it_reports_a_name_taken_between_the_check_and_the_save(superuser, make_node):
    node = make_node("alpha")

    def take_the_name(sender, instance, **kwargs):
        # Another admin saves a node with the same name just before this save.
        if instance.pk == node.pk and not Node.objects.filter(name="x").exists():
            Node.objects.create(name="x", transport="local")

    pre_save.connect(take_the_name, sender=Node)
    try:
        response = superuser.post(reverse("nodes:edit", args=[node.pk]), {"name": "x"})
    finally:
        pre_save.disconnect(take_the_name, sender=Node)

    assert response.status_code == 200
    assert "was just saved" in " ".join(response.context["form"].errors["name"])
    assert "Edit alpha" in response.content.decode()
    assert Node.objects.get(pk=node.pk).name == "alpha"

"""The add and edit forms and the host key page against real sshd test nodes."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from nodes.access import OPERATORS, ensure_groups
from nodes.keys import fingerprint
from nodes.models import Node
from sync.models import Node2Sync
from tools.sshd import free_port

pytestmark = pytest.mark.django_db

ADD = "/nodes/add/"


@pytest.fixture
def operator(django_user_model) -> Client:
    ensure_groups()
    user = django_user_model.objects.create_user("op")
    user.groups.add(Group.objects.get(name=OPERATORS))
    client = Client()
    client.force_login(user)
    return client


def ssh_data(server, **extra) -> dict:
    data = {"name": "s1", "transport": "ssh", "host": "127.0.0.1", "port": server.port}
    return {**data, "username": "root", **extra}


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1).replace("&#x27;", "'").replace("&amp;", "&")


def confirm_fields(response) -> dict:
    html = response.content.decode()
    return {
        "confirmed_key": hidden(html, "confirmed_key"),
        "scanned_for": hidden(html, "scanned_for"),
    }


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_it_adds_an_ssh_node_after_the_host_key_is_confirmed(operator, sshd):
    server = sshd()

    first = operator.post(ADD, ssh_data(server))

    assert first.status_code == 200
    html = first.content.decode()
    assert fingerprint(server.host_key) in html
    assert "Confirm the key and add the node" in html
    assert not Node.objects.exists(), "nothing is saved before the key is confirmed"

    second = operator.post(ADD, ssh_data(server, **confirm_fields(first)))

    node = Node.objects.get(name="s1")
    assert second["Location"] == reverse("nodes:detail", args=[node.pk])
    assert node.host_key == server.host_key and node.port == server.port
    assert Node2Sync.objects.filter(node=node).exists()


def test_it_says_when_the_host_key_changed_between_the_steps(operator, sshd):
    server = sshd()
    first = operator.post(ADD, ssh_data(server))
    old = fingerprint(server.host_key)
    server.restart_with_new_host_key()

    second = operator.post(ADD, ssh_data(server, **confirm_fields(first)))

    assert second.status_code == 200
    html = second.content.decode()
    assert "changed since it was shown" in html
    assert old in html and fingerprint(server.host_key) in html
    assert not Node.objects.exists()
    # Confirming the new key then works.
    third = operator.post(ADD, ssh_data(server, **confirm_fields(second)))
    assert third.status_code == 302
    assert Node.objects.get().host_key == server.host_key


def test_it_scans_again_when_the_host_changed_after_the_scan(operator, sshd):
    first_server, other = sshd(), sshd()
    first = operator.post(ADD, ssh_data(first_server))

    second = operator.post(ADD, ssh_data(other, **confirm_fields(first)))

    assert second.status_code == 200
    assert fingerprint(other.host_key) in second.content.decode()
    assert not Node.objects.exists()


def test_it_reports_a_refused_key_as_a_form_error(operator, sshd):
    server = sshd()
    first = operator.post(ADD, ssh_data(server, username="ghost"))

    second = operator.post(ADD, ssh_data(server, username="ghost", **confirm_fields(first)))

    assert second.status_code == 200
    errors = " ".join(second.context["form"].non_field_errors())
    assert "authentication refused" in errors
    assert not Node.objects.exists()


def test_it_reports_an_unreachable_host_as_a_form_error(operator):
    port = free_port()
    response = operator.post(
        ADD, {"name": "s1", "transport": "ssh", "host": "127.0.0.1", "port": port}
    )

    assert response.status_code == 200
    error = " ".join(response.context["form"].errors["host"])
    assert error.startswith(f"Cannot reach 127.0.0.1:{port} refused the connection")
    assert error.count(f"127.0.0.1:{port}") == 1 and "unreachable:" not in error
    assert not Node.objects.exists()


def test_it_asks_to_confirm_the_new_host_key_when_the_port_changes(operator, make_ssh_node, sshd):
    node, _ = make_ssh_node("s1")
    other = sshd()
    edit = reverse("nodes:edit", args=[node.pk])
    data = {"name": "s1", "host": "127.0.0.1", "port": other.port, "username": "root"}

    first = operator.post(edit, data)

    assert first.status_code == 200
    assert fingerprint(other.host_key) in first.content.decode()
    assert Node.objects.get(pk=node.pk).port != other.port

    second = operator.post(edit, {**data, **confirm_fields(first)})

    assert second.status_code == 302
    node.refresh_from_db()
    assert node.port == other.port and node.host_key == other.host_key


def test_it_checks_the_login_when_the_user_changes(operator, make_ssh_node):
    node, _ = make_ssh_node("s1")
    edit = reverse("nodes:edit", args=[node.pk])

    response = operator.post(
        edit, {"name": "s1", "host": "127.0.0.1", "port": node.port, "username": "ghost"}
    )

    assert response.status_code == 200
    assert "authentication refused" in " ".join(response.context["form"].non_field_errors())
    assert Node.objects.get(pk=node.pk).username == "root"


def test_it_accepts_a_changed_host_key_after_showing_both_fingerprints(operator, make_ssh_node):
    node, server = make_ssh_node("s1")
    old = fingerprint(server.host_key)
    server.restart_with_new_host_key()
    new = fingerprint(server.host_key)
    url = reverse("nodes:accept_key", args=[node.pk])

    page = operator.get(url)

    assert page.status_code == 200
    assert old in page.content.decode() and new in page.content.decode()
    assert Node.objects.get(pk=node.pk).host_key != server.host_key

    html = page.content.decode()
    response = operator.post(
        url, {"key": hidden(html, "key"), "fingerprint": hidden(html, "fingerprint")}
    )

    assert response.status_code == 302
    assert Node.objects.get(pk=node.pk).host_key == server.host_key
    message = messages_of(response)[0]
    assert old in message and new in message


def test_it_refuses_a_host_key_other_than_the_one_shown(operator, make_ssh_node):
    node, server = make_ssh_node("s1")
    pinned = node.host_key
    server.restart_with_new_host_key()

    response = operator.post(
        reverse("nodes:accept_key", args=[node.pk]),
        {"key": server.host_key, "fingerprint": "SHA256:not-this-one"},
    )

    assert response.status_code == 200
    assert "not the one whose fingerprint you confirmed" in response.content.decode()
    assert Node.objects.get(pk=node.pk).host_key == pinned


def test_it_reports_an_unreachable_node_when_accepting_its_key(operator, make_ssh_node):
    node, server = make_ssh_node("s1")
    server.stop()

    response = operator.get(reverse("nodes:accept_key", args=[node.pk]))

    assert response.status_code == 302
    assert "Cannot read the host key of s1" in messages_of(response)[0]

"""The panel's own server recognised by its host key, against real sshd test nodes.

The machine's own host keys are the ``ssh_host_*_key.pub`` files of ``OWN_HOST_KEY_DIR``;
here that folder holds the key of a test sshd, which then plays the panel's own sshd.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from html import unescape
from io import StringIO
from pathlib import Path

import asyncssh
import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from nodes.access import OPERATORS, ensure_groups
from nodes.keys import fingerprint
from nodes.models import Node
from sync.panelhost import mark_panel_host_nodes, own_host_keys
from tests.conftest import ROOT, process_env
from tools.sshd import free_port

ADD = "/nodes/add/"


def other_key() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_public_key().decode().strip()


@pytest.fixture
def own_keys(settings, tmp_path) -> Path:
    """This machine's host key folder, for the test: empty until a test puts keys there."""
    folder = tmp_path / "etc-ssh"
    folder.mkdir()
    settings.OWN_HOST_KEY_DIR = folder
    return folder


def make_own(folder: Path, server) -> None:
    """Make ``server``'s host key one of this machine's own (as sshd keeps it: with a comment)."""
    shutil.copy(str(server.host_key_file) + ".pub", folder / "ssh_host_ed25519_key.pub")


@pytest.fixture
def superuser(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("boss"))
    return client


@pytest.fixture
def op(django_user_model) -> Client:
    ensure_groups()
    user = django_user_model.objects.create_user("op")
    user.groups.add(Group.objects.get(name=OPERATORS))
    client = Client()
    client.force_login(user)
    return client


def hidden(html: str, name: str) -> str:
    start = html.index(f'name="{name}" value="') + len(f'name="{name}" value="')
    return unescape(html[start : html.index('"', start)])


def add_in_two_steps(client: Client, server, name: str = "s1"):
    data = {"name": name, "transport": "ssh", "host": "127.0.0.1", "port": server.port}
    first = client.post(ADD, data)
    if first.context and first.context.get("key_step") is None:
        return first
    html = first.content.decode()
    confirm = {
        "confirmed_key": hidden(html, "confirmed_key"),
        "scanned_for": hidden(html, "scanned_for"),
    }
    return client.post(ADD, {**data, **confirm})


def text(response) -> str:
    return unescape(response.content.decode())


# --- Reading the machine's own keys ---------------------------------------------------------


def test_it_reads_the_machines_host_keys_and_skips_what_is_no_key(tmp_path):
    key = other_key()
    (tmp_path / "ssh_host_ed25519_key.pub").write_text(key + " root@panel\n")
    (tmp_path / "ssh_host_rsa_key.pub").write_text("garbage\n")
    (tmp_path / "ssh_host_ed25519_key").write_text("a private key is never read\n")

    assert own_host_keys(tmp_path) == frozenset({key})


# --- Adding, moving, accepting: the key decides -----------------------------------------------


@pytest.mark.django_db
def test_it_refuses_an_operator_a_node_presenting_this_machines_key(op, sshd, own_keys):
    server = sshd()
    make_own(own_keys, server)

    response = add_in_two_steps(op, server)

    assert response.status_code == 200
    assert response.context["key_step"] is None  # not even offered for confirmation
    assert "presents this machine's own host key" in text(response)
    assert not Node.objects.exists()


@pytest.mark.django_db
def test_it_lets_a_superuser_add_this_machine_and_flags_it(superuser, sshd, own_keys):
    server = sshd()
    make_own(own_keys, server)

    response = add_in_two_steps(superuser, server)

    assert response.status_code == 302, text(response)
    node = Node.objects.get(name="s1")
    assert node.is_panel_host and node.host_key == server.host_key


@pytest.mark.django_db
def test_it_refuses_an_operator_to_move_a_node_to_this_machines_sshd(
    op, make_ssh_node, sshd, own_keys
):
    node, _ = make_ssh_node("s1")
    panel_sshd = sshd()
    make_own(own_keys, panel_sshd)
    data = {"name": "s1", "host": "127.0.0.1", "port": panel_sshd.port, "username": "root"}

    response = op.post(reverse("nodes:edit", args=[node.pk]), data)

    assert response.status_code == 200
    assert "presents this machine's own host key" in text(response)
    assert Node.objects.get(pk=node.pk).port == node.port


@pytest.mark.django_db
def test_it_refuses_an_operator_to_accept_this_machines_key(op, superuser, make_ssh_node, own_keys):
    node, server = make_ssh_node("s1")
    Node.objects.filter(pk=node.pk).update(host_key=other_key())  # "reinstalled"
    make_own(own_keys, server)
    url = reverse("nodes:accept_key", args=[node.pk])
    form = {"key": server.host_key, "fingerprint": fingerprint(server.host_key)}

    refused = op.post(url, form)
    accepted = superuser.post(url, form)

    assert refused.status_code == 403 and "this machine's own host key" in text(refused)
    assert accepted.status_code == 302
    node.refresh_from_db()
    assert node.host_key == server.host_key and node.is_panel_host


@pytest.mark.django_db
def test_addnode_flags_a_node_pinning_this_machines_key(sshd, own_keys):
    server = sshd()
    make_own(own_keys, server)

    call_command(
        "addnode", "me", "--host", "127.0.0.1", "--port", str(server.port), stdout=StringIO()
    )

    assert Node.objects.get(name="me").is_panel_host


# --- At every start of the web server or a cluster -------------------------------------------


@pytest.mark.django_db
def test_it_flags_the_nodes_pinning_this_machines_keys_and_never_clears_a_flag(make_node, own_keys):
    mine = other_key()
    (own_keys / "ssh_host_ed25519_key.pub").write_text(mine + "\n")
    panel = make_node("panel", transport="ssh", host="10.0.0.1", host_key=mine)
    other = make_node("other", transport="ssh", host="10.0.0.2", host_key=other_key())
    manual = make_node("manual", transport="ssh", host="10.0.0.3", is_panel_host=True)
    local = make_node("local")

    assert sorted(mark_panel_host_nodes()) == ["local", "panel"]

    flags = dict(Node.objects.values_list("name", "is_panel_host"))
    assert flags == {panel.name: True, other.name: False, manual.name: True, local.name: True}


@pytest.mark.django_db(transaction=True)
def test_the_cluster_command_flags_the_panels_node_when_it_starts(make_node, own_keys, monkeypatch):
    """``manage.py qcluster`` is the panel's: it flags first, then runs django-q2's cluster
    (replaced here by one that only notes it was started)."""
    from django_q.management.commands import qcluster

    mine = other_key()
    (own_keys / "ssh_host_ed25519_key.pub").write_text(mine + "\n")
    node = make_node("panel", transport="ssh", host="10.0.0.1", host_key=mine)
    started = []

    class FakeCluster:
        def start(self) -> None:
            started.append(Node.objects.get(pk=node.pk).is_panel_host)

    monkeypatch.setattr(qcluster, "Cluster", FakeCluster)

    call_command("qcluster")

    assert started == [True]


@pytest.mark.django_db(transaction=True)
def test_the_web_server_flags_the_panels_node_when_it_starts(make_node, tmp_path):
    """A real gunicorn with the panel's configuration: its start flags the node."""
    folder = tmp_path / "etc-ssh"
    folder.mkdir()
    mine = other_key()
    (folder / "ssh_host_ed25519_key.pub").write_text(mine + "\n")
    node = make_node("panel", transport="ssh", host="10.0.0.1", host_key=mine)
    env = process_env(PANEL_OWN_HOST_KEY_DIR=str(folder), PANEL_WEB_WORKERS="1")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "--config",
            str(ROOT / "panel" / "gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{free_port()}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not Node.objects.get(pk=node.pk).is_panel_host:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the web server started without flagging"
            time.sleep(0.1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

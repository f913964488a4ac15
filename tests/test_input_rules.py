"""Input is checked where it is typed, as model validators (the admin, the pages, the commands
and any later API share them), and errors say what is wrong in the admin's words: the line
that is not a key, the mode bit that needs a yes, the node that already has that address, the
owner that does not exist, the port where nothing listens. Never a Python tuple or class name.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from nodes.choices import Transport
from nodes.hostkeys import scan_host_key
from nodes.models import Node, Role, validate_host
from nodes.transports import TransportError
from nodes.transports.local import LocalTransport
from nodes.transports.ssh import _socket_reason
from sync.actions.inventory import edit_node
from sync.actor import Actor
from sync.engine import retry_now, run_nodes
from sync.models import Outcome, SyncRun
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.users import ManagedUser
from sync.validators import SYSTEM_ACCOUNT_NAMES
from tests.conftest import process_env, run_manage
from web.forms import NodeAddForm, NodeEditForm

KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def errors(instance) -> dict[str, list[str]]:
    try:
        instance.full_clean()
    except ValidationError as e:
        return e.message_dict
    return {}


# --- authorized_keys -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "keys",
    [
        KEY,
        f'from="10.0.0.0/8,192.168.1.*",command="/usr/bin/backup",no-pty {KEY}',
        f"cert-authority {KEY}",
        f'restrict,environment="A=b c" {KEY}',
        f"# the laptop\n\n{KEY}\r\n{KEY}\n",
        "",
    ],
)
def test_authorized_keys_take_openssh_keys_with_options(keys):
    assert "authorized_keys" not in errors(ManagedUser(name="alice", authorized_keys=keys))


@pytest.mark.django_db
def test_a_line_that_is_not_a_key_is_refused_by_its_number():
    user = ManagedUser(
        name="alice", authorized_keys=f"{KEY}\nthis is not a key\n{KEY}\nssh-rsa AAAA"
    )
    (message,) = errors(user)["authorized_keys"]
    assert message.startswith("Lines 2, 4 are not an OpenSSH public key")
    (message,) = errors(ManagedUser(name="bob", authorized_keys="this is not a key"))[
        "authorized_keys"
    ]
    assert message.startswith("Line 1 is not an OpenSSH public key")


def test_the_admin_refuses_a_bad_key_line_with_the_same_words(admin_client):
    response = admin_client.post(
        reverse("admin:sync_manageduser_add"),
        {"name": "alice", "shell": "/bin/bash", "state": "present", "authorized_keys": "nope"},
    )
    assert response.status_code == 200
    assert "Line 1 is not an OpenSSH public key" in response.content.decode()
    assert not ManagedUser.objects.exists()


# --- system account names --------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    ["root", "daemon", "bin", "www-data", "nobody", "halt", "operator", "systemd-network", "_apt"],
)
def test_a_managed_user_named_like_a_system_account_is_refused(name):
    (message,) = errors(ManagedUser(name=name))["name"]
    assert message.startswith(f"{name} is a system account")


@pytest.mark.django_db
def test_login_names_are_fine():
    assert errors(ManagedUser(name="alice")) == {}
    assert {"root", "daemon", "sync", "gnats", "shutdown", "ftp"} <= SYSTEM_ACCOUNT_NAMES


# --- file modes ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mode", "said"),
    [
        (0o4755, "4755 is setuid"),
        (0o2755, "2755 is setgid"),
        (0o0666, "0666 is world-writable"),
        (0o7777, "7777 is setuid, setgid, world-writable"),
    ],
)
def test_special_mode_bits_need_the_box_ticked(mode, said):
    (message,) = errors(ManagedFile(path="/etc/x", mode=mode))["mode"]
    assert said in message and "Allow special bits" in message
    assert errors(ManagedFile(path="/etc/x", mode=mode, special_bits=True)) == {}


@pytest.mark.django_db
@pytest.mark.parametrize("mode", [0o644, 0o600, 0o755, 0o1755, 0o0775])
def test_ordinary_modes_need_nothing(mode):
    assert errors(ManagedFile(path="/etc/x", mode=mode)) == {}


def test_the_admin_refuses_mode_7777_in_its_form(admin_client):
    url = reverse("admin:sync_managedfile_add")
    fields = {"path": "/etc/x", "content": "", "mode": "7777", "owner": "root", "group": "root"}
    response = admin_client.post(url, fields)
    assert "7777 is setuid, setgid, world-writable" in response.content.decode()
    assert not ManagedFile.objects.exists()
    response = admin_client.post(url, {**fields, "special_bits": "on"})
    assert response.status_code == 302
    assert ManagedFile.objects.get().mode == 0o7777


# --- one SSH node per host:port --------------------------------------------------------------


@pytest.fixture
def web1(db) -> Node:
    return Node.objects.create(
        name="web1", transport=Transport.SSH, host="web.example.com", port=2222, host_key=KEY
    )


def test_a_second_node_at_the_same_host_and_port_is_refused_naming_the_first(web1):
    twin = Node(name="web2", transport=Transport.SSH, host="WEB.example.com", port=2222)
    assert errors(twin)["host"] == ["WEB.example.com:2222 is already the node web1."]
    assert "host" not in errors(Node(name="web3", host="web.example.com", port=22))
    assert errors(web1) == {}  # itself is no other node


def test_the_add_form_refuses_it(web1, admin_user):
    data = {"name": "web2", "transport": "ssh", "host": "web.example.com", "port": "2222"}
    form = NodeAddForm(data=data, user=admin_user)
    assert not form.is_valid()
    assert form.errors["host"] == ["web.example.com:2222 is already the node web1."]


def test_the_edit_form_and_the_edit_action_refuse_it(web1, admin_user):
    other = Node.objects.create(name="db1", transport=Transport.SSH, host="db", port=22)
    data = {"name": "db1", "host": "web.example.com", "port": "2222", "username": "root"}
    form = NodeEditForm(data=data, instance=other, user=admin_user)
    assert not form.is_valid()
    assert form.errors["host"] == ["web.example.com:2222 is already the node web1."]

    other = Node.objects.get(name="db1")
    other.host, other.port = "web.example.com", 2222
    with pytest.raises(ValidationError, match="is already the node web1"):
        edit_node(Actor.command("test"), other, ["host", "port"])
    assert Node.objects.get(name="db1").host == "db"


def test_addnode_refuses_it_before_it_connects(web1):
    with pytest.raises(
        CommandError, match="host: web.example.com:2222 is already the node web1"
    ) as e:
        call_command("addnode", "web2", "--host", "web.example.com", "--port", "2222")
    assert e.value.returncode == 2
    assert list(Node.objects.values_list("name", flat=True)) == ["web1"]


@pytest.mark.parametrize("host", ["256.1.1.1", "10.1", "1.2.3.4.5"])
def test_a_mistyped_ip_address_is_not_taken_for_a_host_name(host):
    with pytest.raises(ValidationError, match="not an IP address or a resolvable name"):
        validate_host(host)


# --- connection errors in the admin's words --------------------------------------------------


def test_a_port_where_nothing_listens_is_said_so():
    port = free_port()
    with pytest.raises(TransportError) as e:
        scan_host_key("127.0.0.1", port)
    assert str(e.value) == (
        f"unreachable: 127.0.0.1:{port} refused the connection: nothing listens on {port}?"
    )


@pytest.mark.parametrize("host", ["256.1.1.1", "no-such-node.invalid"])
def test_a_name_that_resolves_to_nothing_is_said_so(host):
    with pytest.raises(TransportError) as e:
        scan_host_key(host, 22)
    assert f"{host} is not an IP address or a resolvable name" in str(e.value)
    assert "Errno" not in str(e.value) and "resolution" not in str(e.value)


def test_several_refused_addresses_are_one_refusal_without_python_tuples():
    # What asyncio raises when a name has several addresses (::1 and 127.0.0.1) and all refuse.
    error = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 24099, 0, 0), "
        "[Errno 111] Connect call failed ('127.0.0.1', 24099)"
    )
    assert _socket_reason(error, "localhost", 24099) == (
        "refused the connection: nothing listens on 24099?"
    )
    error = OSError("Multiple exceptions: [Errno 111] x, [Errno 113] y")
    assert _socket_reason(error, "h", 22) == "cannot be reached: No route to host"


# --- an unknown owner is named as the owner --------------------------------------------------


def test_an_unknown_owner_is_named_as_the_owner_not_as_the_folder(tmp_path):
    transport = LocalTransport()
    folder = tmp_path / "new"
    with pytest.raises(TransportError) as e:
        asyncio.run(transport.make_dir(str(folder), trusting="no-such-owner"))
    assert str(e.value) == (
        f"cannot make the folder {folder}: the file's owner no-such-owner is not a user on "
        "this node"
    )
    with pytest.raises(TransportError, match="the owner no-such-owner is not a user on this"):
        asyncio.run(transport.put_file(str(tmp_path / "f"), b"x", owner="no-such-owner"))
    with pytest.raises(TransportError, match="the group no-such-group is not a group on this"):
        asyncio.run(transport.put_file(str(tmp_path / "f"), b"x", group="no-such-group"))


# --- the commands: a closed stdout, a missing database ---------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("command", [["nodes"], ["nodes", "--json"], ["help"], ["audit"]])
def test_every_command_survives_a_closed_stdout(command):
    """``manage.py nodes | head -1``: the reader went away; no BrokenPipeError traceback."""
    Node.objects.create(name="n1", transport=Transport.LOCAL, host="localhost")
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write meets a closed pipe, as after `head -1` exits
    try:
        done = subprocess.run(
            [*manage_argv(), *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=process_env(),
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr == ""


def manage_argv() -> list[str]:
    import sys

    from tests.conftest import ROOT

    return [sys.executable, str(Path(ROOT) / "manage.py")]


def test_a_missing_mariadb_database_is_one_line_with_the_fix():
    pytest.importorskip("MySQLdb", reason="the mysql extra (mysqlclient) is not installed")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 3306)) != 0:
            pytest.skip("no MariaDB on 127.0.0.1:3306")
    name = f"panel_missing_{os.getpid()}"
    env = process_env(DATABASE_URL=f"mysql://root@127.0.0.1:3306/{name}")
    done = run_manage("migrate", "--no-input", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: the database '{name}' does not exist on 127.0.0.1:3306: create it with: "
        f"CREATE DATABASE {name} CHARACTER SET utf8mb4;\n"
    )


def test_a_special_mode_written_past_the_validators_fails_its_run(make_node, tmp_path, settings):
    """update() skips clean(): the run checks again and writes nothing with setuid."""
    settings.SYNC_NODE_STATE_DIR = str(tmp_path / "state")
    role = Role.objects.create(name="web")
    node = make_node()
    node.roles.add(role)
    target = tmp_path / "tool"
    managed = ManagedFile.objects.create(path=str(target), content="#!/bin/sh\n", mode=0o755)
    managed.roles.add(role)
    ManagedFile.objects.filter(pk=managed.pk).update(mode=0o4755)
    run_nodes([node.pk])
    run = SyncRun.objects.filter(node=node, action__name="files").latest("id")
    assert run.outcome == Outcome.FAILED
    assert "refusing mode 4755" in run.log and "setuid" in run.log
    assert not target.exists()

    ManagedFile.objects.filter(pk=managed.pk).update(special_bits=True)
    retry_now([node])
    run_nodes([node.pk])
    run = SyncRun.objects.filter(node=node, action__name="files").latest("id")
    assert run.outcome == Outcome.SUCCESS, run.log
    assert target.stat().st_mode & 0o7777 == 0o4755


@pytest.mark.django_db(transaction=True)
def test_addnode_says_pinned_only_once_the_node_is_saved(sshd, manage):
    server = sshd()
    server.authorized_keys.write_text("")  # the panel's key does not log in yet
    refused = manage("addnode", "s1", "--host", "127.0.0.1", "--port", str(server.port))
    assert refused.returncode == 1
    assert "authentication refused" in refused.stderr
    assert "pinned" not in refused.stdout + refused.stderr
    assert not Node.objects.exists()

    server = sshd()
    added = manage("addnode", "s1", "--host", "127.0.0.1", "--port", str(server.port))
    assert added.returncode == 0, added.stderr
    assert f"127.0.0.1:{server.port}: " in added.stdout and "pinned." in added.stdout
    assert Node.objects.get(name="s1").host_key == server.host_key

"""Rotating the panel's SSH key (`manage.py panelkey --rotate`) against real sshd nodes.

Each node's sshd reads the login user's own ``~/.ssh/authorized_keys`` as a real node does:
root's home is private to each node (``SSHServer(keys_in_home=True)``), and one node logs in
as a real unprivileged user of this machine.
"""

import asyncio
import os
import stat
import subprocess
from io import StringIO
from pathlib import Path

import asyncssh
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.management import call_command
from django.core.management.base import CommandError

from nodes import keyrotation
from nodes.hostkeys import check_login
from nodes.keys import (
    key_fingerprint,
    load_panel_key,
    old_panel_key_path,
    panel_key_path,
)
from nodes.models import Node
from nodes.transports import TransportError
from nodes.transports.ssh import SSHTransport, connect_pinned
from tests.integration.races import victim  # noqa: F401 - a fixture

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="sshd nodes with their own /root and real users need root"
    ),
]

OTHER_LINES = (
    "# the admin's own notes\n"
    'command="/bin/false",no-pty ssh-ed25519 '
    "AAAAC3NzaC1lZDI1NTE5AAAAIKz7xQ4mWlC0PSv7aCz6vOQjGM0m6Hk3yFhIr5oGK2Yo someone@else\n"
)


@pytest.fixture(autouse=True)
def own_data_dir(settings, tmp_path):
    """Keys of this test's own: a rotation must not change the key other tests use."""
    settings.DATA_DIR = tmp_path / "data"


def panelkey(*args: str) -> tuple[int, str, str]:
    """``manage.py panelkey ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("panelkey", *args, stdout=out, stderr=err)
    except CommandError as e:
        return e.returncode, out.getvalue(), str(e)
    return 0, out.getvalue(), err.getvalue()


def add_node(name: str, server, user: str = "root") -> Node:
    port = str(server.port)
    call_command("addnode", name, "--host", "127.0.0.1", "--port", port, "--user", user,
                 stdout=StringIO())  # fmt: skip
    return Node.objects.get(name=name)


def logs_in(node: Node, key: asyncssh.SSHKey) -> bool:
    """Whether ``key`` alone logs in to ``node`` (the host key checked against the pin)."""

    async def attempt() -> bool:
        try:
            conn = await connect_pinned(
                node.host, node.port, node.username, node.host_key, timeout=10, client_keys=[key]
            )
        except asyncssh.PermissionDenied:
            return False
        conn.close()
        return True

    return async_to_sync(attempt)()


def home_keys(user, sshd) -> Path:
    """``user``'s own authorized_keys with the panel's key and two lines of the admin's.

    The account gets the password "*" (none valid) instead of useradd's "!": without PAM,
    sshd refuses every login to a locked account, keys included.
    """
    subprocess.run(["usermod", "-p", "*", "--", user.pw_name], check=True)
    ssh_dir = Path(user.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(OTHER_LINES + Path(sshd.authorized_keys).read_text())
    for path in (ssh_dir, keys):
        os.chown(path, user.pw_uid, user.pw_gid)
    keys.chmod(0o600)
    return keys


def test_it_rotates_reachable_nodes_keeps_the_old_key_for_a_stopped_one_and_finishes_it(
    sshd,
    victim,  # noqa: F811
):
    root_node_server = sshd(keys_in_home=True)
    user_node_server = sshd(keys_in_home=True)
    stopped_server = sshd(keys_in_home=True)
    user_keys = home_keys(victim, user_node_server)
    rooted = add_node("k-root", root_node_server)
    as_user = add_node("k-user", user_node_server, victim.pw_name)
    stopped = add_node("k-stopped", stopped_server)
    call_command("addnode", "k-local", "--local", stdout=StringIO())
    old = load_panel_key()
    stopped_server.stop()

    status, out, err = panelkey("--rotate")

    assert status == 1, out + err
    new = load_panel_key()
    assert key_fingerprint(new) != key_fingerprint(old)
    assert "k-root: rotated" in out and "k-user: rotated" in out
    assert "k-stopped: unreachable: 127.0.0.1:" in out and "refused the connection" in out
    assert "k-local" not in out  # the local node needs no SSH key
    assert "rotate again: k-stopped" in err
    assert "PRIVATE KEY" not in out + err
    for node in (rooted, as_user):
        assert not logs_in(node, old), f"{node} still accepts the old key"
        assert logs_in(node, new)
    # The other lines as they were, the file still the user's own and private.
    text = user_keys.read_text()
    assert text.startswith(OTHER_LINES)
    assert text.count("\n") == OTHER_LINES.count("\n") + 1
    assert new.export_public_key().decode().split()[1] in text
    assert user_keys.stat().st_uid == victim.pw_uid
    assert stat.S_IMODE(user_keys.stat().st_mode) == 0o600
    # Both keys kept, private, and each node reached with the key it accepts.
    for path in (panel_key_path(), old_panel_key_path()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stopped_server.start()
    stopped.refresh_from_db()
    assert stopped.panel_key == key_fingerprint(old)
    assert logs_in(stopped, old) and not logs_in(stopped, new)
    for node in Node.objects.filter(transport="ssh"):
        check_login(node)  # the transport the synchronizations use

    status, out, err = panelkey("--rotate")

    assert status == 0, out + err
    assert "k-stopped: rotated" in out and "k-root" not in out
    assert "the old key file is removed" in out
    assert not old_panel_key_path().exists()
    assert not logs_in(stopped, old) and logs_in(stopped, new)
    assert set(Node.objects.filter(transport="ssh").values_list("panel_key", flat=True)) == {
        key_fingerprint(new)
    }
    for node in Node.objects.filter(transport="ssh"):
        check_login(node)


def test_a_failure_between_install_and_proof_leaves_the_old_key_working(sshd, monkeypatch):
    node = add_node("k-one", sshd(keys_in_home=True))
    old = load_panel_key()

    async def broken(node, key):
        raise TransportError("injected failure")

    monkeypatch.setattr(keyrotation, "prove_login", broken)
    status, out, err = panelkey("--rotate")

    assert status == 1
    assert "k-one: failed: proving the new key: injected failure; the old key still works" in out
    assert logs_in(node, old)
    node.refresh_from_db()
    assert node.panel_key == key_fingerprint(old)
    assert old_panel_key_path().exists()
    check_login(node)

    monkeypatch.undo()
    status, out, err = panelkey("--rotate")
    assert status == 0, out + err
    assert not logs_in(node, old) and logs_in(node, load_panel_key())


def test_a_from_restriction_is_installed_and_one_that_locks_the_panel_out_changes_nothing(sshd):
    server = sshd(keys_in_home=True)
    node = add_node("k-from", server)
    old = load_panel_key()

    status, out, _ = panelkey("--rotate", "--from", "192.0.2.1")

    # The node refuses the new key from 127.0.0.1: proved wrong before the old key went.
    assert status == 1
    assert "k-from: failed: proving the new key" in out
    assert logs_in(node, old)

    status, out, err = panelkey("--rotate", "--from", "127.0.0.1,10.0.0.0/8")

    assert status == 0, out + err
    lines = Path(server.authorized_keys).read_text().splitlines()
    assert len(lines) == 1  # the 192.0.2.1 line was replaced, the old one removed
    assert lines[0].startswith('from="127.0.0.1,10.0.0.0/8" ssh-ed25519 ')
    assert logs_in(node, load_panel_key()) and not logs_in(node, old)


@pytest.mark.parametrize(
    "args",
    [
        ("--rotate", "--from", "panel.example"),
        ("--rotate", "--from", "10.0.0.1,"),
        ("--rotate", "--parallel", "0"),
        ("--rotate", "--authorized-keys", "%x/keys"),
        ("--rotate", "--authorized-keys", "a b"),
        ("--from", "10.0.0.1"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_no_key(args):
    before = load_panel_key().export_public_key()
    status, out, err = panelkey(*args)
    assert status == 2
    assert "\n" not in err.strip() and "Traceback" not in err
    assert load_panel_key().export_public_key() == before
    assert not old_panel_key_path().exists()


def test_synchronizations_log_in_at_every_step_of_a_rotation(sshd, monkeypatch):
    """The riskiest moment: the old line is gone, the node's row still names the old key.
    A task starting then (it reads the node afresh) still logs in."""
    node = add_node("k-busy", sshd(keys_in_home=True))
    old = load_panel_key()
    record = keyrotation._record
    seen = []

    async def record_after_a_task_logged_in(node_row, fp):
        fresh = await sync_to_async(Node.objects.get, thread_sensitive=True)(pk=node_row.pk)
        seen.append(fresh.panel_key)
        transport = await SSHTransport.connect(fresh)
        try:
            await transport.run(["true"])
        finally:
            await transport.close()
        await record(node_row, fp)

    monkeypatch.setattr(keyrotation, "_record", record_after_a_task_logged_in)
    status, out, err = panelkey("--rotate")

    assert status == 0, out + err
    assert seen == [key_fingerprint(old)]  # the row still named the old key
    assert not logs_in(node, old)  # which the node no longer accepted
    check_login(Node.objects.get(pk=node.pk))


def test_nodes_are_rotated_concurrently(sshd, monkeypatch):
    nodes = [add_node(f"k-c{i}", sshd(keys_in_home=True)) for i in range(3)]
    prove = keyrotation.prove_login
    in_flight, most = 0, 0
    all_in = asyncio.Event()

    async def counted(node, key):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == len(nodes):
            all_in.set()
        try:
            await asyncio.wait_for(all_in.wait(), 10)  # one at a time would time out here
            await prove(node, key)
        finally:
            in_flight -= 1

    monkeypatch.setattr(keyrotation, "prove_login", counted)
    status, out, err = panelkey("--rotate")

    assert status == 0, out + err
    assert most == len(nodes)
    assert [line.split("] ")[0] for line in out.splitlines()[:3]] == ["[1/3", "[2/3", "[3/3"]

    status, out, err = panelkey("--rotate", "--parallel", "1")
    assert status == 0  # a second rotation, one node at a time


def test_a_node_whose_sshd_reads_another_file_is_left_untouched_until_that_file_is_named(
    sshd, tmp_path
):
    server = sshd()  # AuthorizedKeysFile: one file in the sshd's folder
    node = add_node("k-file", server)
    old = load_panel_key()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(OTHER_LINES)

    status, out, _ = panelkey("--rotate", "--authorized-keys", str(elsewhere))

    assert status == 1
    assert f"k-file: failed: reading authorized_keys: the panel's key is not in {elsewhere}" in out
    assert elsewhere.read_text() == OTHER_LINES
    assert logs_in(node, old)

    status, out, err = panelkey("--rotate", "--authorized-keys", str(server.authorized_keys))

    assert status == 0, out + err
    assert not logs_in(node, old) and logs_in(node, load_panel_key())


def test_a_rotation_is_one_audit_entry_naming_each_node_and_both_keys(sshd):
    from sync.actions import Act
    from sync.models import AuditEntry

    up, down = sshd(keys_in_home=True), sshd(keys_in_home=True)
    add_node("k-up", up)
    add_node("k-down", down)
    old = key_fingerprint(load_panel_key())
    down.stop()

    status, out, err = panelkey("--rotate")

    assert status == 1, out + err
    [entry] = AuditEntry.objects.filter(action=Act.ROTATE_KEY)
    assert entry.actor_kind == "command" and entry.actor_name.endswith("(panelkey)")
    assert entry.before == {"panel_key": old}
    assert entry.after["panel_key"] == key_fingerprint(load_panel_key()) != old
    assert entry.after["nodes"] == {"k-up": "rotated", "k-down": "unreachable"}
    assert sorted(t.name for t in entry.targets.all()) == ["k-down", "k-up"]

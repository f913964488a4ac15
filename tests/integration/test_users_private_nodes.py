"""The users type against real sshd nodes that each have their own /etc and /home.

What a revoked or taken-over account must come to, with the account's own processes running
(``runuser`` in the node), accounts that existed before the panel, manifests written by older
panels, and FIFOs or links where the panel writes ``authorized_keys``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import asyncssh
import pytest

from nodes.choices import Transport
from nodes.models import Node, Role
from sync.models import Node2Sync, Outcome, SyncAction
from sync.synchronizers.users import ManagedUser, UserState
from tests.integration.conftest import unavailable, wait_for
from tests.integration.private_nodes import PrivateNodeServer
from tests.integration.private_nodes import unavailable as private_nodes_unavailable
from tests.test_types import run_type, synced

pytestmark = pytest.mark.django_db

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPrivateNodeKeyOne one@example"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPrivateNodeKeyTwo two@example"
# A password hash the tests set on an account that existed before (never a real password).
HASH = "$6$testsalt$notarealhashnotarealhashnotarealhash"


def tools(log: str) -> dict[str, str]:
    """cron's, at's and logind's commands as the node has them: they record what they are
    asked (``loginctl`` as if the user had no session left)."""
    record = f'#!/bin/sh\necho "$(basename "$0") $*" >> {log}\n'
    jobs = "7\\tSat Dec  5 10:00:00 2026 a stranger\\n8\\tSat Dec  5 10:00:00 2026 a root\\n"
    atq = f'#!/bin/sh\nprintf "{jobs}"\n{record}'
    return {"crontab": record, "atq": atq, "atrm": record, "loginctl": record + "exit 1\n"}


@pytest.fixture
def state_dir(settings, tmp_path):
    settings.SYNC_NODE_STATE_DIR = str(tmp_path / "state")
    return tmp_path / "state"


@pytest.fixture
def role(db) -> Role:
    return Role.objects.create(name="staff")


@pytest.fixture
def private(sshd, role, state_dir, tmp_path) -> tuple[Node, PrivateNodeServer]:
    """A node of the role "staff" on its own /etc and /home, reached over real SSH."""
    if reason := private_nodes_unavailable():
        unavailable(reason)
    server = sshd(PrivateNodeServer, tools=tools(str(tmp_path / "jobs.log")))
    node = Node.objects.create(
        name="private",
        transport=Transport.SSH,
        host="127.0.0.1",
        port=server.port,
        username="root",
        host_key=server.host_key,
        facts={"os": {"id": "debian"}},
    )
    node.roles.add(role)
    return node, server


def managed(role: Role, name: str, **fields) -> ManagedUser:
    user = ManagedUser.objects.create(name=name, **fields)
    user.roles.add(role)
    return user


def uid_of(server: PrivateNodeServer, name: str) -> int:
    entry = server.passwd(name)
    assert entry is not None, f"{name} is not on the node"
    return int(entry[2])


def with_a_process(server: PrivateNodeServer, name: str) -> int:
    """Start a process of ``name`` on the node (as a login would leave one); its uid."""
    uid = uid_of(server, name)
    server.spawn("runuser", "-u", name, "--", "sleep", "1000")
    wait_for(lambda: server.processes_of(uid), timeout=10, interval=0.05)
    return uid


def logs_in(server: PrivateNodeServer, name: str, key: asyncssh.SSHKey) -> bool:
    """Whether ``name`` gets a shell on the node with ``key``, as the user would."""

    async def attempt() -> bool:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                port=server.port,
                username=name,
                client_keys=[key],
                known_hosts=None,
                agent_path=None,
            ) as conn:
                return (await conn.run("true")).exit_status == 0
        except asyncssh.PermissionDenied:
            return False

    return asyncio.run(attempt())


def public(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def keys_of(server: PrivateNodeServer, name: str) -> str:
    return (server.home / name / ".ssh" / "authorized_keys").read_text()


def error_of(node: Node) -> str:
    return Node2Sync.objects.get(node=node).last_error


def test_a_revoked_user_with_processes_is_locked_then_removed_and_the_others_still_change(
    private, role, tmp_path
):
    node, server = private
    leaver = managed(role, "leaver", authorized_keys=KEY1)
    keeper = managed(role, "keeper", authorized_keys=KEY1)
    synced(node, "users")
    uid = with_a_process(server, "leaver")

    leaver.state = UserState.ABSENT
    leaver.save()
    keeper.authorized_keys = KEY2  # a key rotation for someone else, in the same run
    keeper.save()
    log = synced(node, "users")

    assert server.passwd("leaver") is None
    assert not (server.home / "leaver").exists()
    assert server.processes_of(uid) == []
    assert keys_of(server, "keeper") == KEY2 + "\n"
    assert "leaver: access ended (password locked, account expired, crontab removed, " in log
    assert "lingering off, processes killed" in log
    assert "processes killed, authorized_keys removed)" in log
    assert "removed user leaver" in log
    jobs = (tmp_path / "jobs.log").read_text().splitlines()
    assert "crontab -r -u leaver" in jobs
    assert "loginctl disable-linger -- leaver" in jobs
    assert "loginctl terminate-user -- leaver" in jobs


def test_an_account_that_existed_before_fails_its_user_only_until_it_may_be_taken_over(
    private, role, state_dir
):
    node, server = private
    server.run("useradd", "--create-home", "--shell", "/bin/sh", "stranger")
    stranger = managed(role, "stranger", authorized_keys=KEY1)
    managed(role, "keeper", authorized_keys=KEY1)

    run = run_type(node, "users")

    assert run.outcome == Outcome.FAILED
    error = error_of(node)
    assert "1 user failed on this node (stranger)" in error
    assert "an account named stranger (uid" in error and "the panel did not create it" in error
    assert "Take over an account that already exists on the node" in error
    assert not (server.home / "stranger" / ".ssh").exists()
    assert keys_of(server, "keeper") == KEY1 + "\n"  # the other user went on
    manifest = json.loads((state_dir / str(node.uuid) / "users.json").read_text())
    assert sorted(manifest) == ["keeper"] and manifest["keeper"]["origin"] == "created"

    stranger.adopt_existing = True
    stranger.save()
    log = synced(node, "users")

    assert "stranger: took over the existing account" in log
    assert keys_of(server, "stranger") == KEY1 + "\n"
    manifest = json.loads((state_dir / str(node.uuid) / "users.json").read_text())
    assert manifest["stranger"]["origin"] == "adopted"
    assert manifest["stranger"]["uid"] == uid_of(server, "stranger")


def test_removing_a_taken_over_account_locks_it_and_takes_back_its_keys_but_keeps_it(
    private, role, tmp_path
):
    node, server = private
    managed_key, own_key = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(2))
    server.run("useradd", "--create-home", "--shell", "/bin/sh", "--password", HASH, "stranger")
    (server.home / "stranger" / "notes.txt").write_text("the user's own file\n")
    user = managed(role, "stranger", authorized_keys=public(managed_key), adopt_existing=True)
    synced(node, "users")
    ssh = server.home / "stranger" / ".ssh"
    (ssh / "authorized_keys2").write_text(public(own_key) + "\n")  # added by hand since
    assert logs_in(server, "stranger", managed_key) and logs_in(server, "stranger", own_key)
    uid = with_a_process(server, "stranger")

    user.delete()
    log = synced(node, "users")

    assert not logs_in(server, "stranger", managed_key)
    assert not logs_in(server, "stranger", own_key)
    assert uid_of(server, "stranger") == uid  # the account stays, and its home
    assert (server.home / "stranger" / "notes.txt").read_text() == "the user's own file\n"
    assert sorted(os.listdir(ssh)) == []
    shadow = server.shadow("stranger")
    assert shadow[1] == "!" + HASH and shadow[7] == "1"  # password locked, account expired
    assert server.processes_of(uid) == []
    jobs = (tmp_path / "jobs.log").read_text().splitlines()
    assert "crontab -r -u stranger" in jobs and "atrm -- 7" in jobs  # not root's job 8
    assert "stranger: locked and its keys taken back; the account and its home are kept" in log
    assert "stranger: kept locked" in synced(node, "users")

    managed(role, "stranger", authorized_keys=public(managed_key))  # wanted again: unlocked
    log = synced(node, "users")

    assert "stranger: unlocked" in log
    shadow = server.shadow("stranger")
    assert shadow[1] == HASH and shadow[7] == ""
    assert keys_of(server, "stranger") == public(managed_key) + "\n"
    assert logs_in(server, "stranger", managed_key)


def test_accounts_of_an_older_manifest_count_as_taken_over_and_are_never_deleted(
    private, role, state_dir
):
    node, server = private
    user = managed(role, "veteran", authorized_keys=KEY1)
    synced(node, "users")
    uid = uid_of(server, "veteran")
    manifest = state_dir / str(node.uuid) / "users.json"
    manifest.write_text(json.dumps({"veteran": uid}))  # as panels before this one wrote it

    user.delete()
    log = synced(node, "users")

    assert uid_of(server, "veteran") == uid
    assert (server.home / "veteran").is_dir()
    assert not (server.home / "veteran" / ".ssh" / "authorized_keys").exists()
    assert server.shadow("veteran")[7] == "1"
    assert "veteran: locked and its keys taken back" in log
    assert json.loads(manifest.read_text())["veteran"]["origin"] == "adopted"


def test_a_fifo_or_a_link_as_authorized_keys_is_replaced_without_being_read(private, role):
    node, server = private
    managed(role, "fifo", authorized_keys=KEY1)
    synced(node, "users")
    ssh = server.home / "fifo" / ".ssh"
    for name in ("authorized_keys", "authorized_keys2"):
        (ssh / name).unlink(missing_ok=True)
        os.mkfifo(ssh / name)  # opening it to read would wait for a writer for ever
    # Before the fix the run waited until its timeout: make that short, not the test's bound.
    SyncAction.objects.filter(name="users").update(timeout=20)

    started = time.monotonic()
    log = synced(node, "users")

    assert time.monotonic() - started < 10
    assert (ssh / "authorized_keys").is_file() and not (ssh / "authorized_keys").is_symlink()
    assert keys_of(server, "fifo") == KEY1 + "\n"
    assert not os.path.lexists(ssh / "authorized_keys2")
    assert "fifo: authorized_keys2 removed" in log

    shadow_before = (server.etc / "shadow").read_bytes()
    (ssh / "authorized_keys").unlink()
    (ssh / "authorized_keys").symlink_to("/etc/shadow")  # the node's own shadow file
    synced(node, "users")

    assert not (ssh / "authorized_keys").is_symlink()
    assert keys_of(server, "fifo") == KEY1 + "\n"
    assert (server.etc / "shadow").read_bytes() == shadow_before

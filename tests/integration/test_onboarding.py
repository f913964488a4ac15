"""Onboarding a server without copying keys by hand, against real sshd nodes that each have
their own /etc and /root (``private_nodes``), whose ``authorized_keys`` starts empty.

- The add page's one-line command, run on the node as its user, is all the preparation a
  server needs: the node is then added and converges to Ready.
- A one-time password (a sudoer's, through ``sudo -S``) installs the key instead, from the
  page and from ``addnode``; it is found nowhere afterwards: not in the database, not in
  Redis (the command's queue), not in any log file, and never in the command line of any
  process of the test while it is used.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.urls import reverse

from nodes.choices import NodeStatus
from nodes.keys import fingerprint, panel_public_key
from nodes.models import Node
from sync.audit import AuditEntry
from sync.engine import run_nodes
from tests.conftest import ROOT, process_env
from tests.integration.conftest import unavailable
from tests.integration.private_nodes import PrivateNodeServer
from tests.integration.private_nodes import unavailable as private_nodes_unavailable

pytestmark = pytest.mark.django_db

REDIS_DB = 11


class NewServer(PrivateNodeServer):
    """A freshly installed server: its host key in /etc/ssh, nothing in root's
    ``authorized_keys``, and password logins allowed (as many images ship)."""

    def __init__(self, workdir: Path, authorized_key: str) -> None:
        super().__init__(workdir, "")
        self.authorized_keys.write_text("")
        ssh_etc = self.etc / "ssh"
        for old in ssh_etc.glob("ssh_host_*"):
            old.unlink()
        (ssh_etc / "ssh_host_ed25519_key.pub").write_text(self.host_key + " root@new\n")
        # sudo's first-use lecture would be recorded on the test machine's /var/lib/sudo.
        rules = self.etc / "sudoers.d" / "test-node"
        rules.write_text("Defaults lecture=never\n")
        rules.chmod(0o440)

    def _config(self) -> Path:
        config = super()._config()
        text = config.read_text().replace("PasswordAuthentication no", "PasswordAuthentication yes")
        config.write_text(text)
        return config

    def add_sudoer(self, name: str, password: str) -> None:
        """A user of the group sudo with ``password`` (given on chpasswd's standard input)."""
        self.run("useradd", "--create-home", "--groups", "sudo", name)
        subprocess.run(self._enter(("chpasswd",)), input=f"{name}:{password}\n", text=True,
                       check=True, capture_output=True, timeout=30)  # fmt: skip


@pytest.fixture
def new_server(sshd, settings, tmp_path) -> NewServer:
    if reason := private_nodes_unavailable():
        unavailable(reason)
    if not Path("/usr/bin/sudo").exists():
        unavailable("sudo is not installed (apt-get install sudo)")
    settings.SYNC_NODE_STATE_DIR = str(tmp_path / "state")
    return sshd(NewServer)


def add_through_the_page(client, name: str, server: NewServer, **install) -> object:
    """The add page's two steps: the key shown, then confirmed (with ``install`` fields)."""
    form = {"name": name, "transport": "ssh", "host": "127.0.0.1", "port": server.port,
            "username": "root"}  # fmt: skip
    shown = client.post(reverse("nodes:add"), form).content.decode()
    assert fingerprint(server.host_key) in shown
    confirm = {**form, "confirmed_key": server.host_key, "scanned_for": f"127.0.0.1:{server.port}"}
    return client.post(reverse("nodes:add"), {**confirm, **install})


def test_a_server_prepared_with_the_one_line_command_is_added_and_converges(operator, new_server):
    page = operator.get(reverse("nodes:add"), {"user": "root", "only_from": "127.0.0.1"})
    command = html.unescape(
        re.search(
            r'<textarea id="key-command"[^>]*>(.*?)</textarea>', page.content.decode(), re.S
        ).group(1)  # fmt: skip
    )
    assert "\n" not in command and "http" not in command and "curl" not in command
    assert new_server.authorized_keys.read_text() == ""

    ran = new_server.run("sh", "-c", command)  # a root shell on the new server

    assert fingerprint(new_server.host_key) in ran.stdout
    assert new_server.authorized_keys.read_text() == f'from="127.0.0.1" {panel_public_key()}\n'
    again = new_server.run("sh", "-c", command)  # pasted twice: still one line
    assert again.returncode == 0
    assert new_server.authorized_keys.read_text().count("ssh-ed25519") == 1

    response = add_through_the_page(operator, "fresh", new_server)
    assert response.status_code == 302, response.content.decode()[-3000:]
    node = Node.objects.get(name="fresh")
    run_nodes([node.pk])
    node.refresh_from_db()
    assert node.status == NodeStatus.READY, node.last_error
    assert node.facts["os"]["id"] == "debian"


class CommandLines:
    """Samples, while it runs, the command line of every process of this test: its own
    descendants and the node's sshd with its sessions (``sudo`` and the shells among them)."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = set(roots)
        self.seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _family(self) -> list[Path]:
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    status = (entry / "status").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(re.search(r"PPid:\s+(\d+)", status).group(1))
        found = []
        for pid in parents:
            walk, hops = pid, 0
            while walk and walk not in self.roots and hops < 64:
                walk, hops = parents.get(walk, 0), hops + 1
            if walk in self.roots:
                found.append(Path("/proc", str(pid), "cmdline"))
        return found

    def _sample(self) -> None:
        while not self.stop.is_set():
            for path in self._family():
                try:
                    self.seen.add(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
            self.stop.wait(0.01)

    def __enter__(self) -> CommandLines:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def database_dump() -> str:
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            rows += [repr(row) for row in cursor.fetchall()]
    return "\n".join(rows)


def redis_dump(url: str) -> bytes:
    import redis

    client = redis.Redis.from_url(url)
    out = []
    for key in client.scan_iter():
        out.append(key)
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"list":
            out += client.lrange(key, 0, -1)
        elif kind == b"hash":
            out += [b"%s=%s" % kv for kv in client.hgetall(key).items()]
        elif kind in (b"set", b"zset"):
            out += list(client.zrange(key, 0, -1) if kind == b"zset" else client.smembers(key))
    client.close()
    return b"\n".join(out)


@pytest.mark.django_db(transaction=True)  # addnode, a process of its own, sees the nodes
def test_a_one_time_password_installs_the_key_and_is_kept_nowhere(
    operator, new_server, redis_db, tmp_path
):
    redis_url = redis_db(REDIS_DB)
    password = "pw-" + secrets.token_urlsafe(16)
    new_server.add_sudoer("admin", password)
    install = {"install_login": "admin", "install_password": password,
               "install_from": "127.0.0.1"}  # fmt: skip

    # A wrong password: refused, nothing added, the page does not carry what was typed.
    with CommandLines([os.getpid(), new_server.proc.pid]) as lines:
        wrong = add_through_the_page(operator, "fresh", new_server,
                                     **{**install, "install_password": password + "x"})  # fmt: skip
        assert wrong.status_code == 200
        assert "The panel&#x27;s key was not installed" in wrong.content.decode()
        assert password not in wrong.content.decode() and not Node.objects.exists()

        response = add_through_the_page(operator, "fresh", new_server, **install)
        assert response.status_code == 302, response.content.decode()[-3000:]
    page_lines = lines.seen
    node = Node.objects.get(name="fresh")
    assert new_server.authorized_keys.read_text() == f'from="127.0.0.1" {panel_public_key()}\n'
    entry = AuditEntry.objects.get(action="node.add")
    assert "installed with a one-time password of admin" in entry.summary

    # The same with addnode, whose queue is Redis here: the password on standard input.
    node.delete()
    new_server.authorized_keys.write_text("")
    data_dir = tmp_path / "command-panel"
    env = process_env(PANEL_DATA_DIR=str(data_dir), PANEL_REDIS_URL=redis_url,
                      PANEL_REDIS_INSECURE="1")  # fmt: skip
    args = ["addnode", "again", "--host", "127.0.0.1", "--port", str(new_server.port),
            "--fingerprint", fingerprint(new_server.host_key), "--install-key-as", "admin",
            "--key-from", "127.0.0.1"]  # fmt: skip
    with CommandLines([os.getpid(), new_server.proc.pid]) as lines:
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            input=password + "\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert "Installing the panel's key for root as admin" in done.stdout
    assert Node.objects.filter(name="again").exists()
    assert new_server.authorized_keys.read_text().startswith('from="127.0.0.1" ssh-ed25519 ')

    # Nowhere: the database, the queue, the logs, the command lines, the output.
    assert password not in database_dump()
    queued = redis_dump(redis_url)
    assert queued, "the command queued nothing in Redis: the search would prove nothing"
    assert password.encode() not in queued
    logs = [*Path(settings.LOG_DIR).glob("*.log*"), *(data_dir / "log").glob("*.log*"),
            new_server.dir / "sshd.log"]  # fmt: skip
    for log in logs:
        assert password.encode() not in log.read_bytes(), log
    seen = page_lines | lines.seen
    assert any("sudo -S" in line for line in seen), "the sampler saw no sudo"
    assert not [line for line in seen if password in line]
    assert password not in done.stdout + done.stderr

"""Shared fixtures: test-only synchronizer types, nodes, and the project's own commands run as
processes against the test database (what an admin types, with real exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from django.db import connection

from nodes.choices import NodeStatus, Transport
from nodes.models import Node
from sync.models import SyncAction
from sync.synchronizers import SynchronizerType, register_type, unregister_type

ROOT = Path(__file__).resolve().parent.parent


async def _noop(ctx) -> None:
    ctx.log("nothing to do")


@pytest.fixture
def make_type(db):
    """Register a test-only synchronizer type in the registry and in ``syncactions``."""
    made: list[str] = []

    def make(
        name: str,
        priority: int = 100,
        node_status: str = NodeStatus.SYNCHRONIZING,
        run: Callable[..., Awaitable[None]] = _noop,
        timeout: int = 30,
        needs: tuple[str, ...] | None = None,
    ) -> SyncAction:
        register_type(
            SynchronizerType(
                name, name.title(), priority, NodeStatus(node_status), timeout, run, (), needs
            )
        )
        made.append(name)
        action, _ = SyncAction.objects.update_or_create(
            name=name,
            defaults={
                "title": name.title(),
                "priority": priority,
                "node_status": node_status,
                "timeout": timeout,
                "needs_before": needs is None,
            },
        )
        action.needs.set(SyncAction.objects.filter(name__in=needs or ()))
        return action

    yield make
    for name in made:
        unregister_type(name)
    SyncAction.objects.filter(name__in=made).delete()


@pytest.fixture
def make_node(db):
    def make(name: str = "n1", **fields) -> Node:
        fields.setdefault("transport", Transport.LOCAL)
        fields.setdefault("host", "localhost")
        return Node.objects.create(name=name, **fields)

    return make


def database_url() -> str:
    """The URL of the database the tests use, for processes started by a test."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"mysql://{user}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 3306}/{s['NAME']}"


@pytest.fixture(autouse=True, scope="session")
def one_panel_with_its_processes():
    """The processes a test starts are machines of the test's own panel: they share its queue.

    Left to themselves they would derive their queue's name from the test database (the test
    process derived its own from the database the settings name, before the test database was
    made), and tasks queued by the test would wait in a queue no cluster reads.
    """
    from django.conf import settings

    os.environ.setdefault("PANEL_INSTANCE_NAME", settings.PANEL_INSTANCE_NAME)
    yield


@pytest.fixture(autouse=True)
def no_warm_connection_outlives_its_test():
    """A test's sessions keep their SSH connections warm as a worker does; they are closed
    when the test ends, with the test's sshd nodes (an sshd's open sessions outlive it)."""
    yield
    from nodes.transports import warm

    warm.close_all()


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, DATABASE_URL=database_url(), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_manage(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    """``manage.py ARGS`` in its own process with ``env``, as an admin would run it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def manage_ok(*args: str, env: dict[str, str], timeout: float = 180) -> str:
    """``run_manage`` that must succeed; its output."""
    done = run_manage(*args, env=env, timeout=timeout)
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture
def manage():
    """Run ``manage.py`` as an admin would, against the test database."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_manage(*args, env=process_env(), timeout=timeout)

    return run


@pytest.fixture
def sshd(tmp_path):
    """Start real sshd test nodes: ``sshd()`` returns a started ``SSHServer``."""
    from nodes.keys import panel_public_key
    from tools.sshd import SSHServer

    servers: list[SSHServer] = []

    def start(server_class: type[SSHServer] = SSHServer, **kwargs) -> SSHServer:
        server = server_class(tmp_path / f"sshd{len(servers)}", panel_public_key(), **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_ssh_node(db, sshd):
    """A node served by a fresh sshd, with its host key pinned as `addnode` pins it."""

    def make(name: str = "s1", **sshd_options) -> tuple[Node, object]:
        server = sshd(**sshd_options)
        node = Node.objects.create(
            name=name,
            transport=Transport.SSH,
            host="127.0.0.1",
            port=server.port,
            username="root",
            host_key=server.host_key,
        )
        return node, server

    return make


# --- Web users ------------------------------------------------------------------------------


def client_for(django_user_model, username: str, group: str | None, **client_options):
    """A logged-in test client for a user in ``group`` (Operators, Read-only or none)."""
    from django.contrib.auth.models import Group
    from django.test import Client

    from nodes.access import ensure_groups

    ensure_groups()
    user = django_user_model.objects.create_user(username)  # no hashing: force_login
    if group:
        user.groups.add(Group.objects.get(name=group))
    client = Client(**client_options)
    client.force_login(user)
    return client


@pytest.fixture
def operator(django_user_model):
    from nodes.access import OPERATORS

    return client_for(django_user_model, "op", OPERATORS)


@pytest.fixture
def reader(django_user_model):
    from nodes.access import READ_ONLY

    return client_for(django_user_model, "ro", READ_ONLY)


@pytest.fixture
def nobody(django_user_model):
    return client_for(django_user_model, "nobody", None)

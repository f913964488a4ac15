"""The checks made while a person waits (scan, proof, login) end within their bound, and the
proof of a new host key holds no database lock.

Against a real sshd whose ``ForceCommand`` stalls (the login succeeds, no command ever runs)
and a TCP listener that accepts and never speaks (no SSH banner): the page answers with a
clear error within ``NODE_CHECK_SECONDS``, never holding its thread for ever.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import contextmanager, suppress
from html import unescape

import pytest
from django.contrib.auth.models import Group
from django.db import connection, connections
from django.test import Client
from django.urls import reverse

from nodes.access import OPERATORS, ensure_groups
from nodes.models import Node
from nodes.transports import TransportError
from sync.actions import accept_host_key
from sync.actor import Actor

BOUND = 2  # seconds: NODE_CHECK_SECONDS in these tests
MARGIN = 3  # what the page itself may add (a scan, a render) on a busy 2-core machine
ADD = "/nodes/add/"


class Stalled(Exception):
    """The code under test held the thread far beyond its bound (what happened before)."""


@contextmanager
def guard(seconds: float):
    """Fail instead of hanging for ever when the check has no bound at all."""

    def interrupt(signum, frame):
        raise Stalled(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class SilentListener:
    """A TCP port that accepts connections and never sends a byte (no SSH banner)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent():
    listener = SilentListener()
    yield listener
    listener.close()


@pytest.fixture
def bounded(settings):
    settings.NODE_CHECK_SECONDS = BOUND


@pytest.fixture
def op_client(django_user_model) -> Client:
    ensure_groups()
    user = django_user_model.objects.create_user("op")
    user.groups.add(Group.objects.get(name=OPERATORS))
    client = Client()
    client.force_login(user)
    return client


def hidden(html: str, name: str) -> str:
    start = html.index(f'name="{name}" value="') + len(f'name="{name}" value="')
    return unescape(html[start : html.index('"', start)])


def timed_post(client: Client, url: str, data: dict):
    started = time.monotonic()
    with guard(BOUND + 30):
        response = client.post(url, data)
    return response, time.monotonic() - started


@pytest.fixture
def stalling_sshd(sshd, tmp_path):
    """A real sshd whose every session runs ``sleep`` in place of any command; the sessions
    it leaves behind (sshd does not end them when the client goes) are ended afterwards."""
    pids = tmp_path / "session-pids"
    yield sshd(force_command=f"echo $$ >> {pids}; exec sleep 600")
    for pid in pids.read_text().split() if pids.exists() else []:
        with suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@pytest.mark.django_db
def test_the_add_page_ends_a_login_that_stalls_within_the_bound(op_client, stalling_sshd, bounded):
    server = stalling_sshd
    data = {"name": "s1", "transport": "ssh", "host": "127.0.0.1", "port": server.port}
    first = op_client.post(ADD, data)
    html = first.content.decode()
    confirm = {
        "confirmed_key": hidden(html, "confirmed_key"),
        "scanned_for": f"127.0.0.1:{server.port}",
    }

    response, elapsed = timed_post(op_client, ADD, {**data, **confirm})

    assert response.status_code == 200
    errors = " ".join(response.context["form"].non_field_errors())
    assert f"did not run a command within {BOUND} s" in errors
    assert elapsed < BOUND + MARGIN, elapsed
    assert not Node.objects.exists()


@pytest.mark.django_db
def test_the_add_page_ends_a_scan_of_a_port_that_never_speaks(op_client, silent, bounded):
    data = {"name": "s1", "transport": "ssh", "host": "127.0.0.1", "port": silent.port}

    response, elapsed = timed_post(op_client, ADD, data)

    assert response.status_code == 200
    assert f"timed out after {BOUND}" in " ".join(response.context["form"].errors["host"])
    assert elapsed < BOUND + MARGIN, elapsed
    assert not Node.objects.exists()


@pytest.mark.django_db
def test_the_edit_page_ends_a_scan_of_a_port_that_never_speaks(
    op_client, make_ssh_node, silent, bounded
):
    node, _ = make_ssh_node("s1")
    data = {"name": "s1", "host": "127.0.0.1", "port": silent.port, "username": "root"}

    response, elapsed = timed_post(op_client, reverse("nodes:edit", args=[node.pk]), data)

    assert response.status_code == 200
    assert f"timed out after {BOUND}" in " ".join(response.context["form"].errors["host"])
    assert elapsed < BOUND + MARGIN, elapsed
    assert Node.objects.get(pk=node.pk).port == node.port


@pytest.mark.django_db(transaction=True)
def test_the_proof_of_a_key_holds_no_transaction_while_the_node_stalls(silent, bounded, sshd):
    """Prove first, then write: while the node stalls, another writer is not blocked (with
    SQLite's IMMEDIATE transactions one open transaction would block every writer)."""
    key = sshd().host_key  # a real key, which the silent port will never prove
    node = Node.objects.create(name="s1", transport="ssh", host="127.0.0.1", port=silent.port)
    failure: list[BaseException] = []

    def accept() -> None:
        try:
            accept_host_key(Actor.command("acceptkey"), node, key)
        except TransportError as e:
            failure.append(e)
        finally:
            connections.close_all()

    worker = threading.Thread(target=accept)
    worker.start()
    try:
        assert silent.accepted.wait(BOUND + 5), "the proof never connected"
        started = time.monotonic()
        Node.objects.create(name="other", transport="ssh", host="192.0.2.1")
        write_took = time.monotonic() - started
    finally:
        worker.join(BOUND + 30)
    assert not worker.is_alive()
    assert write_took < 1, f"a writer waited {write_took:.1f} s for the proof ({connection.vendor})"
    assert failure and "timed out" in str(failure[0])
    assert Node.objects.get(name="s1").host_key == ""

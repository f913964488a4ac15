"""Host keys are pinned as confirmed: the key pinned is the one whose fingerprint was shown.

A relay in the middle (``Relay``) forwards its first connections to one real sshd and the
later ones to another, as a man in the middle that switches servers between the scan the
admin saw and the pinning would. Whatever the switch, the second server's key is never
pinned: the page and ``acceptkey`` pin the key they showed, once the server proved it holds
it, or nothing.
"""

from __future__ import annotations

import re
import socket
import threading
from io import StringIO

import asyncssh
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from nodes.keys import fingerprint
from nodes.models import Node

pytestmark = pytest.mark.django_db

ADD = "/nodes/add/"


class Relay:
    """TCP on 127.0.0.1: connections 1..``switch_after`` go to ``first``, later ones to ``then``.

    Threads with timeouts, closed by ``close()``: a test never waits on it for long.
    """

    def __init__(self, first_port: int, then_port: int, switch_after: int) -> None:
        self.targets = (first_port, then_port)
        self.switch_after = switch_after
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            first, then = self.targets
            port = first if self.connections <= self.switch_after else then
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(30)
            upstream.settimeout(30)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self.threads.append(thread)
                thread.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def relay():
    made: list[Relay] = []

    def make(first, then, switch_after: int) -> Relay:
        made.append(Relay(first.port, then.port, switch_after))
        return made[-1]

    yield make
    for r in made:
        r.close()


def other_key() -> str:
    """A key no test server holds: what was pinned before the node was reinstalled."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_public_key().decode().strip()


def relayed_node(relay_: Relay, name: str = "s1") -> Node:
    return Node.objects.create(
        name=name, transport="ssh", host="127.0.0.1", port=relay_.port, host_key=other_key()
    )


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1).replace("&#x27;", "'").replace("&amp;", "&")


def form_fields(html: str) -> dict:
    """What a browser posts back: every hidden input of the page but the CSRF token."""
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    fields.pop("csrfmiddlewaretoken", None)
    return {k: v.replace("&#x27;", "'").replace("&amp;", "&") for k, v in fields.items()}


def run_acceptkey(*args: str) -> tuple[int, str]:
    """``manage.py acceptkey`` in process: (exit code, what it printed or the error)."""
    out = StringIO()
    try:
        call_command("acceptkey", *args, stdout=out, stderr=StringIO())
    except CommandError as e:
        return e.returncode, str(e)
    return 0, out.getvalue()


# --- The accept page ------------------------------------------------------------------------


@pytest.mark.parametrize("switch_after", [1, 2])
def test_it_never_pins_a_key_other_than_the_one_shown_on_the_accept_page(
    operator, sshd, relay, switch_after
):
    a, b = sshd(), sshd()
    r = relay(a, b, switch_after)
    node = relayed_node(r)
    pinned_before = node.host_key
    url = reverse("nodes:accept_key", args=[node.pk])

    page = operator.get(url)

    html = page.content.decode()
    assert fingerprint(a.host_key) in html and fingerprint(b.host_key) not in html
    response = operator.post(url, form_fields(html))

    node.refresh_from_db()
    assert node.host_key != b.host_key, "the relay's second server got its key pinned"
    if switch_after == 1:
        # B answered the proof: refused, nothing pinned, and the page now shows B's key.
        assert response.status_code == 200
        text = response.content.decode()
        assert "did not prove it holds the key you confirmed" in text
        assert fingerprint(b.host_key) in text and "Nothing was pinned" in text
        assert node.host_key == pinned_before
    else:
        # A answered the proof: the key the admin saw is pinned.
        assert response.status_code == 302
        assert node.host_key == a.host_key


def test_it_refuses_a_key_that_does_not_match_the_confirmed_fingerprint(operator, make_ssh_node):
    node, server = make_ssh_node("s1")
    pinned = node.host_key
    server.restart_with_new_host_key()

    response = operator.post(
        reverse("nodes:accept_key", args=[node.pk]),
        {"key": other_key(), "fingerprint": fingerprint(server.host_key)},
    )

    assert response.status_code == 200
    assert "is not the one whose fingerprint you confirmed" in response.content.decode()
    assert Node.objects.get(pk=node.pk).host_key == pinned


@pytest.mark.parametrize("key", ["", "garbage", "ssh-ed25519 AAAA"])
def test_it_refuses_a_missing_or_broken_key_without_a_500(operator, make_ssh_node, key):
    node, server = make_ssh_node("s1")
    pinned = node.host_key
    server.restart_with_new_host_key()

    response = operator.post(
        reverse("nodes:accept_key", args=[node.pk]),
        {"key": key, "fingerprint": fingerprint(server.host_key)},
    )

    assert response.status_code == 200
    assert "Nothing was pinned" in response.content.decode()
    assert Node.objects.get(pk=node.pk).host_key == pinned


# --- Adding and editing ---------------------------------------------------------------------


@pytest.mark.parametrize("switch_after", [1, 2])
def test_it_never_adds_a_node_with_the_key_of_a_server_the_relay_switched_to(
    operator, sshd, relay, switch_after
):
    a, b = sshd(), sshd()
    r = relay(a, b, switch_after)
    data = {"name": "s1", "transport": "ssh", "host": "127.0.0.1", "port": r.port}

    first = operator.post(ADD, data)

    html = first.content.decode()
    assert fingerprint(a.host_key) in html
    confirm = {"confirmed_key": hidden(html, "confirmed_key"), "scanned_for": f"127.0.0.1:{r.port}"}
    second = operator.post(ADD, {**data, **confirm})

    assert second.status_code == 200  # refused: the server behind the relay changed
    assert not Node.objects.filter(host_key=b.host_key).exists()
    assert not Node.objects.exists()


def test_it_refuses_a_confirmed_key_that_is_no_key(operator, sshd):
    server = sshd()
    data = {"name": "s1", "transport": "ssh", "host": "127.0.0.1", "port": server.port}

    response = operator.post(
        ADD, {**data, "confirmed_key": "garbage", "scanned_for": f"127.0.0.1:{server.port}"}
    )

    assert response.status_code == 200
    assert "not an SSH public key" in response.content.decode()
    assert not Node.objects.exists()


@pytest.mark.parametrize("switch_after", [1, 2])
def test_it_never_moves_a_node_to_the_key_of_a_server_the_relay_switched_to(
    operator, make_ssh_node, sshd, relay, switch_after
):
    node, _ = make_ssh_node("s1")
    a, b = sshd(), sshd()
    r = relay(a, b, switch_after)
    edit = reverse("nodes:edit", args=[node.pk])
    data = {"name": "s1", "host": "127.0.0.1", "port": r.port, "username": "root"}

    first = operator.post(edit, data)

    html = first.content.decode()
    assert fingerprint(a.host_key) in html
    confirm = {"confirmed_key": hidden(html, "confirmed_key"), "scanned_for": f"127.0.0.1:{r.port}"}
    second = operator.post(edit, {**data, **confirm})

    assert second.status_code == 200
    saved = Node.objects.get(pk=node.pk)
    assert saved.host_key == node.host_key and saved.port == node.port


# --- acceptkey ------------------------------------------------------------------------------


def test_it_refuses_acceptkey_with_another_fingerprint_and_names_both(make_ssh_node):
    node, server = make_ssh_node("s1")
    pinned = node.host_key
    server.restart_with_new_host_key()
    wrong = fingerprint(other_key())

    code, message = run_acceptkey("s1", "--fingerprint", wrong)

    assert code == 1
    assert wrong in message and fingerprint(server.host_key) in message
    assert "nothing was pinned" in message
    assert Node.objects.get(pk=node.pk).host_key == pinned


def test_it_pins_the_key_with_the_given_fingerprint(make_ssh_node):
    node, server = make_ssh_node("s1")
    server.restart_with_new_host_key()
    new = fingerprint(server.host_key)

    code, out = run_acceptkey("s1", "--fingerprint", new)

    assert code == 0, out
    assert new in out
    assert Node.objects.get(pk=node.pk).host_key == server.host_key


def test_it_refuses_acceptkey_when_the_relay_switches_after_the_scan(sshd, relay):
    a, b = sshd(), sshd()
    node = relayed_node(relay(a, b, switch_after=1))
    pinned = node.host_key

    code, message = run_acceptkey("s1", "--fingerprint", fingerprint(a.host_key))

    assert code == 1
    assert fingerprint(a.host_key) in message and fingerprint(b.host_key) in message
    assert Node.objects.get(pk=node.pk).host_key == pinned


def test_it_pins_the_scanned_key_without_fingerprint_and_prints_it(sshd, relay):
    a, b = sshd(), sshd()
    node = relayed_node(relay(a, b, switch_after=2))

    code, out = run_acceptkey("s1")

    assert code == 0, out
    assert f"Pinned {fingerprint(a.host_key)}" in out
    assert Node.objects.get(pk=node.pk).host_key == a.host_key


def test_it_refuses_a_fingerprint_that_is_no_sha256_fingerprint(make_ssh_node):
    node, _ = make_ssh_node("s1")

    code, message = run_acceptkey("s1", "--fingerprint", "MD5:aa:bb")

    assert code == 2
    assert "SHA256:" in message

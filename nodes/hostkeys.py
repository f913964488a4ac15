"""Pinning and accepting nodes' SSH host keys: trust on first use, then only by an admin.

The key that gets pinned is always one an admin saw: the page or the command scans a key
once, shows its fingerprint, and then pins *that* key, never the result of a later scan.
Before it is pinned the server must prove it holds it: a connection with only that key
trusted has to get through the key exchange, which the server signs with its host key. So
whatever answers between the scan and the pinning (a relay that switched servers, a node
reinstalled again) makes the accept fail and pins nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncssh
from asgiref.sync import async_to_sync
from django.conf import settings

from nodes.keys import fingerprint, safe_fingerprint
from nodes.models import Node
from nodes.transports import TransportError
from nodes.transports.ssh import (
    OtherHostKey,
    SSHTransport,
    _connection_error,
    connect_pinned,
    fetch_host_key,
)


class HostKeyMismatch(TransportError):
    """The server did not prove it holds the key the admin confirmed: nothing was pinned."""


@dataclass(frozen=True)
class HostKeyChange:
    old_fingerprint: str
    new_fingerprint: str

    @property
    def changed(self) -> bool:
        return self.old_fingerprint != self.new_fingerprint


def parse_host_key(text: str) -> str:
    """The OpenSSH line of a public key (``type base64``), or ValueError.

    Keys come back from forms and command lines: what is pinned is the parsed key written
    again, so a comment or stray blanks never reach the database.
    """
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError, TypeError, UnicodeError) as e:
        raise ValueError(f"not an SSH public key: {e}") from None
    key.set_comment(None)
    return key.export_public_key().decode().strip()


def check_seconds() -> float:
    """How long each check made while a person waits may take (``NODE_CHECK_SECONDS``).

    The scan, the proof and the login run in a web thread or a command: a node that accepts
    the connection and then never answers (a stalled sshd, a ``ForceCommand`` that hangs, a
    port that is no sshd) must end in an error the person reads, not hold the thread.
    """
    return float(settings.NODE_CHECK_SECONDS)


def scan_host_key(host: str, port: int) -> str:
    """The key the server presents now (TransportError when it cannot be reached)."""
    return async_to_sync(fetch_host_key)(host, port, timeout=check_seconds())


# How many servers a scan of many (or the checks of adding many) talks to at once.
SCAN_CONCURRENCY = 20

Address = tuple[str, int]


def scan_host_keys(
    addresses: Sequence[Address],
    progress: Callable[[Address, str | TransportError], None] | None = None,
) -> dict[Address, str | TransportError]:
    """The key each ``(host, port)`` presents now, or the TransportError that says why it
    cannot be read: the first step of adding many nodes, every key shown before any is
    pinned. All at once (a few at a time), each within ``check_seconds()``, so one
    unreachable host costs its timeout once, not once per line after it. ``progress`` is
    told each answer as it comes."""

    async def scan_all() -> dict[Address, str | TransportError]:
        limit = asyncio.Semaphore(SCAN_CONCURRENCY)

        async def scan(address: Address) -> tuple[Address, str | TransportError]:
            async with limit:
                try:
                    key = await fetch_host_key(*address, timeout=check_seconds())
                except TransportError as e:
                    return address, e
                return address, key

        found = {}
        for done in asyncio.as_completed([scan(a) for a in dict.fromkeys(addresses)]):
            address, answer = await done
            found[address] = answer
            if progress is not None:
                progress(address, answer)
        return found

    return async_to_sync(scan_all)()


async def login_check(node: Node) -> None:
    """Log in with the panel's key and the pinned host key and run ``true``, all of it within
    ``check_seconds()``; TransportError says what failed."""
    limit = check_seconds()
    transport = await SSHTransport.connect(node, timeout=limit)
    try:
        async with asyncio.timeout(limit):
            await transport.run(["true"])
    except TimeoutError:
        raise TransportError(
            f"{node.username}@{node.host}:{node.port} let the panel log in but did not run "
            f"a command within {limit:g} s (a login shell or ForceCommand that hangs?)"
        ) from None
    finally:
        # Abort, not close: a stalled node need not answer the goodbye either.
        transport.conn.abort()


def check_login(node: Node) -> None:
    """``login_check`` for synchronous callers (a page, a command)."""
    async_to_sync(login_check)(node)


async def _prove_host_key(host: str, port: int, username: str, key: str, timeout: float) -> None:
    try:
        conn = await connect_pinned(host, port, username, key, timeout=timeout)
    except OtherHostKey as e:
        raise HostKeyMismatch(
            f"{host}:{port} did not prove it holds the key you confirmed "
            f"({fingerprint(key)}): it presented a different key, {e.presented}. "
            "Nothing was pinned."
        ) from None
    except asyncssh.PermissionDenied:
        # Refused at login, which comes after the key exchange the server signed with the
        # confirmed key: it holds it. The login itself is the synchronizers' business.
        return
    except (TimeoutError, OSError, asyncssh.Error) as e:
        raise _connection_error(e, host, port, timeout) from None
    conn.close()
    await asyncio.wait_for(conn.wait_closed(), timeout)


def prove_host_key(node: Node, key: str) -> None:
    """Connect to ``node`` trusting only ``key``; HostKeyMismatch unless the server holds it.

    A refused login still proves the key (it is checked first), so a reinstalled node whose
    ``authorized_keys`` is not restored yet can have its key accepted.
    """
    async_to_sync(_prove_host_key)(node.host, node.port, node.username, key, check_seconds())


class NodeMoved(TransportError):
    """The node's address changed while its key was being proved: nothing was pinned."""


def pin_proved_key(node: Node, key: str) -> HostKeyChange:
    """Pin ``key``, which ``prove_host_key`` proved for ``node``'s address (no network here).

    Written only if the row still has the address the key was proved at: an edit that moved
    the node meanwhile makes this raise NodeMoved and pin nothing.
    """
    change = HostKeyChange(safe_fingerprint(node.host_key), fingerprint(key))
    same_place = Node.objects.filter(
        pk=node.pk, host=node.host, port=node.port, username=node.username
    )
    if not same_place.update(host_key=key, last_error=""):
        raise NodeMoved(
            f"{node.name} was changed while its key was being checked: nothing was pinned. "
            "Open the node again and accept its key there."
        )
    Node.objects.filter(pk=node.pk).drop_connections()
    node.host_key = key
    return change


def pin_host_key(node: Node, key: str) -> HostKeyChange:
    """Pin ``key`` (the one the admin confirmed) once the node proved it holds it.

    ValueError when ``key`` is no public key, HostKeyMismatch when the node does not hold
    it, TransportError when it cannot be reached; nothing is pinned then. What the pinning
    means for the node's synchronizers is the synchronization's business
    (``sync.actions.accept_host_key``): this app knows nothing of them. The proof talks to
    the node: call this outside a transaction (a stalling node would hold the database).
    """
    new_key = parse_host_key(key)
    prove_host_key(node, new_key)
    return pin_proved_key(node, new_key)

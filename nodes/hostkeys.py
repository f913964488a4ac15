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
from dataclasses import dataclass

import asyncssh
from asgiref.sync import async_to_sync

from nodes.keys import fingerprint, safe_fingerprint
from nodes.models import Node
from nodes.transports import TransportError
from nodes.transports.ssh import (
    CONNECT_TIMEOUT,
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


def scan_host_key(host: str, port: int) -> str:
    """The key the server presents now (TransportError when it cannot be reached)."""
    return async_to_sync(fetch_host_key)(host, port)


def check_login(node: Node) -> None:
    """Log in with the panel's key and the pinned host key; TransportError says what failed."""

    async def login() -> None:
        transport = await SSHTransport.connect(node)
        try:
            await transport.run(["true"])
        finally:
            await transport.close()

    async_to_sync(login)()


async def _prove_host_key(
    host: str, port: int, username: str, key: str, timeout: float = CONNECT_TIMEOUT
) -> None:
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
    async_to_sync(_prove_host_key)(node.host, node.port, node.username, key)


def pin_host_key(node: Node, key: str) -> HostKeyChange:
    """Pin ``key`` (the one the admin confirmed) once the node proved it holds it.

    ValueError when ``key`` is no public key, HostKeyMismatch when the node does not hold
    it, TransportError when it cannot be reached; nothing is pinned then. What the pinning
    means for the node's synchronizers is the synchronization's business
    (``sync.inventory.accept_host_key``): this app knows nothing of them.
    """
    new_key = parse_host_key(key)
    prove_host_key(node, new_key)
    change = HostKeyChange(safe_fingerprint(node.host_key), fingerprint(new_key))
    Node.objects.filter(pk=node.pk).update(host_key=new_key, last_error="")
    node.host_key = new_key
    return change

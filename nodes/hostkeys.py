"""Pinning and accepting nodes' SSH host keys: trust on first use, then only by an admin."""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.db import transaction

from nodes.keys import fingerprint
from nodes.models import Node
from nodes.transports.ssh import SSHTransport, fetch_host_key


@dataclass(frozen=True)
class HostKeyChange:
    old_fingerprint: str
    new_fingerprint: str

    @property
    def changed(self) -> bool:
        return self.old_fingerprint != self.new_fingerprint


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


def accept_host_key(node: Node) -> HostKeyChange:
    """Pin the key the node presents now and let its waiting synchronizers run at once.

    The desynchronizations that failed on the old key are registered again, which makes them
    due now instead of after their backoff.
    """
    from sync.engine import retry_now

    new_key = scan_host_key(node.host, node.port)
    change = HostKeyChange(
        fingerprint(node.host_key) if node.host_key else "none", fingerprint(new_key)
    )
    with transaction.atomic():
        Node.objects.filter(pk=node.pk).update(host_key=new_key, last_error="")
        node.host_key = new_key
        retry_now([node])
    return change

"""Transports: how the panel reaches a node. ``open_transport`` picks one by ``node.transport``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodes.choices import Transport as TransportKind
from nodes.transports.base import CommandFailed, CommandResult, Transport, TransportError

if TYPE_CHECKING:
    from nodes.models import Node

__all__ = ["CommandFailed", "CommandResult", "Transport", "TransportError", "open_transport"]


async def open_transport(node: Node) -> Transport:
    """Open one connection to ``node``; the caller closes it when its session ends."""
    if node.transport == TransportKind.LOCAL:
        from nodes.transports.local import LocalTransport

        return LocalTransport()
    from nodes.transports.ssh import SSHTransport

    return await SSHTransport.connect(node)

"""Transports: how the panel reaches a node. ``open_transport`` picks one by ``node.transport``."""

from __future__ import annotations

import os
import posixpath
import secrets
import socket
from typing import TYPE_CHECKING

from nodes.choices import Transport as TransportKind
from nodes.transports.base import CommandFailed, CommandResult, Transport, TransportError

if TYPE_CHECKING:
    from nodes.models import Node
    from nodes.transports.remote_runner import NodeSession

__all__ = [
    "CommandFailed",
    "CommandResult",
    "Transport",
    "TransportError",
    "open_warm_transport",
    "open_transport",
]


def node_session(node: Node) -> NodeSession:
    """This session's claim on the node, kept on the node (see ``remote_runner.NodeSession``).

    The lock file is named by the node's uuid (a rename keeps it; test nodes sharing one
    machine keep theirs apart) in a runtime folder that a reboot empties.
    """
    from django.conf import settings

    from nodes.transports.remote_runner import NodeSession

    run_dir = getattr(settings, "SYNC_NODE_RUN_DIR", "/run/cluster-panel")
    session_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    return NodeSession(posixpath.join(run_dir, f"{node.uuid}.lock"), session_id)


async def open_transport(node: Node) -> Transport:
    """Open one connection to ``node``; the caller closes it when its session ends."""
    if node.transport == TransportKind.LOCAL:
        from nodes.transports.local import LocalTransport

        return LocalTransport(node_session(node))
    from django.conf import settings

    if settings.SIM_TRANSPORT:  # benchmarks and tests only (see ``sim``)
        from nodes.transports.sim import SimSettings, SimTransport

        return await SimTransport.connect(node, SimSettings.parse(settings.SIM_TRANSPORT))
    from nodes.transports.ssh import SSHTransport

    return await SSHTransport.connect(node, session=node_session(node))


async def open_warm_transport(node: Node, *, fresh_after: float | None = None) -> Transport:
    """The transport of one worker's session on ``node``: an SSH node's is this worker's
    warm connection (``warm``), for the node's address read afresh from the database (an
    edit may have come in since the task loaded the node); others as ``open_transport``.
    ``fresh_after``: a warm connection older than this many seconds is replaced by a new one
    (the health probe's proof). ``close()`` puts a warm connection back for the next
    session."""
    from django.conf import settings

    from nodes.transports import warm

    if settings.SIM_TRANSPORT or not warm.node_is_warm_capable(node):
        return await open_transport(node)  # a simulated node is its own (see ``sim``)
    from asgiref.sync import sync_to_async

    address = await sync_to_async(warm.current_address, thread_sensitive=True)(node.pk)
    if address is None:
        raise TransportError(f"the node {node.name} was deleted")
    return await warm.open_warm(address, node_session(node), fresh_after=fresh_after)

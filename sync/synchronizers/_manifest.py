"""What the panel put on a node, kept on the node itself (JSON files in the state directory).

Removing something from the panel must remove it from the nodes, but a deleted row cannot say
what it was: the node's own record of what this panel manages there (paths, users, service
checksums) can. It lives on the node, so it stays right whatever happened to the panel's
database. Its folder is named by the node's uuid, not its name: a renamed node keeps its
record (and test nodes, which all share one machine, keep theirs apart).

This module declares no synchronizer type; the loader imports it like any other module here.
"""

from __future__ import annotations

import json
import posixpath
from typing import TYPE_CHECKING, Any

from django.conf import settings

from nodes.transports import TransportError
from sync.context import RunContext

if TYPE_CHECKING:
    from nodes.models import Node

DEFAULT_STATE_DIR = "/var/lib/cluster-panel"


def state_dir(node: Node) -> str:
    """The node's folder: named by its uuid, which a rename of the node does not change."""
    base = getattr(settings, "SYNC_NODE_STATE_DIR", DEFAULT_STATE_DIR)
    return posixpath.join(base, str(node.uuid))


def manifest_path(node: Node, kind: str) -> str:
    return posixpath.join(state_dir(node), f"{kind}.json")


def _legacy_manifest_path(node: Node, kind: str) -> str:
    """Where panels before node uuids kept the manifest: under the node's name."""
    base = getattr(settings, "SYNC_NODE_STATE_DIR", DEFAULT_STATE_DIR)
    return posixpath.join(base, node.name, f"{kind}.json")


async def read_manifest(ctx: RunContext, kind: str) -> dict[str, Any]:
    """The node's manifest ``kind`` (``files``, ``users``, ``services``); empty when missing.

    A manifest that cannot be parsed fails the run rather than count as empty: treating it as
    empty would forget what must be removed. A manifest still under the node's name (written
    by an older panel) is moved under its uuid on first read.
    """
    path = manifest_path(ctx.node, kind)
    if not await _exists(ctx, path):
        legacy = _legacy_manifest_path(ctx.node, kind)
        if not await _exists(ctx, legacy):
            return {}
        data = await _load(ctx, legacy)
        await write_manifest(ctx, kind, data)
        await ctx.transport.remove_file(legacy)
        return data
    return await _load(ctx, path)


async def _exists(ctx: RunContext, path: str) -> bool:
    """Whether the manifest is there; anything but a regular file there fails the run."""
    state = await ctx.transport.stat_file(path)
    if state.kind == "refused":
        raise TransportError(state.reason)
    return state.is_file


async def _load(ctx: RunContext, path: str) -> dict[str, Any]:
    raw = await ctx.transport.read_file(path)
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"the manifest {path} on the node is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"the manifest {path} on the node is not a JSON object")
    return data


async def write_manifest(ctx: RunContext, kind: str, data: dict[str, Any]) -> None:
    """Replace the node's manifest atomically (readable by root only: it maps the node)."""
    directory = state_dir(ctx.node)
    await ctx.transport.make_dir(directory)
    body = json.dumps(data, indent=2, sort_keys=True) + "\n"
    await ctx.transport.put_file(manifest_path(ctx.node, kind), body.encode(), mode=0o600)

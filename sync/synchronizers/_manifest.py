"""What the panel put on a node, kept on the node itself (JSON files in the state directory).

Removing something from the panel must remove it from the nodes, but a deleted row cannot say
what it was: the node's own record of what this panel manages there (paths, users, service
checksums) can. It lives on the node, so it stays right whatever happened to the panel's
database, and the node name is part of the path because test nodes all share one machine.

This module declares no synchronizer type; the loader imports it like any other module here.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from django.conf import settings

from sync.context import RunContext

DEFAULT_STATE_DIR = "/var/lib/cluster-panel"


def state_dir(node_name: str) -> str:
    base = getattr(settings, "SYNC_NODE_STATE_DIR", DEFAULT_STATE_DIR)
    return posixpath.join(base, node_name)


def manifest_path(node_name: str, kind: str) -> str:
    return posixpath.join(state_dir(node_name), f"{kind}.json")


async def read_manifest(ctx: RunContext, kind: str) -> dict[str, Any]:
    """The node's manifest ``kind`` (``files``, ``users``, ``services``); empty when missing.

    A manifest that cannot be parsed fails the run rather than count as empty: treating it as
    empty would forget what must be removed.
    """
    path = manifest_path(ctx.node.name, kind)
    exists = await ctx.transport.run(["test", "-f", path], check=False)
    if exists.exit_status != 0:
        return {}
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
    directory = state_dir(ctx.node.name)
    await ctx.transport.run(["mkdir", "-p", "--", directory])
    body = json.dumps(data, indent=2, sort_keys=True) + "\n"
    await ctx.transport.put_file(manifest_path(ctx.node.name, kind), body.encode(), mode=0o600)

"""SSH nodes, with asyncssh: the panel's key, the node's pinned host key, one connection per
node session.

SSH carries a command as one string that the node's login shell parses, so argument lists
are quoted with ``shlex.join``: every argument reaches the program literally, whatever it
holds.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncssh

from nodes.keys import fingerprint, load_panel_key
from nodes.transports.base import CommandFailed, CommandResult, Transport, TransportError

if TYPE_CHECKING:
    from nodes.models import Node

CONNECT_TIMEOUT = 15
KEEPALIVE_INTERVAL = 15

# Writes stdin to a temporary file beside the target, sets mode and owner, renames it into
# place. The script is fixed; paths and names arrive as positional arguments ($1...).
_PUT_FILE_SCRIPT = (
    'set -e; umask 077; tmp=$1; trap \'rm -f -- "$tmp"\' EXIT; cat > "$tmp"; '
    'chmod -- "$2" "$tmp"; if [ -n "$3" ]; then chown -- "$3" "$tmp"; fi; '
    'mv -f -- "$tmp" "$4"; trap - EXIT'
)


class HostKeyChanged(TransportError):
    """The node presented a host key other than the pinned one: nothing may run there."""


class SSHTransport(Transport):
    def __init__(self, node_name: str, conn: asyncssh.SSHClientConnection) -> None:
        self.node_name = node_name
        self.conn = conn

    @classmethod
    async def connect(cls, node: Node, *, timeout: float = CONNECT_TIMEOUT) -> SSHTransport:
        if not node.host_key:
            raise HostKeyChanged(
                f"no host key is pinned for {node.name}: accept the node's key with "
                f"`manage.py acceptkey {node.name}`"
            )
        pinned = asyncssh.import_public_key(node.host_key)
        try:
            conn = await asyncssh.connect(
                node.host,
                node.port,
                username=node.username,
                client_keys=[load_panel_key()],
                known_hosts=([pinned], [], []),
                agent_path=None,
                config=None,
                connect_timeout=timeout,
                keepalive_interval=KEEPALIVE_INTERVAL,
            )
        except asyncssh.HostKeyNotVerifiable:
            presented = await _presented_key(node.host, node.port)
            raise HostKeyChanged(
                f"host key changed: {node.host}:{node.port} presented "
                f"{fingerprint(presented) if presented else 'an unknown key'}, the panel pinned "
                f"{fingerprint(node.host_key)}. If the node was reinstalled, accept the new key "
                f"with `manage.py acceptkey {node.name}`; otherwise someone may be "
                "intercepting the connection."
            ) from None
        except asyncssh.PermissionDenied:
            raise TransportError(
                f"authentication refused: {node.username}@{node.host}:{node.port} does not accept "
                f"the panel's key; add the output of `manage.py panelkey` to "
                f"~{node.username}/.ssh/authorized_keys on the node"
            ) from None
        except (TimeoutError, OSError, asyncssh.Error) as e:
            raise _connection_error(e, node.host, node.port, timeout) from None
        return cls(node.name, conn)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        result = await self._run_bytes(argv, input=input, timeout=timeout)
        out = CommandResult(
            list(argv),
            result.exit_status if result.exit_status is not None else -1,
            (result.stdout or b"").decode(errors="replace"),
            (result.stderr or b"").decode(errors="replace"),
        )
        if check and out.exit_status != 0:
            raise CommandFailed(argv, out.exit_status, out.stderr)
        return out

    async def _run_bytes(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> asyncssh.SSHCompletedProcess:
        command = shlex.join(str(a) for a in argv)
        try:
            async with asyncio.timeout(timeout):
                return await self.conn.run(command, input=input, encoding=None, check=False)
        except asyncssh.ChannelOpenError as e:
            raise TransportError(f"ssh channel refused on {self.node_name}: {e.reason}") from None
        except asyncssh.Error as e:
            raise TransportError(f"ssh error on {self.node_name}: {e.reason}") from None
        except ConnectionError as e:
            raise TransportError(f"connection to {self.node_name} lost: {e}") from None

    async def put_file(
        self,
        path: str,
        data: bytes,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        if not path.startswith("/"):
            raise TransportError(f"cannot write {path}: the path must be absolute")
        directory = path.rpartition("/")[0] or "/"
        tmp = f"{directory.rstrip('/')}/.panel-{secrets.token_hex(6)}.tmp"
        owner_group = f"{owner or ''}:{group}" if group else (owner or "")
        await self.run(
            ["sh", "-c", _PUT_FILE_SCRIPT, "panel-put", tmp, f"{mode:o}", owner_group, path],
            input=data,
        )

    async def read_file(self, path: str) -> bytes:
        result = await self._run_bytes(["cat", "--", path])
        if result.exit_status != 0:
            stderr = (result.stderr or b"").decode(errors="replace").strip()
            raise TransportError(
                f"cannot read {path}: {stderr or 'exit ' + str(result.exit_status)}"
            )
        return result.stdout or b""

    async def close(self) -> None:
        self.conn.close()
        await self.conn.wait_closed()


def _connection_error(error: Exception, host: str, port: int, timeout: float) -> TransportError:
    """The admin's words for a connection that failed before any host key question."""
    if isinstance(error, TimeoutError):
        return TransportError(
            f"unreachable: connecting to {host}:{port} timed out after {timeout} s"
        )
    if isinstance(error, OSError):
        return TransportError(
            f"unreachable: cannot connect to {host}:{port}: {error.strerror or error}"
        )
    return TransportError(f"ssh error with {host}:{port}: {getattr(error, 'reason', error)}")


async def _presented_key(host: str, port: int) -> str | None:
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(host, port, config=None), CONNECT_TIMEOUT
        )
    except (OSError, asyncssh.Error, TimeoutError):
        return None
    return key.export_public_key().decode().strip() if key else None


async def fetch_host_key(host: str, port: int, *, timeout: float = CONNECT_TIMEOUT) -> str:
    """The host key a server presents (to pin on first use); TransportError when unreachable."""
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(host, port, config=None), timeout)
    except (TimeoutError, OSError, asyncssh.Error) as e:
        raise _connection_error(e, host, port, timeout) from None
    if key is None:
        raise TransportError(f"{host}:{port} presented no host key")
    return key.export_public_key().decode().strip()

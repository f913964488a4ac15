"""SSH nodes, with asyncssh: the panel's key, the node's pinned host key, one connection per
node session.

SSH carries a command as one string that the node's login shell parses, so argument lists
are quoted with ``shlex.join``: every argument reaches the program literally, whatever it
holds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shlex
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh

from nodes.keys import fingerprint, load_panel_key
from nodes.transports import remote_runner
from nodes.transports.base import CommandFailed, CommandResult, Transport, TransportError

if TYPE_CHECKING:
    from nodes.models import Node

CONNECT_TIMEOUT = 15
KEEPALIVE_INTERVAL = 15

# Writes stdin to a temporary file beside the target, sets mode and owner, renames it into
# place. The script is fixed; paths and names arrive as positional arguments ($1...).
_PUT_FILE_SCRIPT = (
    'set -e; umask 077; tmp=$1; trap \'rm -f -- "$tmp"\' EXIT; cat > "$tmp"; '
    'if [ -n "$3" ]; then chown -- "$3" "$tmp"; fi; chmod -- "$2" "$tmp"; '
    'mv -f -- "$tmp" "$4"; trap - EXIT'
)


RUNNER_SOURCE = Path(remote_runner.__file__).read_text()
RUNNER_START_TIMEOUT = 30


class _Runner:
    """The session's one command channel on the node (see ``remote_runner``)."""

    def __init__(self, process: asyncssh.SSHClientProcess) -> None:
        self.process = process
        self.lock = asyncio.Lock()

    @classmethod
    async def start(cls, conn: asyncssh.SSHClientConnection) -> _Runner | None:
        """Start the runner; None when the node cannot run it (no python3 there)."""
        process = await conn.create_process(
            shlex.join(["python3", "-c", RUNNER_SOURCE]), encoding=None
        )
        runner = cls(process)
        try:
            async with asyncio.timeout(RUNNER_START_TIMEOUT):
                reply = await runner.request({"op": "hello"})
        except (asyncio.IncompleteReadError, ConnectionError, asyncssh.Error, TimeoutError):
            process.close()
            return None
        return runner if reply.get("ok") else None

    async def request(self, message: dict) -> dict:
        async with self.lock:
            try:
                data = json.dumps(message).encode()
                self.process.stdin.write(struct.pack(">I", len(data)) + data)
                (size,) = struct.unpack(">I", await self.process.stdout.readexactly(4))
                return json.loads(await self.process.stdout.readexactly(size))
            except BaseException:
                # Cancelled or broken mid-request: the channel's state is unknown, drop it.
                self.process.close()
                raise

    @property
    def alive(self) -> bool:
        return not self.process.is_closing()


class HostKeyChanged(TransportError):
    """The node presented a host key other than the pinned one: nothing may run there."""


class SSHTransport(Transport):
    def __init__(self, node_name: str, conn: asyncssh.SSHClientConnection) -> None:
        self.node_name = node_name
        self.conn = conn
        self._runner: _Runner | None = None
        self._runner_available = True

    async def _get_runner(self) -> _Runner | None:
        """The command runner, started on first use; None: plain SSH commands instead."""
        if self._runner is not None and not self._runner.alive:
            self._runner = None
        if self._runner is None and self._runner_available:
            with self._translated_errors():
                self._runner = await _Runner.start(self.conn)
            self._runner_available = self._runner is not None
        return self._runner

    async def _request(self, message: dict, timeout: float | None = None) -> dict:
        runner = await self._get_runner()
        assert runner is not None
        with self._translated_errors():
            # The runner enforces the command's timeout itself; this one is for a dead link.
            async with asyncio.timeout(None if timeout is None else timeout + 10):
                return await runner.request(message)

    def _translated_errors(self):
        return _translate_errors(self.node_name)

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
        argv = [str(a) for a in argv]
        if await self._get_runner():
            reply = await self._request(
                {
                    "op": "run",
                    "argv": argv,
                    "input": None if input is None else base64.b64encode(input).decode(),
                    "timeout": timeout,
                },
                timeout,
            )
            if reply.get("timeout"):
                raise TimeoutError(f"`{shlex.join(argv)[:200]}` timed out after {timeout} s")
            exit_status = reply["rc"]
            stdout, stderr = base64.b64decode(reply["out"]), base64.b64decode(reply["err"])
        else:
            result = await self._run_bytes(argv, input=input, timeout=timeout)
            exit_status = result.exit_status if result.exit_status is not None else -1
            stdout, stderr = result.stdout or b"", result.stderr or b""
        out = CommandResult(
            argv, exit_status, stdout.decode(errors="replace"), stderr.decode(errors="replace")
        )
        if check and out.exit_status != 0:
            raise CommandFailed(argv, out.exit_status, out.stderr)
        return out

    async def _run_bytes(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> asyncssh.SSHCompletedProcess:
        command = shlex.join(str(a) for a in argv)
        with self._translated_errors():
            async with asyncio.timeout(timeout):
                return await self.conn.run(command, input=input, encoding=None, check=False)

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
        if await self._get_runner():
            reply = await self._request(
                {
                    "op": "put",
                    "path": path,
                    "data": base64.b64encode(data).decode(),
                    "mode": mode,
                    "owner": owner,
                    "group": group,
                }
            )
            if "error" in reply:
                raise TransportError(f"cannot write {path}: {reply['error']}")
            return
        directory = path.rpartition("/")[0] or "/"
        tmp = f"{directory.rstrip('/')}/.panel-{secrets.token_hex(6)}.tmp"
        owner_group = f"{owner or ''}:{group}" if group else (owner or "")
        await self.run(
            ["sh", "-c", _PUT_FILE_SCRIPT, "panel-put", tmp, f"{mode:o}", owner_group, path],
            input=data,
        )

    async def read_file(self, path: str) -> bytes:
        if await self._get_runner():
            reply = await self._request({"op": "read", "path": path})
            if "error" in reply:
                raise TransportError(f"cannot read {path}: {reply['error']}")
            return base64.b64decode(reply["data"])
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


class _translate_errors:
    """Turn asyncssh's and the stream's errors into TransportError with the node's name."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if isinstance(error, asyncssh.ChannelOpenError):
            raise TransportError(
                f"ssh channel refused on {self.node_name}: {error.reason}"
            ) from None
        if isinstance(error, asyncssh.Error):
            raise TransportError(f"ssh error on {self.node_name}: {error.reason}") from None
        if isinstance(error, ConnectionError | asyncio.IncompleteReadError | BrokenPipeError):
            raise TransportError(f"connection to {self.node_name} lost: {error}") from None
        return False


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

"""SSH nodes, with asyncssh: the panel's key, the node's pinned host key, one connection per
node session.

How a session works its node is chosen once, when it first uses it: through the runner
(``channel``) when the node has python3, else plain SSH commands and the shell's file
operations (``shell_files``). SSH carries a command as one string that the node's login shell
parses, so argument lists are quoted with ``shlex.join``: every argument reaches the program
literally, whatever it holds.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import re
import shlex
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncssh

from nodes.keys import fingerprint, keys_for_node, panel_keys
from nodes.transports.base import (
    CommandFailed,
    CommandResult,
    OutputCallback,
    Transport,
    TransportError,
)
from nodes.transports.channel import RunnerChannel
from nodes.transports.fileops import FileOps, RunnerFileOps
from nodes.transports.limits import MESSAGE_LIMIT, OUTPUT_LIMIT, clean, keep_head_and_tail
from nodes.transports.replies import (
    NotARunnerReply,
    bad_reply,
    reply_bytes,
    reply_error,
    reply_int,
)
from nodes.transports.shell_files import ShellFileOps
from nodes.transports.streams import PlainOutput, run_plain

if TYPE_CHECKING:
    from nodes.models import Node
    from nodes.transports.remote_runner import NodeSession

CONNECT_TIMEOUT = 15
KEEPALIVE_INTERVAL = 15

# The name tests patch (``start`` returning None) to play a node without python3.
_Runner = RunnerChannel

# A command as the session runs it: (argv, input, timeout, on_output) -> (status, out, err).
_Commands = Callable[
    [list[str], bytes | None, float | None, OutputCallback | None],
    Awaitable[tuple[int, bytes, bytes]],
]


@dataclass(frozen=True)
class NodeAddress:
    """What a connection to a node is opened with, read from the node's row: a plain value
    that another thread may hold (a model instance would query the database from there).

    Two equal addresses may share one warm connection (``warm``); any change of these
    fields, or of the generation (``Node.connection_generation``), means a new one.
    """

    pk: int
    name: str
    host: str
    port: int
    username: str
    host_key: str
    panel_key: str
    generation: int = 0
    maintenance: bool = False

    @classmethod
    def of(cls, node: Node) -> NodeAddress:
        return cls(
            node.pk,
            node.name,
            node.host,
            node.port,
            node.username,
            node.host_key,
            node.panel_key,
            node.connection_generation,
            node.maintenance,
        )


class HostKeyChanged(TransportError):
    """The node presented a host key other than the pinned one: nothing may run there."""


class Unreachable(TransportError):
    """No SSH conversation at all: the connection timed out or was refused."""


class SSHTransport(Transport):
    def __init__(
        self,
        node_name: str,
        conn: asyncssh.SSHClientConnection,
        session: NodeSession | None = None,
    ) -> None:
        self.node_name = node_name
        self.conn = conn
        self.session = session
        self._runner: RunnerChannel | None = None
        # Chosen together, once per session (``_choose``): the runner's or plain SSH.
        self._commands: _Commands | None = None
        self._files: FileOps | None = None

    async def _choose(self) -> None:
        """Start the runner on first use; without one (no python3 on the node), the whole
        session runs plain SSH commands and the shell's file operations."""
        if self._commands is not None:
            return
        with self._translated_errors():
            self._runner = await _Runner.start(self.conn, self.session)
        if self._runner is None:
            self._commands, self._files = self._run_plain, ShellFileOps(self._plain)
        else:
            self._commands = self._run_by_runner
            self._files = RunnerFileOps(self._request, self.node_name)

    async def _file_ops(self) -> FileOps:
        await self._choose()
        assert self._files is not None
        return self._files

    async def _request(
        self,
        message: dict,
        timeout: float | None = None,
        on_progress: OutputCallback | None = None,
    ) -> dict:
        """One request to the runner, started again if its channel was dropped (a cancelled
        request closes it); the node is taken again for this session then."""
        with self._translated_errors():
            if self._runner is None or not self._runner.alive:
                self._runner = await _Runner.start(self.conn, self.session)
                if self._runner is None:
                    raise TransportError(f"the runner on {self.node_name} could not start again")
            runner, dropped = self._runner, self._runner.progress_dropped
            try:
                # The runner enforces the command's timeout itself; this one is for a dead link.
                async with asyncio.timeout(None if timeout is None else timeout + 10):
                    return await runner.request(message, on_progress)
            finally:
                self.progress_dropped += runner.progress_dropped - dropped

    def _translated_errors(self):
        return _translate_errors(self.node_name)

    @property
    def usable(self) -> bool:
        """The SSH connection is still open (a keepalive that went unanswered closes it)."""
        return not self.conn.is_closed()

    async def begin_session(self, session: NodeSession | None, timeout: float) -> None:
        """Serve a new node session on this open connection (a warm one, ``warm``): its
        runner takes the node for ``session`` (one round trip), or starts again if a
        cancelled request closed it. That answer is also the proof that the connection still
        works: TransportError when it does not, and nothing ran."""
        self.session = session
        if not self.usable:
            raise TransportError(f"the connection to {self.node_name} was closed")
        if self._commands != self._run_by_runner:
            return  # nothing chosen yet (the first use chooses), or plain SSH commands
        with self._translated_errors():
            if self._runner is not None and self._runner.alive:
                await self._runner.take_node(session, timeout)
                return
            self._runner = await _Runner.start(self.conn, session)
        if self._runner is None:
            raise TransportError(f"the runner on {self.node_name} could not start again")

    async def end_session(self, timeout: float) -> bool:
        """The node session is over; True when this connection may serve the next one.

        The runner lets the node go (``release``): the node's lock no longer names the
        session, and the runner stays started for the next session.
        """
        if not self.usable:
            return False
        if self._runner is not None and self._runner.alive:
            try:
                with self._translated_errors():
                    await self._runner.release_node(timeout)
            except TransportError:
                return False
        self.session = None
        return True

    @classmethod
    async def connect(
        cls,
        node: Node | NodeAddress,
        *,
        timeout: float = CONNECT_TIMEOUT,
        session: NodeSession | None = None,
    ) -> SSHTransport:
        if not node.host_key:
            raise HostKeyChanged(
                f"no host key is pinned for {node.name}: the node's key must be checked and "
                "accepted first"
            )
        try:
            conn = await connect_pinned(
                node.host,
                node.port,
                node.username,
                node.host_key,
                timeout=timeout,
                client_keys=keys_for_node(node.panel_key),
                keepalive_interval=KEEPALIVE_INTERVAL,
            )
        except OtherHostKey as e:
            raise HostKeyChanged(
                f"host key changed: {node.host}:{node.port} presented {e.presented}, the panel "
                f"pinned {fingerprint(node.host_key)}. Accept the new key only if the node was "
                "reinstalled; otherwise someone may be intercepting the connection."
            ) from None
        except asyncssh.PermissionDenied:
            raise TransportError(
                f"authentication refused: {node.username}@{node.host}:{node.port} does not accept "
                f"the panel's key; add the output of `manage.py panelkey` to "
                f"~{node.username}/.ssh/authorized_keys on the node"
            ) from None
        except (TimeoutError, OSError, asyncssh.Error) as e:
            raise _connection_error(e, node.host, node.port, timeout) from None
        return cls(node.name, conn, session)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        argv = [str(a) for a in argv]
        await self._choose()
        assert self._commands is not None
        exit_status, stdout, stderr = await self._commands(argv, input, timeout, on_output)
        out = CommandResult(
            argv, exit_status, stdout.decode(errors="replace"), stderr.decode(errors="replace")
        )
        if check and out.exit_status != 0:
            raise CommandFailed(argv, out.exit_status, out.stderr)
        return out

    async def _run_by_runner(
        self,
        argv: list[str],
        input: bytes | None,
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> tuple[int, bytes, bytes]:
        request = {
            "op": "run",
            "argv": argv,
            "input": None if input is None else base64.b64encode(input).decode(),
            "timeout": timeout,
            "progress": on_output is not None,
        }
        reply = await self._request(request, timeout, on_output)
        if reply.get("timeout") is True:
            raise TimeoutError(f"`{shlex.join(argv)[:200]}` timed out after {timeout} s")
        with self._translated_errors():
            if (error := reply_error(reply)) is not None:
                raise TransportError(f"cannot run `{shlex.join(argv)[:200]}`: {error}")
            # Our runner cut them already; a node that is not our runner may not have.
            return (
                reply_int(reply, "rc"),
                keep_head_and_tail(reply_bytes(reply, "out"), OUTPUT_LIMIT),
                keep_head_and_tail(reply_bytes(reply, "err"), OUTPUT_LIMIT),
            )

    async def _run_plain(
        self,
        argv: list[str],
        input: bytes | None,
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> tuple[int, bytes, bytes]:
        """A node without python3: one SSH channel per command, no output while it runs."""
        result = await self._plain(argv, input=input, timeout=timeout)
        exit_status = result.exit_status if result.exit_status is not None else -1
        return exit_status, result.stdout, result.stderr

    async def _plain(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        file_limit: int | None = None,
    ) -> PlainOutput:
        with self._translated_errors():
            return await run_plain(
                self.conn, argv, input=input, timeout=timeout, file_limit=file_limit
            )

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
        if isinstance(error, NotARunnerReply):
            raise bad_reply(self.node_name, error) from None
        if isinstance(error, asyncssh.ChannelOpenError):
            raise TransportError(
                f"ssh channel refused on {self.node_name}: {_said(error.reason)}"
            ) from None
        if isinstance(error, asyncssh.Error):
            raise TransportError(f"ssh error on {self.node_name}: {_said(error.reason)}") from None
        if isinstance(error, ConnectionError | asyncio.IncompleteReadError | BrokenPipeError):
            raise TransportError(f"connection to {self.node_name} lost: {error}") from None
        return False


def _connection_error(error: Exception, host: str, port: int, timeout: float) -> TransportError:
    """The admin's words for a connection that failed before any host key question: what
    is wrong with the address, never Python's text (a tuple of the socket address, a class
    name)."""
    if isinstance(error, TimeoutError):
        return Unreachable(f"unreachable: connecting to {host}:{port} timed out after {timeout} s")
    if isinstance(error, OSError):
        return Unreachable(f"unreachable: {host}:{port} {_socket_reason(error, host, port)}")
    return TransportError(f"ssh error with {host}:{port}: {_said(getattr(error, 'reason', error))}")


# asyncio's text for one refused address, and for several ("Multiple exceptions: [Errno 111]
# Connect call failed ('::1', 22), [Errno 111] ..."), which holds no errno of its own.
_ERRNO_IN_TEXT = re.compile(r"\[Errno (-?\d+)\]")


def _socket_reason(error: OSError, host: str, port: int) -> str:
    """Why a connection to ``host:port`` failed, as a sentence after the address."""
    if isinstance(error, socket.gaierror):
        if error.errno == socket.EAI_AGAIN:
            return (
                f"cannot be reached: {host} is not an IP address or a resolvable name (or the "
                "name server did not answer)"
            )
        return f"cannot be reached: {host} is not an IP address or a resolvable name"
    codes = [error.errno] if error.errno is not None else []
    codes = codes or [int(c) for c in _ERRNO_IN_TEXT.findall(str(error))]
    if codes and all(c == errno.ECONNREFUSED for c in codes):
        return f"refused the connection: nothing listens on {port}?"
    for code in codes:
        if code != errno.ECONNREFUSED:
            return f"cannot be reached: {os.strerror(code)}"
    return "cannot be reached: the connection failed"


def _said(reason: object) -> str:
    """What the server said (a disconnect reason is the node's own text): cleaned, capped."""
    return clean(str(reason), MESSAGE_LIMIT, one_line=True)


class OtherHostKey(Exception):
    """The server presented a host key other than the one trusted; ``presented`` names it."""

    def __init__(self, presented: str) -> None:
        super().__init__(presented)
        self.presented = presented


class _PinnedClient(asyncssh.SSHClient):
    """Remembers the host key a server presented that was not the trusted one."""

    def __init__(self) -> None:
        self.presented: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host, addr, port, key) -> bool:
        self.presented = key
        return False


async def connect_pinned(
    host: str,
    port: int,
    username: str,
    host_key: str,
    *,
    timeout: float,
    client_keys: Sequence[asyncssh.SSHKey] | None = None,
    password: str | None = None,
    **options,
) -> asyncssh.SSHClientConnection:
    """Connect with ``client_keys`` (default: every key the panel holds), trusting
    ``host_key`` alone; with ``password``, by that password and no key at all (asyncssh
    would otherwise offer the keys of the account the panel runs as).

    OtherHostKey (naming the key presented in this very connection, no second scan) when the
    server does not hold it; asyncssh's and the socket's errors otherwise, for the caller to
    put in its own words.
    """
    client = _PinnedClient()
    try:
        return await asyncssh.connect(
            host,
            port,
            username=username,
            client_factory=lambda: client,
            client_keys=(
                None
                if password is not None
                else list(panel_keys() if client_keys is None else client_keys)
            ),
            password=password,
            known_hosts=([asyncssh.import_public_key(host_key)], [], []),
            agent_path=None,
            config=None,
            connect_timeout=timeout,
            **options,
        )
    except asyncssh.HostKeyNotVerifiable:
        presented = client.presented
        raise OtherHostKey(
            presented.get_fingerprint("sha256") if presented else "an unknown key"
        ) from None


async def fetch_host_key(host: str, port: int, *, timeout: float = CONNECT_TIMEOUT) -> str:
    """The host key a server presents (to pin on first use); TransportError when unreachable."""
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(host, port, config=None), timeout)
    except (TimeoutError, OSError, asyncssh.Error) as e:
        raise _connection_error(e, host, port, timeout) from None
    if key is None:
        raise TransportError(f"{host}:{port} presented no host key")
    return key.export_public_key().decode().strip()

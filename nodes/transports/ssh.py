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
import shlex
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh

from nodes.keys import fingerprint, load_panel_key
from nodes.transports import limits, remote_runner
from nodes.transports.base import (
    CommandFailed,
    CommandResult,
    OutputCallback,
    Transport,
    TransportError,
)
from nodes.transports.limits import (
    FILE_LIMIT,
    FILE_TOO_LARGE,
    OUTPUT_LIMIT,
    Capture,
    keep_head_and_tail,
)
from nodes.transports.replies import (
    NotARunnerReply,
    check_frame_size,
    parse_reply,
    reply_bytes,
    reply_error,
    reply_int,
)
from nodes.transports.streams import feed, pump

if TYPE_CHECKING:
    from nodes.models import Node
    from nodes.transports.remote_runner import NodeSession

CONNECT_TIMEOUT = 15
KEEPALIVE_INTERVAL = 15

# Nodes without python3 get their files and folders from these sh scripts instead of the
# runner's descriptor-based writes, which sh cannot do: sh can only name paths, and a user who
# owns a folder on the way can re-point a name between two commands (a link in place of
# ~/.ssh or of the temporary file, and chown follows it). So the scripts write only where no
# unprivileged user can change any name: every folder from / down is a real folder (no link)
# owned by root (or by the login user), and none is writable by others, except a sticky
# folder above the target (/tmp: others cannot rename root's entries there). Anything else is
# refused (exit 3) with the reason; such a node needs python3 for writes into users' folders.
# The scripts are fixed; paths and names arrive as positional arguments ($1...).
_SAFE_FOLDERS = (
    "refuse() { printf '%s\\n' \"$1\" >&2; exit 3; }; "
    # safe WHAT DIR STRICT: DIR and the folders above it are safe to write in, as above.
    'safe() { d=$2; strict=$3; me=$(id -u); nopy="the node has no python3: cannot safely"; '
    "while :; do "
    "info=$(LC_ALL=C stat -c '%F:%u:%U:%a' -- \"$d\" 2>/dev/null) || "
    'refuse "cannot $1: cannot stat $d"; '
    "kind=${info%%:*}; rest=${info#*:}; uid=${rest%%:*}; rest=${rest#*:}; "
    "user=${rest%%:*}; perm=${rest#*:}; "
    '[ "$kind" != "symbolic link" ] || refuse "refusing to $1: $d is a symbolic link"; '
    '[ "$kind" = directory ] || refuse "cannot $1: $d is not a folder"; '
    '[ "$uid" = 0 ] || [ "$uid" = "$me" ] || '
    'refuse "refusing to $1: $nopy write into a folder owned by $user ($d)"; '
    'if [ $((0$perm & 022)) != 0 ] && { [ "$strict" = 1 ] || [ $((0$perm & 01000)) = 0 ]; }; '
    'then refuse "refusing to $1: $nopy write into $d, which other users can write to"; fi; '
    '[ "$d" != / ] || return 0; d=${d%/*}; d=${d:-/}; strict=0; '
    "done; }; "
)

# put: $1 folder, $2 octal mode, $3 owner[:group] or empty, $4 path; the data on stdin.
_PUT_FILE_SCRIPT = (
    "set -e; umask 077; " + _SAFE_FOLDERS + 'safe "write $4" "$1" 1; '
    'tmp=$(mktemp "$1/.panel-XXXXXXXXXX"); trap \'rm -f -- "$tmp"\' EXIT; cat > "$tmp"; '
    'if [ -n "$3" ]; then chown -- "$3" "$tmp"; fi; chmod -- "$2" "$tmp"; '
    'mv -f -- "$tmp" "$4"; trap - EXIT'
)

# make_dir: $1 folder, $2 octal mode or empty, $3 owner[:group] or empty. The deepest folder
# that exists is where new ones are made: it must be safe (strictly, when anything is made).
_MAKE_DIR_SCRIPT = (
    "set -e; umask 022; " + _SAFE_FOLDERS + 'e=$1; while [ ! -e "$e" ] && [ ! -L "$e" ]; '
    "do e=${e%/*}; e=${e:-/}; done; "
    'if [ "$e" = "$1" ]; then safe "make the folder $1" "$e" 0; '
    'else safe "make the folder $1" "$e" 1; fi; mkdir -p -- "$1"; '
    'if [ -n "$3" ]; then chown -- "$3" "$1"; fi; if [ -n "$2" ]; then chmod -- "$2" "$1"; fi'
)


# The limits go first: the runner caps its replies with the panel's own helper and numbers.
RUNNER_SOURCE = "\n".join(Path(module.__file__).read_text() for module in (limits, remote_runner))
RUNNER_START_TIMEOUT = 30


class _Runner:
    """The session's one command channel on the node (see ``remote_runner``)."""

    def __init__(self, process: asyncssh.SSHClientProcess) -> None:
        self.process = process
        self.lock = asyncio.Lock()

    @classmethod
    async def start(
        cls, conn: asyncssh.SSHClientConnection, session: NodeSession | None = None
    ) -> _Runner | None:
        """Start the runner and take the node for this session; None when the node cannot run
        it (no python3 there)."""
        process = await conn.create_process(
            shlex.join(["python3", "-c", RUNNER_SOURCE]), encoding=None
        )
        runner = cls(process)
        hello: dict = {"op": "hello"}
        if session is not None:
            hello["session"] = {"lock": session.lock_path, "id": session.session_id}
        try:
            async with asyncio.timeout(RUNNER_START_TIMEOUT):
                reply = await runner.request(hello)
        except (asyncio.IncompleteReadError, ConnectionError, asyncssh.Error, TimeoutError):
            process.close()
            return None
        if "error" in reply:
            process.close()
            raise TransportError(str(reply["error"])[:500])
        return runner if reply.get("ok") else None

    async def request(self, message: dict, on_progress: OutputCallback | None = None) -> dict:
        """Send one request and return its reply; progress frames (a running command's output
        tail, each one bounded like any frame) go to ``on_progress`` on the way."""
        async with self.lock:
            try:
                data = json.dumps(message).encode()
                self.process.stdin.write(struct.pack(">I", len(data)) + data)
                while True:
                    (size,) = struct.unpack(">I", await self.process.stdout.readexactly(4))
                    check_frame_size(size)  # before reading, or allocating, any of it
                    reply = parse_reply(await self.process.stdout.readexactly(size))
                    if "progress" not in reply:
                        return reply
                    if on_progress is not None:
                        on_progress(reply_bytes(reply, "progress"))
            except BaseException:
                # Cancelled, broken or garbled mid-request: the channel's state is unknown (or
                # the node is not running our runner), drop it.
                self.process.close()
                raise

    @property
    def alive(self) -> bool:
        return not self.process.is_closing()


class HostKeyChanged(TransportError):
    """The node presented a host key other than the pinned one: nothing may run there."""


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
        self._runner: _Runner | None = None
        self._runner_available = True

    async def _get_runner(self) -> _Runner | None:
        """The command runner, started on first use; None: plain SSH commands instead."""
        if self._runner is not None and not self._runner.alive:
            self._runner = None
        if self._runner is None and self._runner_available:
            with self._translated_errors():
                self._runner = await _Runner.start(self.conn, self.session)
            self._runner_available = self._runner is not None
        return self._runner

    async def _request(
        self,
        message: dict,
        timeout: float | None = None,
        on_progress: OutputCallback | None = None,
    ) -> dict:
        runner = await self._get_runner()
        assert runner is not None
        with self._translated_errors():
            # The runner enforces the command's timeout itself; this one is for a dead link.
            async with asyncio.timeout(None if timeout is None else timeout + 10):
                return await runner.request(message, on_progress)

    def _translated_errors(self):
        return _translate_errors(self.node_name)

    @classmethod
    async def connect(
        cls,
        node: Node,
        *,
        timeout: float = CONNECT_TIMEOUT,
        session: NodeSession | None = None,
    ) -> SSHTransport:
        if not node.host_key:
            raise HostKeyChanged(
                f"no host key is pinned for {node.name}: accept the node's key with "
                f"`manage.py acceptkey {node.name}`"
            )
        try:
            conn = await connect_pinned(
                node.host,
                node.port,
                node.username,
                node.host_key,
                timeout=timeout,
                keepalive_interval=KEEPALIVE_INTERVAL,
            )
        except OtherHostKey as e:
            raise HostKeyChanged(
                f"host key changed: {node.host}:{node.port} presented {e.presented}, the panel "
                f"pinned {fingerprint(node.host_key)}. If the node was reinstalled, accept the "
                f"new key with `manage.py acceptkey {node.name}`; otherwise someone may be "
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
        if await self._get_runner():
            reply = await self._request(
                {
                    "op": "run",
                    "argv": argv,
                    "input": None if input is None else base64.b64encode(input).decode(),
                    "timeout": timeout,
                    "progress": on_output is not None,
                },
                timeout,
                on_output,
            )
            if reply.get("timeout") is True:
                raise TimeoutError(f"`{shlex.join(argv)[:200]}` timed out after {timeout} s")
            with self._translated_errors():
                if (error := reply_error(reply)) is not None:
                    raise TransportError(f"cannot run `{shlex.join(argv)[:200]}`: {error}")
                exit_status = reply_int(reply, "rc")
                # Our runner cut them already; a node that is not our runner may not have.
                stdout = keep_head_and_tail(reply_bytes(reply, "out"), OUTPUT_LIMIT)
                stderr = keep_head_and_tail(reply_bytes(reply, "err"), OUTPUT_LIMIT)
        else:
            result = await self._run_bytes(argv, input=input, timeout=timeout)
            exit_status = result.exit_status if result.exit_status is not None else -1
            stdout, stderr = result.stdout, result.stderr
        out = CommandResult(
            argv, exit_status, stdout.decode(errors="replace"), stderr.decode(errors="replace")
        )
        if check and out.exit_status != 0:
            raise CommandFailed(argv, out.exit_status, out.stderr)
        return out

    async def _run_bytes(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        file_limit: int | None = None,
    ) -> _Output:
        """Run ``argv`` as a plain SSH command (a node without python3).

        Stdout and stderr are read as they come, and only their heads and tails kept
        (OUTPUT_LIMIT each). With ``file_limit``, stdout is a file: it is kept whole up to
        that size, and past it the channel is closed at once (``stdout_over``).
        """
        command = shlex.join(str(a) for a in argv)
        out = Capture(file_limit or OUTPUT_LIMIT)
        err = Capture(OUTPUT_LIMIT)
        with self._translated_errors():
            async with asyncio.timeout(timeout):
                process = await self.conn.create_process(command, encoding=None)
                try:

                    async def stdout() -> None:
                        await pump(process.stdout, out, stop_over=file_limit is not None)
                        if out.over:
                            process.close()

                    await asyncio.gather(
                        feed(process.stdin, input), stdout(), pump(process.stderr, err)
                    )
                    await process.wait_closed()
                finally:
                    process.close()  # on a timeout or a cancel: the command must not linger
        exit_status = None if out.over and file_limit else process.exit_status
        return _Output(exit_status, out.value(), err.value(), out.over)

    async def put_file(
        self,
        path: str,
        data: bytes,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        parts = _parts(path, f"write {path}")
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
            if (error := reply_error(reply)) is not None:
                raise TransportError(error)
            return
        folder = "/" + "/".join(parts[:-1])
        await self._script(
            f"write {path}",
            _PUT_FILE_SCRIPT,
            [folder, f"{mode:o}", _chown(owner, group), path],
            data,
        )

    async def make_dir(
        self,
        path: str,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
        trusting: str | None = None,
    ) -> None:
        parts = _parts(path, f"make the folder {path}")
        if await self._get_runner():
            reply = await self._request(
                {
                    "op": "mkdir",
                    "path": path,
                    "mode": mode,
                    "owner": owner,
                    "group": group,
                    "trusting": trusting,
                }
            )
            if (error := reply_error(reply)) is not None:
                raise TransportError(error)
            return
        # Without the runner, only root's own folders are trusted: ``trusting`` adds nobody.
        folder = "/" + "/".join(parts)
        arguments = [folder, "" if mode is None else f"{mode:o}", _chown(owner, group)]
        await self._script(f"make the folder {path}", _MAKE_DIR_SCRIPT, arguments)

    async def _script(
        self, what: str, script: str, arguments: list[str], data: bytes = b""
    ) -> None:
        """Run one of the fallback scripts; its refusals (exit 3) are the message."""
        result = await self.run(["sh", "-c", script, "panel", *arguments], input=data, check=False)
        if result.exit_status != 0:
            reason = result.stderr.strip()[-500:] or f"exit {result.exit_status}"
            raise TransportError(reason if result.exit_status == 3 else f"cannot {what}: {reason}")

    async def read_file(self, path: str) -> bytes:
        if await self._get_runner():
            reply = await self._request({"op": "read", "path": path})
            with self._translated_errors():
                if (error := reply_error(reply)) is not None:
                    raise TransportError(f"cannot read {path}: {error}")
                data = reply_bytes(reply, "data")
            if len(data) > FILE_LIMIT:
                raise TransportError(f"cannot read {path}: {FILE_TOO_LARGE}")
            return data
        result = await self._run_bytes(["cat", "--", path], file_limit=FILE_LIMIT)
        if result.stdout_over:
            raise TransportError(f"cannot read {path}: {FILE_TOO_LARGE}")
        if result.exit_status != 0:
            stderr = (result.stderr or b"").decode(errors="replace").strip()
            raise TransportError(
                f"cannot read {path}: {stderr or 'exit ' + str(result.exit_status)}"
            )
        return result.stdout or b""

    async def close(self) -> None:
        self.conn.close()
        await self.conn.wait_closed()


def _parts(path: str, what: str) -> list[str]:
    try:
        parts = remote_runner.split_path(path, what)
    except remote_runner.WriteRefused as e:
        raise TransportError(str(e)) from None
    if not parts:
        raise TransportError(f"cannot {what}: it is the root folder")
    return parts


def _chown(owner: str | None, group: str | None) -> str:
    """``chown``'s ``owner:group`` argument; empty for neither."""
    return f"{owner or ''}:{group}" if group else (owner or "")


@dataclass(frozen=True)
class _Output:
    """A plain SSH command's result: what ``_run_bytes`` kept of it."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes
    stdout_over: bool


class _translate_errors:
    """Turn asyncssh's and the stream's errors into TransportError with the node's name."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if isinstance(error, NotARunnerReply):
            raise TransportError(
                f"{self.node_name} answered something that is not a runner reply: {error}"
            ) from None
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
    host: str, port: int, username: str, host_key: str, *, timeout: float, **options
) -> asyncssh.SSHClientConnection:
    """Connect with the panel's key, trusting ``host_key`` alone.

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
            client_keys=[load_panel_key()],
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

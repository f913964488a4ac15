"""The panel's end of the runner's channel: frames, the protocol version, one request at a
time (the protocol is described in ``remote_runner``).

``RunnerChannel.open`` works over any process whose ``stdout`` has ``readexactly`` and whose
``stdin`` has ``write``, with ``close()`` and ``is_closing()``: an asyncssh process on an SSH
node (``start``), or a local one in tests, with the very same framing and checks.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from nodes.transports import limits, remote_runner
from nodes.transports.base import OutputCallback, TransportError
from nodes.transports.remote_runner import PROTOCOL
from nodes.transports.replies import (
    NotARunnerReply,
    check_frame_size,
    check_progress_size,
    parse_reply,
    reply_bytes,
    reply_error,
    reply_int,
)

if TYPE_CHECKING:
    from nodes.transports.remote_runner import NodeSession

# The limits go first: the runner caps its replies with the panel's own helper and numbers.
RUNNER_SOURCE = "\n".join(Path(module.__file__).read_text() for module in (limits, remote_runner))
RUNNER_START_TIMEOUT = 30
# How many times a runner is started on a channel whose first frame was not a runner's.
START_ATTEMPTS = 2

# What a process that is not a runner does when asked for its first frame: no python3 on the
# node (the shell says so and exits), or one too old to parse the runner.
_NO_RUNNER = (asyncio.IncompleteReadError, ConnectionError, asyncssh.Error)

# The runner starts on a terminal, so that closing its channel makes sshd hang the terminal up
# (SIGHUP) and end whatever the node started there, even when that is not our runner: a login
# shell that hangs, or a ForceCommand. Plain SSH channels cannot signal such a process (sshd
# refuses a "signal" request for a forced command), and it would stay. The terminal is raw
# from its first byte (sshd sets these modes before the shell starts; the runner sets them
# again, ``remote_runner._raw_terminal``): no echo, no line editing, no ^C, no newline
# translation, so the binary frames pass as they are.
RAW_TERMINAL = {
    **dict.fromkeys(
        [
            asyncssh.PTY_ECHO,
            asyncssh.PTY_ECHONL,
            asyncssh.PTY_ICANON,
            asyncssh.PTY_ISIG,
            asyncssh.PTY_IEXTEN,
            asyncssh.PTY_OPOST,
            asyncssh.PTY_ONLCR,
            asyncssh.PTY_ICRNL,
            asyncssh.PTY_INLCR,
            asyncssh.PTY_IGNCR,
            asyncssh.PTY_ISTRIP,
            asyncssh.PTY_IXON,
            asyncssh.PTY_IXOFF,
            asyncssh.PTY_PARENB,
        ],
        0,
    ),
    asyncssh.PTY_CS8: 1,
}


# How the runner writes a progress frame (``json.dumps({"progress": ...})``): such a frame is
# known from its first bytes, so one that is dropped is never parsed.
PROGRESS_START = b'{"progress": "'
PROGRESS_PER_SECOND = 2
# Frames dropped in a row before the panel stops reading till the second is over: a node that
# floods then waits on the SSH window, and costs the panel no more CPU than an honest one.
DROPPED_BEFORE_PAUSE = 50


class ProgressGate:
    """Which progress frames of one request are looked at: ``PROGRESS_PER_SECOND`` at most.

    An honest runner sends one a second (``remote_runner.PROGRESS_SECONDS``); a hostile node
    can send thousands, and each one looked at costs a parse and a cleaning of its text.
    """

    def __init__(self) -> None:
        self.window_end = 0.0
        self.admitted = 0
        self.dropped_in_window = 0

    async def admit(self) -> bool:
        now = time.monotonic()
        if now >= self.window_end:
            self.window_end, self.admitted, self.dropped_in_window = now + 1.0, 0, 0
        if self.admitted < PROGRESS_PER_SECOND:
            self.admitted += 1
            return True
        self.dropped_in_window += 1
        if self.dropped_in_window >= DROPPED_BEFORE_PAUSE:
            await asyncio.sleep(self.window_end - now)
        return False


async def _ends_soon(process: Any) -> bool:
    """Whether the node closes the channel within a moment, saying at most 64 KiB more."""
    try:
        async with asyncio.timeout(2):
            for _ in range(16):
                if not await process.stdout.read(4096):
                    return True
    except TimeoutError:
        pass
    return False


class RunnerChannel:
    """The session's one command channel on the node."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.lock = asyncio.Lock()
        self.progress_dropped = 0  # progress frames dropped unread, over the channel's life

    @classmethod
    async def start(
        cls, conn: asyncssh.SSHClientConnection, session: NodeSession | None = None
    ) -> RunnerChannel | None:
        """Start the runner over SSH and take the node for this session; None when the node
        cannot run it (no python3 there)."""
        command = shlex.join(["python3", "-c", RUNNER_SOURCE])
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                process = await conn.create_process(
                    command, encoding=None, term_type="dumb", term_modes=RAW_TERMINAL
                )
            except asyncssh.ChannelOpenError:  # the node refuses terminals (PermitTTY no)
                process = await conn.create_process(command, encoding=None)
            try:
                return await cls.open(process, session)
            except NotARunnerReply:
                # Whatever else writes on a new terminal before the runner's first frame
                # lands where that frame is awaited (seen: an "rm: ..." line, once in several
                # hundred starts). Nothing was run and no lock was taken: start once more on
                # a fresh channel. A node that answers garbage again is refused as before.
                if attempt == START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    @classmethod
    async def open(cls, process: Any, session: NodeSession | None = None) -> RunnerChannel | None:
        """Check the runner that ``process`` runs speaks our protocol, then take the node for
        ``session``; None when no runner answers at all.

        TransportError for a runner of another version: nothing is sent to it, so it takes no
        lock and runs nothing.
        """
        channel = cls(process)
        try:
            try:
                async with asyncio.timeout(RUNNER_START_TIMEOUT):
                    first = await channel._receive()
            except _NO_RUNNER:
                process.close()
                return None
            except TimeoutError:
                raise TransportError(
                    f"no runner answered within {RUNNER_START_TIMEOUT} s: the node's login "
                    "shell, or a ForceCommand, may hang (the session was hung up)"
                ) from None
            except NotARunnerReply:
                # On a terminal the shell's "python3: not found" comes where the first frame
                # was awaited; a shell that said it exits, a hostile node goes on.
                if await _ends_soon(process):
                    process.close()
                    return None
                raise
            version = reply_int(first, "protocol")
            if version != PROTOCOL:
                raise TransportError(
                    f"the node's runner speaks protocol {version}, the panel {PROTOCOL}: "
                    "refused, nothing was run (the node did not run the runner the panel sent)"
                )
            await channel.take_node(session)
        except BaseException:
            process.close()
            raise
        return channel

    async def take_node(
        self, session: NodeSession | None, timeout: float = RUNNER_START_TIMEOUT
    ) -> None:
        """Take the node for ``session``: at the runner's start, and again for each later
        session on a runner the panel kept (a warm connection, ``warm``)."""
        lock = None if session is None else {"lock": session.lock_path, "id": session.session_id}
        await self._simple("session", {"session": lock}, timeout, "take the node")

    async def release_node(self, timeout: float = RUNNER_START_TIMEOUT) -> None:
        """End this runner's session on the node (the node's lock no longer names it); the
        runner stays, for the next session to take the node again (``take_node``)."""
        await self._simple("release", {}, timeout, "let the node go")

    async def _simple(self, op: str, fields: dict, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                reply = await self.request({"op": op, **fields})
        except TimeoutError:
            raise TransportError(f"the node's runner did not {what} within {timeout} s") from None
        if (error := reply_error(reply)) is not None:
            raise TransportError(error)
        if reply.get("ok") is not True:
            raise NotARunnerReply(f"no 'ok' in the answer to {op!r}: {sorted(reply)[:10]}")

    async def request(self, message: dict, on_progress: OutputCallback | None = None) -> dict:
        """Send one request and return its reply; progress frames (a running command's output
        tail) go to ``on_progress`` on the way, at most ``PROGRESS_PER_SECOND`` of them: the
        others are dropped unread and counted in ``progress_dropped``."""
        async with self.lock:
            try:
                data = json.dumps(message).encode()
                self.process.stdin.write(struct.pack(">I", len(data)) + data)
                gate = ProgressGate()
                while True:
                    size = await self._frame_size()
                    start = await self.process.stdout.readexactly(min(size, len(PROGRESS_START)))
                    if start != PROGRESS_START:
                        rest = await self.process.stdout.readexactly(size - len(start))
                        reply = parse_reply(start + rest)
                        if "progress" in reply:
                            raise NotARunnerReply("a progress frame not in the runner's form")
                        return reply
                    check_progress_size(size)
                    rest = await self.process.stdout.readexactly(size - len(start))
                    if await gate.admit():
                        if on_progress is not None:
                            on_progress(reply_bytes(parse_reply(start + rest), "progress"))
                    else:
                        self.progress_dropped += 1
            except BaseException:
                # Cancelled, broken or garbled mid-request: the channel's state is unknown (or
                # the node is not running our runner), drop it.
                self.process.close()
                raise

    async def _frame_size(self) -> int:
        """The length of the next frame, refused before any of it is read or allocated."""
        (size,) = struct.unpack(">I", await self.process.stdout.readexactly(4))
        check_frame_size(size)
        return size

    async def _receive(self) -> dict:
        """One frame from the node, refused from its length before any of it is read."""
        size = await self._frame_size()
        return parse_reply(await self.process.stdout.readexactly(size))

    @property
    def alive(self) -> bool:
        return not self.process.is_closing()

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from nodes.transports import limits, remote_runner
from nodes.transports.base import OutputCallback, TransportError
from nodes.transports.remote_runner import PROTOCOL
from nodes.transports.replies import (
    NotARunnerReply,
    check_frame_size,
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

# What a process that is not a runner does when asked for its first frame: no python3 on the
# node (the shell says so on stderr and exits), or one too old to parse the runner.
_NO_RUNNER = (asyncio.IncompleteReadError, ConnectionError, asyncssh.Error, TimeoutError)


class RunnerChannel:
    """The session's one command channel on the node."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.lock = asyncio.Lock()

    @classmethod
    async def start(
        cls, conn: asyncssh.SSHClientConnection, session: NodeSession | None = None
    ) -> RunnerChannel | None:
        """Start the runner over SSH and take the node for this session; None when the node
        cannot run it (no python3 there)."""
        command = shlex.join(["python3", "-c", RUNNER_SOURCE])
        return await cls.open(await conn.create_process(command, encoding=None), session)

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
            version = reply_int(first, "protocol")
            if version != PROTOCOL:
                raise TransportError(
                    f"the node's runner speaks protocol {version}, the panel {PROTOCOL}: "
                    "refused, nothing was run (the node did not run the runner the panel sent)"
                )
            await channel._take_node(session)
        except BaseException:
            process.close()
            raise
        return channel

    async def _take_node(self, session: NodeSession | None) -> None:
        lock = None if session is None else {"lock": session.lock_path, "id": session.session_id}
        try:
            async with asyncio.timeout(RUNNER_START_TIMEOUT):
                reply = await self.request({"op": "session", "session": lock})
        except TimeoutError:
            raise TransportError(
                f"the node's runner did not take the node within {RUNNER_START_TIMEOUT} s"
            ) from None
        if (error := reply_error(reply)) is not None:
            raise TransportError(error)
        if reply.get("ok") is not True:
            raise NotARunnerReply(f"no 'ok' in the answer to the session: {sorted(reply)[:10]}")

    async def request(self, message: dict, on_progress: OutputCallback | None = None) -> dict:
        """Send one request and return its reply; progress frames (a running command's output
        tail, each one bounded like any frame) go to ``on_progress`` on the way."""
        async with self.lock:
            try:
                data = json.dumps(message).encode()
                self.process.stdin.write(struct.pack(">I", len(data)) + data)
                while True:
                    reply = await self._receive()
                    if "progress" not in reply:
                        return reply
                    if on_progress is not None:
                        on_progress(reply_bytes(reply, "progress"))
            except BaseException:
                # Cancelled, broken or garbled mid-request: the channel's state is unknown (or
                # the node is not running our runner), drop it.
                self.process.close()
                raise

    async def _receive(self) -> dict:
        """One frame from the node, refused from its length before any of it is read."""
        (size,) = struct.unpack(">I", await self.process.stdout.readexactly(4))
        check_frame_size(size)  # before reading, or allocating, any of it
        return parse_reply(await self.process.stdout.readexactly(size))

    @property
    def alive(self) -> bool:
        return not self.process.is_closing()

"""Watching a run: what it runs now and what it has logged so far, published while it runs.

A hanging run must be understandable from the node page: which command runs on the node, for
how long against the type's timeout, what it prints as it prints it, and the log lines so
far. The synchronizer's transport is wrapped to note each command and to receive the tail of
its output while it runs; a small task writes the changes to the run's row at most every
``PUBLISH_SECONDS`` (one UPDATE, only when something changed), and the page's poll shows them.
A run that fails keeps the last output of the command it was running in its log.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from nodes.transports import Transport
from nodes.transports.channel import PROGRESS_PER_SECOND
from nodes.transports.limits import printable

PUBLISH_SECONDS = 1.0
COMMAND_CHARS = 300
OUTPUT_CHARS = 4000


class RunWatch:
    """What the run is doing now; changed by the session's coroutines, read by the publisher."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.command = ""
        self.last_command = ""  # kept after it ended: what a timed-out run was doing
        self.output = ""  # the tail of what the running command printed so far
        self.last_output = ""
        self.interrupted = ""  # the command a timeout or cancel ended mid-way, if any
        self.version = 0

    def running(self, argv: Sequence[str]) -> None:
        self.command = printable(shlex.join(str(a) for a in argv))[:COMMAND_CHARS]
        self.last_command = self.command
        self.output = self.last_output = ""
        self.version += 1

    def printed(self, tail: bytes) -> None:
        """The command's output so far (its tail); called from the transport, maybe a thread."""
        # Cut before decoding: a hostile node may send a whole frame of "output" each time.
        text = tail[-4 * OUTPUT_CHARS :].decode(errors="replace")
        self.output = self.last_output = printable(text)[-OUTPUT_CHARS:]
        self.version += 1

    def done(self) -> None:
        self.command = self.output = ""
        self.version += 1

    def failure_note(self) -> str:
        """For the log of a run that failed: what the last command printed before it ended."""
        if not self.last_output.strip():
            return ""
        return f"last output of `{self.last_command}`:\n{self.last_output.rstrip()}"


class WatchedTransport:
    """The session's transport, noting each command it runs in the run's ``RunWatch``."""

    def __init__(self, transport: Transport, watch: RunWatch) -> None:
        self.transport = transport
        self.watch = watch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    async def run(self, argv: Sequence[str], **kwargs: Any) -> Any:
        watch = self.watch
        kwargs.setdefault("on_output", watch.printed)
        watch.running(argv)
        dropped = self.transport.progress_dropped
        try:
            return await self.transport.run(argv, **kwargs)
        except BaseException:
            watch.interrupted = watch.command
            raise
        finally:
            if dropped := self.transport.progress_dropped - dropped:
                command = " ".join(watch.command.split())[:120]
                watch.lines.append(
                    f"dropped {dropped} progress frames of `{command}`: the node sent its "
                    f"output faster than the panel looks at it ({PROGRESS_PER_SECOND} a second)"
                )
            watch.done()


async def publish(watch: RunWatch, save: Callable[[str, str, str], Any], log_cap: int) -> None:
    """Write the command, its output and the log so far whenever they changed; runs until
    cancelled."""
    seen = (0, 0)
    while True:
        await asyncio.sleep(PUBLISH_SECONDS)
        now = (watch.version, len(watch.lines))
        if now == seen:
            continue
        seen = now
        text = "\n".join(watch.lines)
        if len(text) > log_cap:
            text = "[... log cut ...]\n" + text[-log_cap:]
        await save(watch.command, text, watch.output)

"""Plain SSH commands (a node without python3), their output read as it comes and only what
the limits allow kept.

Collecting all output and cutting it afterwards (``communicate()``, ``conn.run``) would hold
everything the node sends in memory first.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nodes.transports.limits import OUTPUT_LIMIT, Capture

CHUNK = 64 * 1024


@dataclass(frozen=True)
class PlainOutput:
    """A plain SSH command's result: what ``run_plain`` kept of it."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes
    stdout_over: bool


async def run_plain(
    conn: Any,
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    file_limit: int | None = None,
) -> PlainOutput:
    """Run ``argv`` as one SSH command on ``conn`` (an asyncssh connection).

    Stdout and stderr are read as they come, and only their heads and tails kept
    (OUTPUT_LIMIT each). With ``file_limit``, stdout is a file: it is kept whole up to that
    size, and past it the channel is closed at once (``stdout_over``). asyncssh's errors are
    the caller's to put in words.
    """
    command = shlex.join(str(a) for a in argv)
    out = Capture(file_limit or OUTPUT_LIMIT)
    err = Capture(OUTPUT_LIMIT)
    async with asyncio.timeout(timeout):
        process = await conn.create_process(command, encoding=None)
        try:

            async def stdout() -> None:
                await pump(process.stdout, out, stop_over=file_limit is not None)
                if out.over:
                    process.close()

            await asyncio.gather(feed(process.stdin, input), stdout(), pump(process.stderr, err))
            await process.wait_closed()
        finally:
            process.close()  # on a timeout or a cancel: the command must not linger
    exit_status = None if out.over and file_limit else process.exit_status
    return PlainOutput(exit_status, out.value(), err.value(), out.over)


async def pump(reader: Any, capture: Capture, *, stop_over: bool = False) -> None:
    """Read ``reader`` to its end into ``capture``; with ``stop_over``, stop as soon as the
    capture is over its limit (the caller refuses the output and closes the channel).

    Past the limit the rest is read and dropped, not refused: the command's tail (its errors)
    and its exit status are still wanted, and a verbose command (a package install) must not
    be killed for talking. An endless output is stopped by the caller's timeout.
    """
    while chunk := await reader.read(CHUNK):
        capture.feed(chunk)
        if stop_over and capture.over:
            return


async def feed(writer: Any, data: bytes | None) -> None:
    """Write ``data`` (if any) then end of file; a command that exits without reading it all
    is not an error here, its exit status says what happened."""
    try:
        if data:
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (BrokenPipeError, ConnectionResetError):
        pass

"""Reading a command's output as it comes, keeping only what the limits allow.

Shared by the plain SSH commands (asyncssh streams) and the local transport (asyncio
subprocess streams): both readers have ``read(n)``, both writers ``write``, ``drain`` and
``write_eof``. Collecting all output and cutting it afterwards (``communicate()``,
``conn.run``) would hold everything the node sends in memory first.
"""

from __future__ import annotations

from typing import Any

from nodes.transports.limits import Capture

CHUNK = 64 * 1024


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

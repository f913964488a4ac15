"""The panel's own server as a node: commands are local subprocesses, files are local files."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from nodes.transports import remote_runner
from nodes.transports.base import CommandFailed, CommandResult, Transport, TransportError
from nodes.transports.limits import FILE_LIMIT, FILE_TOO_LARGE, OUTPUT_LIMIT, Capture
from nodes.transports.streams import feed, pump


class LocalTransport(Transport):
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        argv = [str(a) for a in argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise TransportError(f"cannot run {argv[0]!r}: {e.strerror or e}") from e
        # Not communicate(): it keeps all output; a runaway command would fill our memory.
        out, err = Capture(OUTPUT_LIMIT), Capture(OUTPUT_LIMIT)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(
                    feed(proc.stdin, input) if input is not None else asyncio.sleep(0),
                    pump(proc.stdout, out),
                    pump(proc.stderr, err),
                )
                await proc.wait()
        except BaseException:
            # Cancelled (synchronizer timeout) or timed out: the command must not outlive us.
            _kill_group(proc)
            await proc.wait()
            raise
        result = CommandResult(
            argv,
            proc.returncode,
            out.value().decode(errors="replace"),
            err.value().decode(errors="replace"),
        )
        if check and proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, result.stderr)
        return result

    async def put_file(
        self,
        path: str,
        data: bytes,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        await _on_disk(remote_runner.write_file, path, data, mode, owner, group)

    async def make_dir(
        self,
        path: str,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
        trusting: str | None = None,
    ) -> None:
        await _on_disk(remote_runner.make_dir, path, mode, owner, group, trusting)

    async def read_file(self, path: str) -> bytes:
        try:
            return await asyncio.to_thread(_read_file, path)
        except OSError as e:
            raise TransportError(f"cannot read {path}: {e.strerror or e}") from e


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass


def _read_file(path: str) -> bytes:
    """A file up to FILE_LIMIT, as from a node; a larger one is refused, never cut."""
    with open(path, "rb") as f:
        data = f.read(FILE_LIMIT + 1)
    if len(data) > FILE_LIMIT:
        raise TransportError(f"cannot read {path}: {FILE_TOO_LARGE}")
    return data


async def _on_disk(write: Callable[..., None], *args: object) -> None:
    """Run one of the runner's writes here: the panel's own server is written exactly as a
    node is, with the same code (no symbolic link followed, no user's folder trusted)."""
    try:
        await asyncio.to_thread(write, *args)
    except remote_runner.WriteRefused as e:
        raise TransportError(str(e)) from None

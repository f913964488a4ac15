"""The panel's own server as a node: commands are local subprocesses, files are local files."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Sequence

from nodes.transports.base import CommandFailed, CommandResult, Transport, TransportError


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
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(input)
        except BaseException:
            # Cancelled (synchronizer timeout) or timed out: the command must not outlive us.
            _kill_group(proc)
            await proc.wait()
            raise
        result = CommandResult(
            argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
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
        await asyncio.to_thread(_put_file, path, data, mode, owner, group)

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
    with open(path, "rb") as f:
        return f.read()


def _put_file(path: str, data: bytes, mode: int, owner: str | None, group: str | None) -> None:
    directory = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".panel-", dir=directory)
    except OSError as e:
        raise TransportError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if owner or group:
            shutil.chown(tmp, owner, group)
        os.chmod(tmp, mode)  # after chown, which clears setuid and setgid bits
        os.replace(tmp, path)
    except (OSError, LookupError) as e:
        os.unlink(tmp)
        raise TransportError(f"cannot write {path}: {e}") from e

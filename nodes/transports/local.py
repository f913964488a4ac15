"""The panel's own server as a node: commands are local subprocesses, files are local files.

Commands run through the node runner's own code (``remote_runner.run_command``), on a thread:
each in a process group of its own, ended whole (TERM, then KILL) when its run is cancelled
or times out, and under the same ``NodeSession`` lock as on an SSH node, so one synchronizer
per node holds on the panel's own server too. Files go through the runner's request handler,
on a thread too (``RunnerFileOps``): the same requests, checks and code as on an SSH node.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shlex
from collections.abc import Sequence

from nodes.transports import remote_runner
from nodes.transports.base import (
    CommandFailed,
    CommandResult,
    OutputCallback,
    Transport,
    TransportError,
)
from nodes.transports.fileops import FileOps, RunnerFileOps

# What a command on the panel's own server sees of the environment, and nothing else. The
# panel's own environment holds its secrets (DJANGO_SECRET_KEY signs the queue's tasks,
# DATABASE_URL and PANEL_REDIS_URL hold passwords): a package's maintainer script, a service's
# start command or anything else the synchronizers run must not inherit them. This is about
# what sshd gives a command on an SSH node.
COMMAND_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_environment() -> dict[str, str]:
    """The whole environment of a command run on the panel's own server."""
    try:
        account = pwd.getpwuid(os.geteuid())
        home, user = account.pw_dir, account.pw_name
    except KeyError:  # a uid without an account: still no secrets
        home, user = "/", str(os.geteuid())
    return {"PATH": COMMAND_PATH, "LANG": "C.UTF-8", "HOME": home, "USER": user, "LOGNAME": user}


class LocalTransport(Transport):
    def __init__(self, session: remote_runner.NodeSession | None = None) -> None:
        self._session = session
        self._session_taken = session is None
        self._files = RunnerFileOps(_handle_here, "the panel's own server")

    async def _take_session(self) -> None:
        if not self._session_taken:
            try:
                await asyncio.to_thread(self._session.take_over)
            except (OSError, remote_runner.Refused) as e:
                raise TransportError(f"cannot lock the node for this session: {e}") from None
            self._session_taken = True

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
        await self._take_session()
        command = remote_runner.Command()
        try:
            result = await asyncio.to_thread(
                remote_runner.run_command,
                argv,
                input,
                timeout,
                self._session,
                command,
                on_output,  # called on that thread: it must only note the text
                command_environment(),
            )
        except remote_runner.SessionTakenOver as e:
            raise TransportError(str(e)) from None
        except OSError as e:
            raise TransportError(f"cannot run {argv[0]!r}: {e.strerror or e}") from e
        except BaseException:
            # Cancelled (synchronizer timeout, cancel, lost lease): the command must not
            # outlive its run. Its thread returns once the group is gone.
            await asyncio.shield(asyncio.to_thread(command.end))
            raise
        if result is None:
            raise TimeoutError(f"`{shlex.join(argv)[:200]}` timed out after {timeout} s")
        status, out, err = result
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if check and status != 0:
            raise CommandFailed(argv, status, stderr)
        return CommandResult(argv, status, stdout, stderr)

    async def _file_ops(self) -> FileOps:
        return self._files

    async def close(self) -> None:
        if self._session is not None and self._session_taken:
            await asyncio.to_thread(self._session.release)


async def _handle_here(request: dict) -> dict:
    """Answer a file request as a node's runner would, with its very code, on a thread: the
    panel's own server is written exactly as a node is (no symbolic link followed, no
    user's folder trusted)."""
    return await asyncio.to_thread(remote_runner.handle, request, remote_runner.FILE_HANDLERS)

"""The interface every transport implements: how the engine talks to a node.

One transport object is one connection (one node session): every synchronizer of the session
shares it. Commands are argument lists, never shell strings assembled from data. File work is
written once here: each transport only says which ``FileOps`` its session uses.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodes.transports.limits import MESSAGE_LIMIT, clean

if TYPE_CHECKING:
    from nodes.transports.fileops import FileOps

OutputCallback = Callable[[bytes], None]


class TransportError(Exception):
    """The node could not be reached or did not do what was asked; the message is for admins."""


class CommandFailed(TransportError):
    def __init__(self, argv: Sequence[str], exit_status: int | None, stderr: str) -> None:
        self.argv = list(argv)
        self.exit_status = exit_status
        self.stderr = stderr
        # Head and tail: the first lines say what failed, the last ones often why.
        shown = clean(stderr.strip(), MESSAGE_LIMIT)
        super().__init__(
            f"command `{shlex.join(self.argv)[:200]}` exited with {exit_status}"
            + (f": {shown}" if shown else "")
        )


@dataclass(frozen=True)
class FileState:
    """What a node has at a path, read through one descriptor (``Transport.stat_files``).

    ``kind`` is ``file`` (a regular file reached without a link: the other fields are set),
    ``missing`` (nothing there, nor perhaps its folder) or ``refused`` (a link, FIFO, socket,
    device or folder, a link among the folders on the way...: ``reason`` says which; nothing
    of it was read). ``owner`` and ``group`` are names, empty when the node has none.
    """

    kind: str
    mode: int = 0
    uid: int = -1
    gid: int = -1
    owner: str = ""
    group: str = ""
    sha256: str = ""
    reason: str = ""

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


MISSING = FileState("missing")


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str


class Transport(abc.ABC):
    """A connection to one node. Use as ``async with open_transport(node) as t``."""

    # Output frames a node sent faster than the panel looks at them (``channel.ProgressGate``),
    # dropped unread: whoever watches the runs says how many.
    progress_dropped: int = 0

    @abc.abstractmethod
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the node; raise CommandFailed on a non-zero exit when ``check``.

        ``on_output`` is given the last few KiB of the command's output (stdout and stderr
        together) about every second while it runs, for whoever watches the run.
        """

    @abc.abstractmethod
    async def _file_ops(self) -> FileOps:
        """The session's file operations, chosen once (see ``fileops``)."""

    async def put_file(
        self,
        path: str,
        data: bytes,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        """Write ``path`` atomically: a temporary file beside it, then a rename.

        Never through a symbolic link, and never into a folder (or below one) owned by a user
        other than root or ``owner``: a user must not be able to redirect root's write (see
        ``remote_runner.write_file``). Raises TransportError, saying why.
        """
        await (await self._file_ops()).put(path, data, mode=mode, owner=owner, group=group)

    async def make_dir(
        self,
        path: str,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
        trusting: str | None = None,
    ) -> None:
        """Make the folder ``path`` and missing ones above it (``mkdir -p``); set ``mode``,
        ``owner`` and ``group`` on it when given (``install -d``).

        The same rules as ``put_file``: no symbolic links on the way, folders owned by root,
        by ``owner`` or by ``trusting`` (the user a file will then be written for) only.
        """
        await (await self._file_ops()).make_dir(
            path, mode=mode, owner=owner, group=group, trusting=trusting
        )

    async def read_file(self, path: str) -> bytes:
        """Read a whole file from the node (up to ``limits.FILE_LIMIT``; larger is an error)."""
        return await (await self._file_ops()).read(path)

    async def stat_files(self, paths: Sequence[str]) -> dict[str, FileState]:
        """What the node has at each of ``paths`` (few round trips for many paths): kind,
        mode, owner, group and sha256 of a regular file, all read from one descriptor opened
        from / without following a link or blocking; anything but a regular file is
        ``refused`` with the reason, never read (see ``remote_runner.stat_file``)."""
        if not paths:
            return {}
        return await (await self._file_ops()).stat(list(paths))

    async def stat_file(self, path: str) -> FileState:
        """``stat_files`` for one path."""
        return (await self.stat_files([path]))[path]

    async def set_attrs(
        self,
        path: str,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
        sha256: str | None = None,
    ) -> None:
        """Set the mode, owner and group of the regular file ``path`` through a descriptor
        (``fchown``, then ``fchmod``: setuid and setgid bits stay), never by path; with
        ``sha256``, only if the file still holds those bytes. The same rules as ``put_file``
        for the folders on the way; a link, FIFO or other non-regular file is refused."""
        await (await self._file_ops()).set_attrs(
            path, mode=mode, owner=owner, group=group, sha256=sha256
        )

    async def remove_file(self, path: str, *, trusting: str | None = None) -> bool:
        """Remove the file ``path``: True when there was one, False when there was none (a
        missing file, or folder, is not an error). A folder is refused, never removed.

        The same rules as ``put_file``: no symbolic link followed on the way (a link at
        ``path`` itself is removed, not what it points at), folders owned by root or by
        ``trusting`` (the user the file was for) only; so a user who swaps a folder on the way
        for a link cannot make root remove the same name elsewhere (``rm -f`` would).
        """
        return await (await self._file_ops()).remove(path, trusting=trusting)

    async def close(self) -> None:  # noqa: B027 - optional, not abstract
        """Close the connection; closing twice is harmless."""

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""The interface every transport implements: how the engine talks to a node.

One transport object is one connection (one node session): every synchronizer of the session
shares it. Commands are argument lists, never shell strings assembled from data.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Sequence
from dataclasses import dataclass


class TransportError(Exception):
    """The node could not be reached or did not do what was asked; the message is for admins."""


class CommandFailed(TransportError):
    def __init__(self, argv: Sequence[str], exit_status: int | None, stderr: str) -> None:
        self.argv = list(argv)
        self.exit_status = exit_status
        self.stderr = stderr
        tail = stderr.strip()[-500:]
        super().__init__(
            f"command `{shlex.join(self.argv)[:200]}` exited with {exit_status}"
            + (f": {tail}" if tail else "")
        )


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str


class Transport(abc.ABC):
    """A connection to one node. Use as ``async with open_transport(node) as t``."""

    @abc.abstractmethod
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the node; raise CommandFailed on a non-zero exit when ``check``."""

    @abc.abstractmethod
    async def put_file(
        self,
        path: str,
        data: bytes,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        """Write ``path`` atomically: a temporary file beside it, then a rename."""

    @abc.abstractmethod
    async def read_file(self, path: str) -> bytes:
        """Read a whole file from the node."""

    async def close(self) -> None:  # noqa: B027 - optional, not abstract
        """Close the connection; closing twice is harmless."""

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

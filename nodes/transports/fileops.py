"""File work on a node, as the panel asks for it: put, make a folder, read, remove.

A session picks its ``FileOps`` once, when it starts (``Transport._file_ops``), so no
transport method decides per call how files travel:

- ``RunnerFileOps`` (this module) turns each operation into one of the runner's requests.
  It is the only panel-side code for file work on a node that has python3, and on the
  panel's own server: an SSH node answers over the runner's channel, the local transport
  answers with the very same request handler (``remote_runner.handle``) on a thread. Either
  way the work is done by the runner's descriptor-based functions.
- ``shell_files.ShellFileOps``: a node without python3, with ``sh`` scripts that only work
  where no unprivileged user can change a name.
"""

from __future__ import annotations

import abc
import base64
from collections.abc import Awaitable, Callable

from nodes.transports.base import FileState, TransportError
from nodes.transports.limits import FILE_LIMIT, FILE_TOO_LARGE
from nodes.transports.replies import (
    NotARunnerReply,
    bad_reply,
    reply_bool,
    reply_bytes,
    reply_error,
    reply_file_state,
)

Send = Callable[[dict], Awaitable[dict]]


class FileOps(abc.ABC):
    """One session's way of doing file work on its node; see ``Transport`` for the rules."""

    @abc.abstractmethod
    async def put(
        self, path: str, data: bytes, *, mode: int, owner: str | None, group: str | None
    ) -> None: ...

    @abc.abstractmethod
    async def make_dir(
        self,
        path: str,
        *,
        mode: int | None,
        owner: str | None,
        group: str | None,
        trusting: str | None,
    ) -> None: ...

    @abc.abstractmethod
    async def read(self, path: str) -> bytes: ...

    @abc.abstractmethod
    async def remove(self, path: str, *, trusting: str | None) -> bool: ...

    @abc.abstractmethod
    async def stat(self, paths: list[str]) -> dict[str, FileState]: ...

    @abc.abstractmethod
    async def set_attrs(
        self,
        path: str,
        *,
        mode: int | None,
        owner: str | None,
        group: str | None,
        sha256: str | None,
    ) -> None: ...


# Paths per ``stat`` request: each answer is about ten JSON values, and a reply may hold
# REPLY_VALUES_LIMIT (a hostile node's flood of tiny values is refused from that count).
STAT_BATCH = 50


class RunnerFileOps(FileOps):
    """File work as runner requests, sent with ``send`` (request -> reply).

    The node's errors are complete sentences ("refusing to write P: P/x is a symbolic link")
    and are raised as they are; a reply of the wrong shape is reported as not a runner reply,
    naming ``node_name``.
    """

    def __init__(self, send: Send, node_name: str) -> None:
        self._send = send
        self._node_name = node_name

    async def put(
        self, path: str, data: bytes, *, mode: int, owner: str | None, group: str | None
    ) -> None:
        data64 = base64.b64encode(data).decode()
        request = {"op": "put", "path": path, "data": data64, "mode": mode}
        await self._done({**request, "owner": owner, "group": group})

    async def make_dir(
        self,
        path: str,
        *,
        mode: int | None,
        owner: str | None,
        group: str | None,
        trusting: str | None,
    ) -> None:
        request = {"op": "mkdir", "path": path, "mode": mode, "owner": owner, "group": group}
        await self._done({**request, "trusting": trusting})

    async def read(self, path: str) -> bytes:
        reply = await self._ask({"op": "read", "path": path})
        data = self._checked(reply_bytes, reply, "data")
        if len(data) > FILE_LIMIT:  # our runner refuses it; a node that is not our runner may not
            raise TransportError(f"cannot read {path}: {FILE_TOO_LARGE}")
        return data

    async def remove(self, path: str, *, trusting: str | None) -> bool:
        reply = await self._ask({"op": "remove", "path": path, "trusting": trusting})
        return self._checked(reply_bool, reply, "removed")

    async def stat(self, paths: list[str]) -> dict[str, FileState]:
        found: dict[str, FileState] = {}
        for start in range(0, len(paths), STAT_BATCH):
            batch = paths[start : start + STAT_BATCH]
            reply = await self._ask({"op": "stat", "paths": batch})
            answers = reply.get("files")
            if not isinstance(answers, list) or len(answers) != len(batch):
                raise bad_reply(
                    self._node_name, NotARunnerReply(f"no answer per path in {sorted(reply)[:10]}")
                )
            for path, answer in zip(batch, answers, strict=True):
                found[path] = self._checked(reply_file_state, answer, path)
        return found

    async def set_attrs(
        self,
        path: str,
        *,
        mode: int | None,
        owner: str | None,
        group: str | None,
        sha256: str | None,
    ) -> None:
        request = {"op": "attrs", "path": path, "mode": mode, "owner": owner, "group": group}
        await self._done({**request, "sha256": sha256})

    async def _ask(self, request: dict) -> dict:
        reply = await self._send(request)
        if (error := reply_error(reply)) is not None:
            raise TransportError(error)
        return reply

    async def _done(self, request: dict) -> None:
        reply = await self._ask(request)
        if reply.get("ok") is not True:
            raise bad_reply(self._node_name, NotARunnerReply(f"no 'ok' in {sorted(reply)[:10]}"))

    def _checked(self, check: Callable, reply: dict, key: str):
        try:
            return check(reply, key)
        except NotARunnerReply as e:
            raise bad_reply(self._node_name, e) from None

"""Warm connections: a worker process keeps each SSH node's connection, and the runner started
on it, open between node sessions, so a re-sync costs its commands' round trips, not an SSH
handshake (two costly key exchanges for node and panel) and a runner upload.

A django-q worker runs each task in an event loop of its own (``async_to_sync``) that ends
with the task, and an asyncssh connection belongs to the loop that opened it. So the
connections live on a loop of their own, on a daemon thread that lives as long as the worker
process (``_WarmLoop``, started on first use, again in a forked child). A session's transport
(``WarmTransport``) hands each operation to that loop (``run_coroutine_threadsafe``) and
awaits it from the session's own loop; cancelling the await (a cancel, a force, a timeout, a
lost lease) cancels the operation there, which closes the runner's channel and so ends the
command's process group on the node, as it always did. The database is never touched from that
thread: the session reads what it needs first (``current_address``), on its own thread.

Rules (docs/ARCHITECTURE.md, "Warm connections"):

- one session at a time uses a connection: it is taken out of the pool for the session
  (``checkout``) and put back at its end (``checkin``), when the runner has let the node go
  (its ``release``); each session takes the node again (its ``session`` request);
- the host key is checked on every new connection, never skipped: a connection is only
  reused, never re-keyed;
- a connection is reused only for the very address, user, pinned key, panel key and
  generation (``Node.connection_generation``) it was opened with; ``drop_stale_connections``
  drops those of nodes deleted, put in maintenance or changed, in every worker that runs a task,
  and every ``PANEL_SSH_STALE_CHECK_SECONDS`` in every worker (``watch_stale_connections``);
- one that no longer answers (closed, or its runner does not take the node within
  ``REUSE_CHECK_SECONDS``) is replaced by a new one, once, before anything runs;
- idle ones close after ``PANEL_SSH_IDLE_SECONDS`` (0: no warm connections), and asyncssh's
  keepalives close one whose node stopped answering;
- a type that proves reachability (the health probe: ``fresh_connection``) opens a new one
  when the warm one is older than ``PANEL_PROBE_FRESH_SECONDS``, so a node whose sshd died
  while a connection stayed open still turns unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from nodes.transports.base import CommandResult, FileState, OutputCallback, Transport
from nodes.transports.fileops import FileOps
from nodes.transports.ssh import NodeAddress, SSHTransport, TransportError

if TYPE_CHECKING:
    from nodes.models import Node
    from nodes.transports.remote_runner import NodeSession

log = logging.getLogger("nodes.transports")

T = TypeVar("T")

# How long a reused connection's runner may take to answer the new session before the
# connection counts as broken and is replaced (a healthy one answers in one round trip).
REUSE_CHECK_SECONDS = 10
# Idle connections one worker keeps at most (the least recently used goes first): each holds a
# file descriptor here and an sshd and a runner on its node.
MOST_IDLE = max(16, min(1000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4))


def idle_seconds() -> float:
    """How long an idle connection is kept (``PANEL_SSH_IDLE_SECONDS``); 0: none is."""
    from django.conf import settings

    return float(settings.PANEL_SSH_IDLE_SECONDS)


def probe_fresh_seconds() -> float:
    """The age after which a type that proves reachability opens a new connection."""
    from django.conf import settings

    return float(settings.PANEL_PROBE_FRESH_SECONDS)


@dataclass(eq=False)
class _Warm:
    """One node's connection, in the pool between sessions or lent to one session."""

    address: NodeAddress
    transport: SSHTransport
    connected_at: float = field(default_factory=time.monotonic)
    idle_timer: asyncio.TimerHandle | None = None
    in_flight: set[asyncio.Task] = field(default_factory=set)

    async def tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one of the session's operations, noted so that ``checkin`` waits for it (a
        cancelled one is still closing its channel when the session already moved on)."""
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        try:
            return await coro
        finally:
            self.in_flight.discard(task)

    async def settled(self) -> bool:
        """Whether the session's operations all ended (a cancelled one closes its channel at
        once; one that does not within ``REUSE_CHECK_SECONDS`` makes the connection suspect)."""
        if self.in_flight:
            _, pending = await asyncio.wait(list(self.in_flight), timeout=REUSE_CHECK_SECONDS)
            return not pending
        return True

    async def close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        try:
            await self.transport.close()
        except Exception:  # noqa: BLE001 - a broken connection is closed all the same
            log.debug("closing the connection to %s failed", self.address.name, exc_info=True)


class WarmPool:
    """The idle connections of this worker process, by node id. Runs on the warm loop only."""

    def __init__(self) -> None:
        self.idle: dict[int, _Warm] = {}  # least recently used first
        self.closing: set[asyncio.Task] = set()  # closes running in the background

    def close_later(self, warm: _Warm) -> None:
        task = asyncio.get_running_loop().create_task(warm.close())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def checkout(
        self, address: NodeAddress, session: NodeSession, fresh_after: float | None
    ) -> _Warm:
        """The node's warm connection, taken for ``session``, or a new one."""
        warm = self.idle.pop(address.pk, None)
        if warm is not None:
            if warm.idle_timer is not None:
                warm.idle_timer.cancel()
            why = _why_not_reused(warm, address, fresh_after)
            if why is None:
                try:
                    await warm.transport.begin_session(session, REUSE_CHECK_SECONDS)
                    return warm
                except TransportError as e:
                    why = f"it did not answer ({e})"
                except BaseException:  # the session was cancelled meanwhile: state unknown
                    self.close_later(warm)
                    raise
            log.info("ssh connection to %s replaced: %s", address.name, why)
            await warm.close()
        return _Warm(address, await SSHTransport.connect(address, session=session))

    async def checkin(self, warm: _Warm, keep: bool) -> None:
        """The session is over: keep the connection for the next one, or close it."""
        settled = await warm.settled()
        idle = idle_seconds()
        pk = warm.address.pk
        keep = keep and settled and idle > 0 and not warm.address.maintenance
        keep = keep and pk not in self.idle
        if keep and await warm.transport.end_session(REUSE_CHECK_SECONDS):
            while len(self.idle) >= MOST_IDLE:
                await self.idle.pop(next(iter(self.idle))).close()
            self.idle[pk] = warm
            loop = asyncio.get_running_loop()
            warm.idle_timer = loop.call_later(idle, self._expire, pk, warm)
            return
        await warm.close()

    def _expire(self, pk: int, warm: _Warm) -> None:
        if self.idle.get(pk) is warm:
            del self.idle[pk]
            self.close_later(warm)

    def generations(self) -> dict[int, int]:
        return {pk: warm.address.generation for pk, warm in self.idle.items()}

    async def drop(self, pks: Sequence[int] | None = None) -> int:
        """Close the idle connections of these nodes (None: all)."""
        pks = list(self.idle if pks is None else pks)
        gone = [self.idle.pop(pk) for pk in pks if pk in self.idle]
        for warm in gone:
            await warm.close()
        return len(gone)


def _why_not_reused(warm: _Warm, address: NodeAddress, fresh_after: float | None) -> str | None:
    if warm.address != address:
        return "the node's address, user, keys or generation changed"
    if not warm.transport.usable:
        return "it was closed"
    if fresh_after is not None and time.monotonic() - warm.connected_at >= fresh_after:
        return f"older than {fresh_after:g} s, and a fresh connection proves the node answers"
    return None


class _WarmLoop:
    """This process's event loop for warm connections, on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = WarmPool()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._serve, name="warm-ssh", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run ``coro`` there and wait for it from synchronous code."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def submit(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` there, awaited from another event loop; cancelling the await cancels
        it there too."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))


_started: _WarmLoop | None = None
_starting = threading.Lock()


def _warm_loop(start: bool = True) -> _WarmLoop | None:
    """This process's warm loop; a forked worker starts its own (threads do not survive a
    fork, nor may a child share its parent's connections)."""
    global _started
    with _starting:
        if _started is not None and _started.pid != os.getpid():
            _started = None
        if _started is None and start:
            _started = _WarmLoop()
        return _started


class WarmTransport(Transport):
    """A node session's transport on the worker's warm connection to the node.

    Every operation runs on the warm loop; ``close`` puts the connection back for the next
    session (``keep``) or closes it.
    """

    def __init__(self, warm_loop: _WarmLoop, warm: _Warm) -> None:
        self._loop = warm_loop
        self._warm = warm
        self._closed = False
        self._files = _WarmFileOps(self)

    @property
    def progress_dropped(self) -> int:  # type: ignore[override]
        return self._warm.transport.progress_dropped

    @property
    def connected_at(self) -> float:
        """When this connection was opened (``time.monotonic()``)."""
        return self._warm.connected_at

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise TransportError(f"the session's connection to {self._warm.address.name} is closed")
        return await self._loop.submit(self._warm.tracked(coro))

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        return await self._call(
            self._warm.transport.run(
                argv, input=input, check=check, timeout=timeout, on_output=_here(on_output)
            )
        )

    async def _file_ops(self) -> FileOps:
        return self._files

    async def file_op(self, name: str, *args: Any, **kwargs: Any) -> Any:
        async def op() -> Any:
            ops = await self._warm.transport._file_ops()
            return await getattr(ops, name)(*args, **kwargs)

        return await self._call(op())

    async def close(self, keep: bool = True) -> None:
        """End the session on this connection: back to the pool (``keep``) or closed."""
        if self._closed:
            return
        self._closed = True
        # Shielded on the warm loop: a session cancelled while it lets go still hands the
        # connection back (or closes it), never leaves it half-lent.
        await self._loop.submit(_shielded(self._loop.pool.checkin(self._warm, keep)))


class _WarmFileOps(FileOps):
    """The warm connection's own file operations (runner or shell), run on the warm loop."""

    def __init__(self, transport: WarmTransport) -> None:
        self.transport = transport

    async def put(
        self, path: str, data: bytes, *, mode: int, owner: str | None, group: str | None
    ) -> None:
        await self.transport.file_op("put", path, data, mode=mode, owner=owner, group=group)

    async def make_dir(
        self,
        path: str,
        *,
        mode: int | None,
        owner: str | None,
        group: str | None,
        trusting: str | None,
    ) -> None:
        await self.transport.file_op(
            "make_dir", path, mode=mode, owner=owner, group=group, trusting=trusting
        )

    async def read(self, path: str) -> bytes:
        return await self.transport.file_op("read", path)

    async def remove(self, path: str, *, trusting: str | None) -> bool:
        return await self.transport.file_op("remove", path, trusting=trusting)

    async def stat(self, paths: list[str]) -> dict[str, FileState]:
        return await self.transport.file_op("stat", paths)

    async def set_attrs(
        self,
        path: str,
        *,
        mode: int | None,
        owner: str | None,
        group: str | None,
        sha256: str | None,
    ) -> None:
        await self.transport.file_op(
            "set_attrs", path, mode=mode, owner=owner, group=group, sha256=sha256
        )


async def _shielded(coro: Coroutine[Any, Any, T]) -> T:
    return await asyncio.shield(coro)


def _here(on_output: OutputCallback | None) -> OutputCallback | None:
    """``on_output`` called on the session's own loop (it notes text for the session's
    publisher), not on the warm loop's thread."""
    if on_output is None:
        return None
    loop = asyncio.get_running_loop()

    def forward(tail: bytes) -> None:
        try:
            loop.call_soon_threadsafe(on_output, tail)
        except RuntimeError:  # the session's loop is gone: nobody watches any more
            pass

    return forward


def current_address(node_id: int) -> NodeAddress | None:
    """What a session connects with, read now (not when its task loaded the node: an edit
    may have come in between); None when the node was deleted. Synchronous: database."""
    from nodes.models import Node

    node = Node.objects.filter(pk=node_id).first()
    return None if node is None else NodeAddress.of(node)


async def open_warm(
    address: NodeAddress, session: NodeSession, *, fresh_after: float | None = None
) -> WarmTransport:
    """A session's transport on this worker's warm connection to the node at ``address``,
    opened (host key checked) when there is none that may be reused."""
    warm_loop = _warm_loop()
    assert warm_loop is not None
    pool = warm_loop.pool
    future = asyncio.run_coroutine_threadsafe(
        pool.checkout(address, session, fresh_after), warm_loop.loop
    )
    try:
        warm = await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        # Cancelled just as the connection was ready: it is nobody's, close it there.
        def close_unclaimed(done: Any) -> None:
            if not done.cancelled() and done.exception() is None:
                warm_loop.loop.call_soon_threadsafe(pool.close_later, done.result())

        future.add_done_callback(close_unclaimed)
        raise
    return WarmTransport(warm_loop, warm)


def drop_stale_connections() -> int:
    """Close this worker's idle connections to nodes that were deleted, put in maintenance,
    or changed since (their generation): one query, when there are any. Synchronous:
    called by each task the worker runs, before its sessions."""
    from nodes.models import Node

    warm_loop = _warm_loop(start=False)
    if warm_loop is None:
        return 0
    held = warm_loop.call(_on_loop(warm_loop.pool.generations))
    if not held:
        return 0
    current = dict(
        Node.objects.filter(pk__in=list(held), maintenance=False).values_list(
            "pk", "connection_generation"
        )
    )
    stale = [pk for pk, generation in held.items() if current.get(pk) != generation]
    return warm_loop.call(warm_loop.pool.drop(stale)) if stale else 0


_watching: int | None = None  # the process whose stale-connection thread runs


def watch_stale_connections() -> None:
    """In a cluster worker, once per process: a daemon thread that drops the worker's idle
    connections to nodes deleted, put in maintenance or changed, every
    ``PANEL_SSH_STALE_CHECK_SECONDS``, so they close within seconds even when no task comes
    to this worker (``drop_stale_connections`` at each task's start does the same sooner).
    On a thread of its own, with its own database connection, closed after each look."""
    global _watching
    from django.conf import settings

    with _starting:
        if _watching == os.getpid():
            return
        _watching = os.getpid()
    every = float(settings.PANEL_SSH_STALE_CHECK_SECONDS)

    def watch() -> None:
        from django.db import connections

        while True:
            time.sleep(every)
            try:
                if idle_count():
                    drop_stale_connections()
            except Exception as e:  # noqa: BLE001 - the database may be away for a while
                log.warning("warm connections not checked: %r", e)
            finally:
                connections.close_all()

    threading.Thread(target=watch, name="warm-ssh-stale", daemon=True).start()


def close_node(node_id: int) -> int:
    """Close this process's idle warm connection to one node, if any."""
    warm_loop = _warm_loop(start=False)
    if warm_loop is None:
        return 0
    return warm_loop.call(warm_loop.pool.drop([node_id]))


def close_all() -> int:
    """Close every idle warm connection of this process (tests, a clean shutdown)."""
    warm_loop = _warm_loop(start=False)
    if warm_loop is None:
        return 0
    return warm_loop.call(warm_loop.pool.drop())


async def warm_node_ids() -> set[int]:
    """The nodes this process keeps an idle warm connection to (from any event loop)."""
    warm_loop = _warm_loop(start=False)
    if warm_loop is None:
        return set()
    return set(await warm_loop.submit(_on_loop(warm_loop.pool.generations)))


def idle_count() -> int:
    """How many idle warm connections this process holds."""
    warm_loop = _warm_loop(start=False)
    if warm_loop is None:
        return 0
    return len(warm_loop.call(_on_loop(warm_loop.pool.generations)))


async def _on_loop(fn: Any) -> Any:
    return fn()


def node_is_warm_capable(node: Node) -> bool:
    """Whether sessions on this node use warm connections: SSH nodes, unless turned off."""
    from nodes.choices import Transport as TransportKind

    return node.transport == TransportKind.SSH and idle_seconds() > 0

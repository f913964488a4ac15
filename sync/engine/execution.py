"""Running one synchronizer on a node: its timeout, its failures told in one line, its log.

The session's transport is opened by the first run that needs it and shared by the runs that
follow; each run sees it wrapped in the run's ``RunWatch`` so the node page can show what it
does while it does it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from nodes.models import Node
from nodes.transports import (
    CommandFailed,
    Transport,
    TransportError,
    open_transport,
    open_warm_transport,
)
from nodes.transports.warm import WarmTransport, probe_fresh_seconds
from sync.context import RunContext
from sync.engine.runs import RunTicket
from sync.errors import FailureKind, describe_failure, short
from sync.models import Outcome
from sync.synchronizers import REGISTRY
from sync.watch import RunWatch, WatchedTransport

log = logging.getLogger("sync")


class NodeConnection:
    """The session's one transport, opened by the first run that needs it. With ``warm`` (a
    worker's session), an SSH node's is the worker's warm connection, handed back at the end
    (``nodes.transports.warm``)."""

    def __init__(self, node: Node, *, warm: bool = False) -> None:
        self.node = node
        self.warm = warm
        self.transport: Transport | None = None
        self._watched: WatchedTransport | None = None

    async def get(self, fresh_after: float | None = None) -> Transport:
        if self.transport is None:
            if self.warm:
                self.transport = await open_warm_transport(self.node, fresh_after=fresh_after)
            else:
                self.transport = await open_transport(self.node)
        return self.transport

    async def watched(self, watch: RunWatch, fresh_after: float | None = None) -> WatchedTransport:
        """The transport as synchronizers see it: the same object for the whole session."""
        transport = await self.get(fresh_after)
        if self._watched is None or self._watched.transport is not transport:
            self._watched = WatchedTransport(transport, watch)
        self._watched.watch = watch
        return self._watched

    async def close(self, keep: bool = True) -> None:
        """End the session's use of the transport; a warm connection is kept for the next
        session unless ``keep`` is false (it may be stuck mid-command)."""
        if self.transport is not None:
            transport, self.transport = self.transport, None
            try:
                if isinstance(transport, WarmTransport):
                    await transport.close(keep=keep)
                else:
                    await transport.close()
            except Exception:  # noqa: BLE001 - a broken connection must not hide the result
                log.debug("closing the transport of %s failed", self.node.name, exc_info=True)


@dataclass(frozen=True)
class Execution:
    """What one run of a synchronizer came to."""

    outcome: Outcome
    log: str
    error: str = ""  # short, for the row, the node and the list
    kind: FailureKind = FailureKind.FAILED
    detail: str = ""  # the whole error, for the run's log


# What a synchronizer raises when the node or the data says no: an expected failure, told in
# one line; anything else is a bug in the synchronizer, logged with its traceback.
EXPECTED_FAILURES = (TransportError, ValueError)


async def execute(
    ticket: RunTicket, ctx_node: Node, conn: NodeConnection, watch: RunWatch
) -> Execution:
    """Run one synchronizer within its timeout; a failed run's log keeps what its last command
    printed (the reason a hung ``apt-get`` hangs is in its output)."""
    execution = await _run_type(ticket, ctx_node, conn, watch)
    note = watch.failure_note() if execution.outcome != Outcome.SUCCESS else ""
    if note:
        log_text = f"{execution.log}\n{note}" if execution.log else note
        execution = dataclasses.replace(execution, log=log_text)
    return execution


async def _run_type(
    ticket: RunTicket, ctx_node: Node, conn: NodeConnection, watch: RunWatch
) -> Execution:
    sync_type = REGISTRY.get(ticket.action.name)
    lines = watch.lines
    if sync_type is None:
        return Execution(
            Outcome.FAILED, "", f"type {ticket.action.name} has no code in this version"
        )
    timeout = ticket.action.timeout
    deadline = asyncio.timeout(timeout)
    fresh_after = probe_fresh_seconds() if sync_type.fresh_connection else None
    try:
        async with deadline:
            transport = await conn.watched(watch, fresh_after)
            ctx = RunContext(node=ctx_node, transport=transport, lines=lines)
            await sync_type.run(ctx)
    except TimeoutError as e:
        await conn.close(keep=False)  # the connection may be stuck mid-command
        if deadline.expired():
            error = f"timed out after {timeout} s"
            if watch.interrupted:
                error += f" while running `{watch.interrupted[:120]}`"
            return Execution(Outcome.TIMEOUT, "\n".join(lines), error, FailureKind.TIMEOUT)
        kind, error = describe_failure(e)
        return Execution(Outcome.FAILED, "\n".join(lines), error, kind, str(e))
    except EXPECTED_FAILURES as e:
        kind, error = describe_failure(e)
        detail = e.stderr if isinstance(e, CommandFailed) and e.stderr else str(e)
        return Execution(Outcome.FAILED, "\n".join(lines), error, kind, detail)
    except Exception as e:  # noqa: BLE001 - a synchronizer's bug fails its run, not the worker
        log.exception("synchronizer %s crashed on %s", ticket.action.name, ctx_node.name)
        error = f"the {ticket.action.title} synchronizer failed unexpectedly: {short(str(e))}"
        return Execution(Outcome.FAILED, "\n".join(lines), error, FailureKind.FAILED)
    return Execution(Outcome.SUCCESS, "\n".join(lines))

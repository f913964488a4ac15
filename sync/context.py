"""What a synchronizer's ``run`` receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from nodes.models import Node
from nodes.transports import Transport
from nodes.transports.limits import LOG_LINE_CHARS, clean


@dataclass
class RunContext:
    node: Node
    transport: Transport
    lines: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        """Add a line to the run's log (kept on the ``syncrun`` row), cleaned and capped: lines
        often carry what the node said (its hostname, a path, an error)."""
        self.lines.append(clean(line, LOG_LINE_CHARS))

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ORM code from the synchronizer's coroutine.

        Django's ORM refuses to run inside an event loop; this runs it on the session's one
        database thread, so a connection is never shared between threads.
        """
        return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)

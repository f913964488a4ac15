"""The registry of synchronizer types: the code is the source of truth for ``syncactions``.

Each type is a module in this package that declares itself with ``@synchronizer``. After
``migrate`` the ``syncactions`` table is brought in step with the registry
(``update_syncactions``), so adding a type or changing its priority needs no hand edits.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodes.choices import NodeStatus

if TYPE_CHECKING:
    from sync.context import RunContext

log = logging.getLogger("sync")

RunFunction = Callable[["RunContext"], Awaitable[None]]


@dataclass(frozen=True)
class SynchronizerType:
    name: str
    title: str
    priority: int
    node_status: NodeStatus
    timeout: int
    run: RunFunction


REGISTRY: dict[str, SynchronizerType] = {}


def register_type(sync_type: SynchronizerType) -> SynchronizerType:
    REGISTRY[sync_type.name] = sync_type
    return sync_type


def unregister_type(name: str) -> None:
    REGISTRY.pop(name, None)


def synchronizer(
    *, name: str, title: str, priority: int, node_status: NodeStatus, timeout: int = 300
) -> Callable[[RunFunction], RunFunction]:
    """Declare the decorated coroutine as the ``run`` of a synchronizer type."""

    def decorate(run: RunFunction) -> RunFunction:
        register_type(
            SynchronizerType(name, title, priority, NodeStatus(node_status), timeout, run)
        )
        return run

    return decorate


def load_builtin_types() -> None:
    """Import every module of this package, then the site's own (``SYNC["extra_modules"]``)."""
    from django.conf import settings

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    for name in settings.SYNC.get("extra_modules", ()):
        importlib.import_module(name)


def update_syncactions(using: str = "default") -> None:
    """Make the ``syncactions`` rows match the registry: add, update, and drop stale types.

    A type that left the code is deleted with its desynchronizations: no code could run them,
    and they would hold their nodes out of Ready for ever.
    """
    from sync.models import SyncAction

    for t in REGISTRY.values():
        SyncAction.objects.using(using).update_or_create(
            name=t.name,
            defaults={
                "title": t.title,
                "priority": t.priority,
                "node_status": t.node_status,
                "timeout": t.timeout,
            },
        )
    stale = SyncAction.objects.using(using).exclude(name__in=REGISTRY)
    for name in stale.values_list("name", flat=True):
        log.warning("synchronizer type %s is no longer in the code: removed", name)
    stale.delete()

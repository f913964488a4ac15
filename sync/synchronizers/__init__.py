"""The registry of synchronizer types: the code is the source of truth for ``syncactions``.

Each type is one module in this package (or a site's own, listed in ``SYNC["extra_modules"]``)
that holds everything about it: the models of the data it carries, their admin, its ``run``
and what it watches, declared with ``@synchronizer(..., watches=[Watch(...)])``. The modules
are imported with the ``sync`` app's models (``sync/models.py`` ends by loading them), so a
type's models are the app's models. After ``migrate`` the ``syncactions`` table is brought in
step with the registry (``update_syncactions``), so adding a type or changing its priority
needs no hand edits; ``sync.watching`` turns changes of watched data into registrations.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured

from nodes.choices import NodeStatus
from sync.watching import Watch, connect

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
    watches: tuple[Watch, ...] = ()
    # The types it needs (names); None: every type before it in priority order.
    needs: tuple[str, ...] | None = None
    # It proves the node can be reached (the health probe): a worker's warm connection older
    # than PANEL_PROBE_FRESH_SECONDS is not enough, a new one is opened for it.
    fresh_connection: bool = False


REGISTRY: dict[str, SynchronizerType] = {}


def register_type(sync_type: SynchronizerType) -> SynchronizerType:
    REGISTRY[sync_type.name] = sync_type
    if apps.ready:  # a type added later (a test, a site module): watch its data too
        check_needs(REGISTRY)
        connect(REGISTRY.values())
    return sync_type


def check_needs(registry: dict[str, SynchronizerType]) -> None:
    """Refuse, at start, a type that needs an unknown type or one that is not before it.

    A type runs after what it needs, in priority order: a need of a later (or equal) priority
    could never be met, and a misspelt name would silently need nothing.
    """
    for t in registry.values():
        for name in t.needs or ():
            needed = registry.get(name)
            if needed is None:
                raise ImproperlyConfigured(
                    f"synchronizer type {t.name} needs {name!r}, which is not a synchronizer type"
                )
            if needed.priority >= t.priority:
                raise ImproperlyConfigured(
                    f"synchronizer type {t.name} (priority {t.priority}) needs {name} "
                    f"(priority {needed.priority}): a type may only need types that run before it"
                )


def unregister_type(name: str) -> None:
    REGISTRY.pop(name, None)
    if apps.ready:
        connect(REGISTRY.values())


def synchronizer(
    *,
    name: str,
    title: str,
    priority: int,
    node_status: NodeStatus,
    timeout: int = 300,
    watches: Iterable[Watch] = (),
    needs: Iterable[str] | None = None,
    fresh_connection: bool = False,
) -> Callable[[RunFunction], RunFunction]:
    """Declare the decorated coroutine as the ``run`` of a synchronizer type.

    ``watches`` names the data its nodes receive: a change of it registers the type for the
    nodes concerned (``sync.watching``). ``needs`` names the types that must be done on a node
    before it runs there (a failing one holds it back, and only it); left out, the type needs
    every type before it in priority order; ``needs=()`` needs none. ``fresh_connection``:
    the type proves that the node answers, so it does not run on a warm connection older
    than ``PANEL_PROBE_FRESH_SECONDS`` (``nodes.transports.warm``).
    """

    def decorate(run: RunFunction) -> RunFunction:
        register_type(
            SynchronizerType(
                name,
                title,
                priority,
                NodeStatus(node_status),
                timeout,
                run,
                tuple(watches),
                None if needs is None else tuple(needs),
                fresh_connection,
            )
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
    from django.db import transaction

    from nodes.models import Node
    from sync.models import SyncAction, recompute_status

    rows = {}
    for t in REGISTRY.values():
        rows[t.name], _ = SyncAction.objects.using(using).update_or_create(
            name=t.name,
            defaults={
                "title": t.title,
                "priority": t.priority,
                "node_status": t.node_status,
                "timeout": t.timeout,
                "needs_before": t.needs is None,
            },
        )
    for t in REGISTRY.values():
        rows[t.name].needs.set([rows[n] for n in t.needs or ()])
    stale = SyncAction.objects.using(using).exclude(name__in=REGISTRY)
    for name in stale.values_list("name", flat=True):
        log.warning("synchronizer type %s is no longer in the code: removed", name)
    touched = list(
        Node.objects.using(using).filter(desyncs__action__in=stale).values_list("pk", flat=True)
    )
    with transaction.atomic(using=using):
        stale.delete()
        # Their rows went with them: the nodes' status and count follow.
        recompute_status(Node.objects.using(using).filter(pk__in=touched))

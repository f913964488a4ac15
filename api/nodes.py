"""Reading nodes: the list with the page's filters (``sync.fleet.NodeFilter``), paginated, and
one node with its facts, conditions, desynchronizations in order (with why each does not
run, ``sync.engine.eligibility``) and recent runs."""

from __future__ import annotations

from typing import Annotated

from django.http import HttpRequest, QueryDict
from ninja import Field, Query, Schema

from api.common import REFUSALS, actor, bad, node_or_404, page_of, router
from api.schemas import Id, NodeDetail, NodePage, TypeOut
from nodes.access import VIEW
from nodes.keys import safe_fingerprint
from nodes.models import Node
from sync.engine.eligibility import Hold, desync_holds, why_waiting, with_hold
from sync.fleet import NodeFilter, table_queryset
from sync.models import DesyncState, SyncAction, SyncRun, with_running_title

TAGS = ["nodes"]

RECENT_RUNS = 20


class NodeFilters(Schema):
    """The node list's filters, as on the page (``/nodes/?status=failed&role=web``)."""

    q: Annotated[str, Field(max_length=100)] | None = None
    status: str | None = None
    shown: str | None = None
    condition: str | None = None
    usable: bool | None = None
    role: str | None = None
    has_error: bool | None = None
    maintenance: bool | None = None
    processing: bool | None = None
    sort: str | None = None
    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    page_size: Annotated[int, Field(ge=1, le=500)] = 50


def summary(node: Node) -> dict:
    return {
        "id": node.pk,
        "name": node.name,
        "transport": node.transport,
        "address": node.address,
        "status": node.status,
        "shown": node.shown,
        "condition": node.condition,
        "conditions": [
            {"type": c.get("type", ""), "message": c.get("message", "")} for c in node.conditions
        ],
        "usable": node.usable,
        "maintenance": node.maintenance,
        "processing": node.is_processing,
        "running": getattr(node, "running_title", None) or None,
        "pending": getattr(node, "pending_count", 0),
        "failed": getattr(node, "failed_count", 0),
        "last_error": node.last_error,
        "last_sync_at": node.last_sync_at,
        "roles": [r.name for r in node.roles.all()],
        **{
            field: getattr(node, field)
            for field in ("os_name", "kernel", "cpus", "memory_mb", "disk_free_mb")
            + ("booted_at", "facts_at")
        },
    }


def run_summary(run: SyncRun) -> dict:
    return {
        "id": run.pk,
        "node_id": run.node_id,
        "type": run.action.name,
        "title": run.action.title,
        "outcome": run.outcome,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "acted_by": run.acted_by,
    }


def desyncs_of(node: Node) -> list[dict]:
    """The node's desynchronizations in priority order, each with why it does not run now,
    by the engine's own rule (``sync.engine.eligibility``: what the node page lists)."""
    out = []
    for d in desync_holds(node):
        hold = d.hold or None
        out.append(
            {
                "type": d.action.name,
                "title": d.action.title,
                "state": d.state,
                "attempts": d.attempts,
                "next_attempt_at": d.next_attempt_at,
                "last_error": d.last_error,
                "held": hold,
                "why": why_waiting(d) or (Hold(hold).label if hold else ""),
                "waits_for": d.needed_title if hold == Hold.NEEDS else None,
            }
        )
    return out


def detail(pk: int) -> dict:
    node = node_or_404(
        pk,
        with_hold(with_running_title(Node.objects).prefetch_related("roles")),
    )
    runs = (
        SyncRun.objects.filter(node=node)
        .select_related("action")
        .defer("log", "current_output")
        .order_by("-started_at", "-id")[:RECENT_RUNS]
    )
    desyncs = desyncs_of(node)
    counts = {"pending_count": len(desyncs)}
    counts["failed_count"] = sum(d["state"] == DesyncState.FAILED for d in desyncs)
    for k, v in counts.items():
        setattr(node, k, v)
    return {
        **summary(node),
        "host": node.host,
        "port": node.port,
        "username": node.username,
        "host_key_fingerprint": safe_fingerprint(node.host_key) if node.host_key else "",
        "is_panel_host": node.is_panel_host,
        "facts": node.facts or {},
        "hold": node.hold or None,
        "desyncs": desyncs,
        "recent_runs": [run_summary(r) for r in runs],
    }


@router.get("/nodes", response={200: NodePage, **REFUSALS}, tags=TAGS)
def list_nodes(request: HttpRequest, filters: Query[NodeFilters]):
    """The nodes, filtered and sorted as the list page does, a page at a time."""
    actor(request, VIEW)
    data = QueryDict(mutable=True)
    for key, value in filters.dict(exclude={"page", "page_size"}).items():
        if value is not None:
            data[key] = ("true" if value else "false") if isinstance(value, bool) else value
    found = NodeFilter(data, queryset=table_queryset())
    if not found.is_valid():
        field, messages = next(iter(found.errors.items()))
        raise bad(field, f"{field}: {' '.join(messages)}")
    page = page_of(found.qs, filters.page, filters.page_size)
    return {**page, "items": [summary(n) for n in page["items"]]}


@router.get("/nodes/{int:node_id}", response={200: NodeDetail, **REFUSALS}, tags=TAGS)
def get_node(request: HttpRequest, node_id: Id):
    """One node: facts, status, conditions, whether it is usable, its desynchronizations in
    order with why each is not running, and its recent runs."""
    actor(request, VIEW)
    return detail(node_id)


@router.get("/types", response={200: list[TypeOut], **REFUSALS}, tags=TAGS)
def list_types(request: HttpRequest):
    """The synchronizer types, in the order they run: the names ``register`` and ``skip``
    take."""
    actor(request, VIEW)
    return list(SyncAction.objects.order_by("priority", "pk").values("name", "title", "priority"))

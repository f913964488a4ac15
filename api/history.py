"""Reading what happened: a node's runs, one run with its log, and the audit trail."""

from __future__ import annotations

from typing import Annotated

from django.http import Http404, HttpRequest
from ninja import Field, Query, Schema

from api.common import REFUSALS, actor, bad, node_or_404, page_of, router
from api.nodes import run_summary
from api.schemas import AuditPage, Id, Run, RunPage
from nodes.access import VIEW
from sync.audit import as_dict, entries, parse_since
from sync.models import SyncRun

TAGS = ["history"]


class Paging(Schema):
    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    page_size: Annotated[int, Field(ge=1, le=500)] = 50


class AuditFilters(Paging):
    since: Annotated[str, Field(max_length=40)] | None = None
    node: Annotated[str, Field(max_length=63)] = ""
    action: Annotated[str, Field(max_length=50)] = ""
    actor: Annotated[str, Field(max_length=150)] = ""


@router.get("/nodes/{int:node_id}/runs", response={200: RunPage, **REFUSALS}, tags=TAGS)
def node_runs(request: HttpRequest, node_id: Id, paging: Query[Paging]):
    """The node's runs, newest first, without their logs (``/runs/{id}`` has the log)."""
    actor(request, VIEW)
    node = node_or_404(node_id)
    qs = (
        SyncRun.objects.filter(node=node)
        .select_related("action")
        .defer("log", "current_output")
        .order_by("-started_at", "-id")
    )
    page = page_of(qs, paging.page, paging.page_size)
    return {**page, "items": [run_summary(r) for r in page["items"]]}


@router.get("/runs/{int:run_id}", response={200: Run, **REFUSALS}, tags=TAGS)
def get_run(request: HttpRequest, run_id: Id):
    """One run with its log (and, while it runs, the command running and its output)."""
    actor(request, VIEW)
    run = SyncRun.objects.select_related("action").filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    return {
        **run_summary(run),
        "log": run.log,
        "current_command": run.current_command,
        "current_output": run.current_output,
    }


@router.get("/audit", response={200: AuditPage, **REFUSALS}, tags=TAGS)
def audit_trail(request: HttpRequest, filters: Query[AuditFilters]):
    """The audit trail, newest first, filtered as the audit page and ``manage.py audit``."""
    actor(request, VIEW)
    try:
        since = parse_since(filters.since) if filters.since else None
    except (ValueError, OverflowError) as e:
        raise bad("since", f"since: {e}") from None
    qs = entries(since=since, node=filters.node, action=filters.action, actor=filters.actor)
    page = page_of(qs, filters.page, filters.page_size)
    return {**page, "items": [as_dict(e) for e in page["items"]]}

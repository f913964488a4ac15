"""The Cluster nodes list (``/nodes/``): its rows and counts, the page and its live endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET

from nodes.access import CHANGE, DELETE, VIEW, require_perms
from nodes.choices import NodeCondition, NodeStatus
from nodes.models import Node, processing_q
from sync.models import DesyncState, Node2Sync, with_running_title
from web.filters import SORTABLE, NodeFilter
from web.polling import LivePoll, fingerprint, query_without_poll

PAGE_SIZE = 50


# --- Queries --------------------------------------------------------------------------------


def table_queryset() -> QuerySet[Node]:
    """The nodes with everything their row shows, in a fixed number of queries.

    The page polls every second while the cluster works, so nothing here may grow with the
    fleet: the desynchronization counts are subqueries, the roles one prefetch, the running
    type a join; the JSON facts and the host key are not loaded.
    """
    rows = Node2Sync.objects.filter(node=OuterRef("pk")).order_by().values("node")
    pending = rows.annotate(n=Count("pk")).values("n")
    failed = rows.filter(state=DesyncState.FAILED).annotate(n=Count("pk")).values("n")
    return (
        with_running_title(Node.objects)
        .prefetch_related("roles")
        .defer("facts", "host_key")
        .annotate(
            pending_count=Coalesce(Subquery(pending, output_field=IntegerField()), 0),
            failed_count=Coalesce(Subquery(failed, output_field=IntegerField()), 0),
        )
        .order_by("name")
    )


@dataclass(frozen=True)
class FleetCounts:
    total: int
    by_status: list[tuple[NodeStatus, int]]
    processing: int
    failing: int
    maintenance: int
    waiting: bool
    by_condition: list[tuple[NodeCondition, int]]

    @property
    def active(self) -> bool:
        """Work runs or waits to run somewhere: the page should watch closely."""
        return bool(self.processing or self.waiting)


def fleet_counts() -> FleetCounts:
    """Counts per status and the rest of the summary line, in one aggregate query.

    ``waiting`` says whether a node outside maintenance has pending or running rows: the
    cluster is about to work. Failed rows waiting for their backoff do not count, or the page
    would poll every second for up to 15 minutes; the slow watcher catches their retry. It is
    a yes/no question, asked with one uncorrelated EXISTS: a per-node count would join every
    desynchronization.
    """
    # Aggregate names must not shadow field names ("maintenance" is both), hence "n_".
    aggregates = {f"n_{s.value}": Count("pk", filter=Q(status=s.value)) for s in NodeStatus}
    aggregates.update(
        n_total=Count("pk"),
        n_processing=Count("pk", filter=processing_q()),
        n_failing=Count("pk", filter=~Q(last_error="")),
        n_maintenance=Count("pk", filter=Q(maintenance=True)),
    )
    # By the most severe condition of each node: the Status cell shows the same one.
    aggregates.update(
        {f"c_{c.name}": Count("pk", filter=Q(condition=c.value)) for c in NodeCondition}
    )
    # Not correlated with the counted row, so the database evaluates it once.
    work_waits = Exists(
        Node2Sync.objects.filter(
            state__in=[DesyncState.PENDING, DesyncState.PROCESSING], node__maintenance=False
        )
    )
    aggregates["n_waiting"] = Count("pk", filter=Q(work_waits))
    row = Node.objects.order_by().aggregate(**aggregates)
    return FleetCounts(
        total=row["n_total"],
        by_status=[(s, row[f"n_{s.value}"]) for s in NodeStatus],
        processing=row["n_processing"],
        failing=row["n_failing"],
        maintenance=row["n_maintenance"],
        waiting=row["n_waiting"] > 0,
        by_condition=[(c, row[f"c_{c.name}"]) for c in NodeCondition],
    )


# --- The page and its poll ------------------------------------------------------------------


def _sort_columns(request: HttpRequest, filterset: NodeFilter) -> dict[str, dict]:
    """The sortable headers: each one's ``aria-sort`` and the sort its link asks for."""
    sort = request.GET.get("sort", "") if "sort" not in filterset.form.errors else ""
    columns = {}
    for _, param, label in SORTABLE:
        if sort == param:
            direction, next_sort = "ascending", f"-{param}"
        elif sort == f"-{param}":
            direction, next_sort = "descending", param
        else:
            direction, next_sort = "", param
        if not sort and param == "name":
            direction, next_sort = "ascending", "-name"
        columns[param] = {"param": param, "label": label, "aria_sort": direction, "next": next_sort}
    return columns


def _list_context(request: HttpRequest) -> dict:
    filterset = NodeFilter(request.GET or None, queryset=table_queryset())
    page: Page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    nodes = list(page.object_list)
    user = request.user
    return {
        "filter": filterset,
        "page": page,
        "nodes": nodes,
        "counts": fleet_counts(),
        "columns": _sort_columns(request, filterset),
        "can_bulk": user.has_perm(CHANGE) or user.has_perm(DELETE),
        "ids_digest": fingerprint(*[n.pk for n in nodes]),
    }


def _list_fingerprint(context: dict, list_changed: bool) -> str:
    """What ``_list_live.html`` draws: the counts, and per node the cells that change."""
    return fingerprint(
        context["counts"],
        list_changed,
        *[
            (
                n.pk,
                n.status,
                n.is_processing,
                n.current_action_id,
                n.maintenance,
                n.pending_count,
                n.failed_count,
                n.last_error,
                n.last_sync_at,
                n.conditions,
            )
            for n in context["nodes"]
        ],
    )


def _live_fragments(request: HttpRequest, context: dict, list_changed: bool) -> str:
    reload_url = ""
    if list_changed:
        query = query_without_poll(request)
        reload_url = reverse("nodes:list") + (f"?{query.urlencode()}" if query else "")
    return render_to_string(
        "nodes/_list_live.html",
        {**context, "list_changed": list_changed, "reload_url": reload_url},
        request,
    )


@require_GET
@require_perms(VIEW)
def node_list(request: HttpRequest) -> HttpResponse:
    """The fleet: counts per status, filters, the table, bulk actions for operators."""
    context = _list_context(request)
    poll = LivePoll(request, reverse("nodes:live"), ids=context["ids_digest"])
    context["poller"] = poll.element(_list_fingerprint(context, False), context["counts"].active)
    return render(request, "nodes/list.html", context)


@require_GET
@require_perms(VIEW)
def node_list_live(request: HttpRequest) -> HttpResponse:
    """The list's poll: status cells, counts and the other changing cells, out of band.

    Checkboxes are never sent, so a selection survives every refresh. When nodes were added
    to or removed from the page the client shows (``ids``, the fingerprint of its rows), a
    notice offers a reload instead of reshuffling rows under the user's pointer.
    """
    context = _list_context(request)
    ids = request.GET.get("ids", "")
    changed = bool(ids) and ids != context["ids_digest"]
    poll = LivePoll(request, reverse("nodes:live"), ids=ids)
    return poll.answer(
        _list_fingerprint(context, changed),
        context["counts"].active,
        lambda: _live_fragments(request, context, changed),
    )

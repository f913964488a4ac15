"""The Cluster nodes list (``/nodes/``): the page and its live endpoint.

Its queries (filters, the table's rows, the counts) are ``sync.fleet``'s, shared with the API.
"""

from __future__ import annotations

from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET

from nodes.access import CHANGE, DELETE, VIEW, require_perms
from nodes.models import Node, Role
from sync.fleet import SORTABLE, NodeFilter, fleet_counts, table_rows
from web.fragments import cached_fragment, query_of
from web.polling import LivePoll, fingerprint, query_without_poll

PAGE_SIZE = 50


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


# The placement facts' sort keys (``sync.fleet.SORTABLE``): sorting by one shows the facts.
FACT_SORTS = {"os", "kernel", "cpus", "memory", "disk", "booted"}


def _shows_facts(request: HttpRequest) -> bool:
    """Whether the facts columns are shown on screens too narrow for them by default (they
    are on wide ones): asked with ``?facts=1``, or implied by sorting on one of them."""
    return request.GET.get("facts") == "1" or request.GET.get("sort", "").lstrip("-") in FACT_SORTS


def _list_context(request: HttpRequest, role_names: list[str] | None = None) -> dict:
    """What the page and its poll show. The filters and the sort choose the page's ids from
    the bare node table; only those 50 nodes get the table's annotations (``table_rows``)."""
    filterset = NodeFilter(request.GET or None, queryset=Node.objects.all(), role_names=role_names)
    counts = fleet_counts()
    paginator = Paginator(filterset.qs.values_list("pk", flat=True), PAGE_SIZE)
    if not filterset.active_filters:
        # The whole fleet: the counts have just counted it, no second COUNT(*) of the table.
        paginator.count = counts.total
    page: Page = paginator.get_page(request.GET.get("page"))
    nodes = table_rows(list(page.object_list))
    page.object_list = nodes
    user = request.user
    return {
        "filter": filterset,
        "page": page,
        "nodes": nodes,
        "counts": counts,
        "columns": _sort_columns(request, filterset),
        "show_facts": _shows_facts(request),
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
                n.shown,
                n.hold,
                n.is_processing,
                n.current_action_id,
                n.maintenance,
                n.pending_count,
                n.failed_count,
                n.last_error,
                n.last_sync_at,
                n.last_contact_at,
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
    # The roles, read once: the filter offers them, the bulk bar gives and takes them (the
    # live refresh draws neither).
    role_names = list(Role.objects.order_by("name").values_list("name", flat=True))
    context = _list_context(request, role_names)
    poll = LivePoll(request, reverse("nodes:live"), ids=context["ids_digest"])
    context["poller"] = poll.element(_list_fingerprint(context, False), context["counts"].active)
    query = query_of(request)
    # Drawn once per query (the form's values and errors, the sort and facts it keeps) and
    # roles offered: eight selects through Django's widget templates were about a third of
    # the page's rendering.
    context["filters"] = cached_fragment(
        "nodes/_filters.html",
        {"filter": context["filter"], "request": request},
        ("filters", query, role_names),
        request,
    )
    context["counts_html"] = cached_fragment(
        "nodes/_counts.html", {"counts": context["counts"]}, ("counts", context["counts"])
    )
    context["table_head"] = cached_fragment(
        "nodes/_table_head.html",
        {"columns": context["columns"], "can_bulk": context["can_bulk"], "request": request},
        ("head", query, context["columns"], context["can_bulk"]),
        request,
    )
    page = context["page"]
    context["pagination"] = cached_fragment(
        "_pagination.html",
        {"page": page, "param": "page", "label": "Pages of nodes", "request": request},
        ("pages", query, page.number, page.paginator.count),
        request,
    )
    if request.user.has_perm(CHANGE):
        context["bulk_roles"] = role_names
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

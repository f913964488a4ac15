"""The cluster nodes page: one table that refreshes itself while the cluster is busy."""

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling

from nodes.models import Node


def nodes_for_table():
    """Every node with all that its row shows, in a fixed number of queries.

    The page polls every 2 s, so a query per row would grow with the fleet on every poll:
    the pending count is annotated, the roles prefetched and the running type joined.
    """
    return (
        Node.objects.select_related("current_action")
        .prefetch_related("roles")
        .annotate(pending_count=Count("desyncs"))
        .order_by("name")
    )


@login_required
@require_GET
@vary_on_headers("HX-Request")
def node_list(request):
    """The full page, or only its rows when htmx polls the same URL.

    When no node is processing and none has pending desynchronizations there is nothing left
    to watch, so the poll is answered with 286: htmx still swaps in these final rows (they
    show the settled state) and then stops polling. Reloading the page starts it again.
    """
    nodes = list(nodes_for_table())
    if not request.htmx:
        return render(request, "nodes/list.html", {"nodes": nodes})
    rows = render_to_string("nodes/_rows.html", {"nodes": nodes}, request)
    if any(node.is_processing or node.pending_count for node in nodes):
        return HttpResponse(rows)
    return HttpResponseStopPolling(rows)

"""The panel's URLs plus two yardsticks for the dashboard benchmark: a view that does nothing,
and a minimal list of the same 50 nodes the first page of ``/nodes/`` shows."""

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import path

from nodes.models import Node
from panel.urls import urlpatterns as panel_urlpatterns

_LIST = engines["django"].from_string(
    "<!doctype html><title>Nodes</title><table>{% for node in nodes %}"
    "<tr><td>{{ node.name }}</td><td>{{ node.host }}</td><td>{{ node.status }}</td></tr>"
    "{% endfor %}</table>"
)


def minimal_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def minimal_list(request: HttpRequest) -> HttpResponse:
    nodes = Node.objects.order_by("name")[:50]
    return HttpResponse(_LIST.render({"nodes": nodes}, request))


urlpatterns = [
    *panel_urlpatterns,
    path("bench/minimal/", minimal_view),
    path("bench/minimal-list/", minimal_list),
]

"""``/api/v1/``: exempt from the panel's login middleware, which would redirect to the login
page; every operation authenticates its bearer token itself (``api.auth``), and the schema and
docs are public (they describe, they open nothing). A path that names no operation (a node id
that is not a number) is a JSON 404 too, never the pages' HTML one."""

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.urls import re_path
from django.views.decorators.csrf import csrf_exempt

from api.api import api

app_name = "api"
patterns, _app, _namespace = api.urls


@csrf_exempt  # no cookie is ever read here: nothing to forge
@login_not_required
def no_such_path(request: HttpRequest, rest: str = "") -> JsonResponse:
    return JsonResponse({"detail": "No such API path.", "field": None, "errors": []}, status=404)


for pattern in patterns:
    pattern.callback = login_not_required(pattern.callback)

urlpatterns = [*patterns, re_path(r"^(?P<rest>[\s\S]*)\Z", no_such_path, name="no-such-path")]

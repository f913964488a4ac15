"""The banner's poll: has the clusters' state changed since the page was drawn?

Every page of a logged-in user carries the banner's element (``_cluster_state.html``), which
asks here every few seconds with the state it shows (``since``): 204 while it is the same,
else the new banner, and the list's claim that statuses refresh (out of band) when the page
has one (``claim=1``). So an open page says within seconds that the cluster stopped, and
takes it back when the cluster runs again, without its own live refresh.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from sync.heartbeat import cluster_state


@never_cache
@require_GET
def cluster_banner(request: HttpRequest) -> HttpResponse:
    state = cluster_state()
    if request.GET.get("since") == state.key:
        return HttpResponse(status=204)
    claim = request.GET.get("claim") == "1"
    return render(
        request,
        "_cluster_poll.html",
        {"panel_cluster": state, "claim": claim},
    )

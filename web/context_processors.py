"""What every page's template may use: the clusters' state for the banner (``base.html``)."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from sync.heartbeat import cluster_state, late_seconds


def banner_poll_seconds() -> int:
    """How often an open page asks whether the cluster's state changed: the banner must come
    within a few seconds of the threshold, not a minute later (a third of it, 1 to 5 s)."""
    return max(1, min(5, late_seconds() // 3))


def cluster(request: HttpRequest) -> dict:
    """``panel_cluster`` (a ``sync.heartbeat.ClusterState``), read only by a page that shows
    it: fragments and pages for the anonymous never pay the query."""
    return {
        "panel_cluster": SimpleLazyObject(cluster_state),
        "panel_cluster_poll_seconds": banner_poll_seconds(),
    }

"""``/healthz`` for a load balancer or a monitor: can this panel serve and is its work running?

No login (the balancer has none) and nothing to learn from it: two words per part, no
versions, names, counts or errors. 200 when the database answers and a django-q cluster wrote
its heartbeat within ``PANEL_CLUSTER_LATE_SECONDS`` (``sync.heartbeat``, the same rule as the
pages' banner), 503 otherwise, so a panel whose cluster died is taken out of
rotation instead of accepting work nothing runs.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError:
        return False


def _cluster_seen() -> bool:
    from sync.heartbeat import cluster_state

    try:
        return cluster_state().seen
    except DatabaseError:
        return False


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    database = _database_answers()
    cluster = database and _cluster_seen()
    body = {"database": "ok" if database else "down", "cluster": "ok" if cluster else "late"}
    return JsonResponse(body, status=200 if database and cluster else 503)

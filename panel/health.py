"""``/healthz`` for a load balancer or a monitor: can this panel serve and is its work running?

No login (the balancer has none) and nothing to learn from it: two words per part, no
versions, names, counts or errors. 200 when the database answers and a django-q cluster ran
the sweep's schedule recently, 503 otherwise, so a panel whose cluster died is taken out of
rotation instead of accepting work nothing runs.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

# The sweep runs every minute; its schedule's next run that lies this far in the past means
# no cluster has run the scheduler since.
CLUSTER_LATE_AFTER = timedelta(minutes=3)


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError:
        return False


def _cluster_seen() -> bool:
    from django_q.models import Schedule

    from sync.schedule import SWEEP_SCHEDULE_NAME

    try:
        next_run = (
            Schedule.objects.filter(name=SWEEP_SCHEDULE_NAME)
            .values_list("next_run", flat=True)
            .first()
        )
    except DatabaseError:
        return False
    return next_run is not None and next_run > timezone.now() - CLUSTER_LATE_AFTER


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    database = _database_answers()
    cluster = database and _cluster_seen()
    body = {"database": "ok" if database else "down", "cluster": "ok" if cluster else "late"}
    return JsonResponse(body, status=200 if database and cluster else 503)

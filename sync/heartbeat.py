"""Is a synchronization cluster running now? Its heartbeat, on the database's clock.

django-q's own signs of life do not answer it in time: its Stat lives in the cache and is
gone when the cluster is, and the sweep's Schedule moves only once a minute (plus the
scheduler's slack), so a frozen cluster went unnoticed for minutes while the pages went on
saying that statuses refresh. Instead each cluster writes one row (its name and machine)
every third of ``PANEL_CLUSTER_LATE_SECONDS`` from its main process, whatever its workers and
schedules are doing; the cluster is *seen* while any row is younger than that threshold.

Both ends use the database server's clock (``sync.clock``): the web server and the cluster
may run on machines whose clocks differ.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, Max, Q

from sync.clock import db_now, db_now_plus
from sync.models import ClusterHeartbeat

logger = logging.getLogger(__name__)

# A machine whose cluster has been silent this long is forgotten (a machine taken out of the
# panel must not keep a row for ever); a live cluster's own row is never that old.
FORGET_AFTER = timedelta(days=7)


def late_seconds() -> int:
    """How long without a heartbeat before the cluster counts as not running."""
    return settings.PANEL_CLUSTER_LATE_SECONDS


def beat_every() -> float:
    """A beat every third of the threshold: two beats may be lost before anyone says late."""
    return late_seconds() / 3


def this_cluster() -> tuple[str, str]:
    """This process's cluster: the queue's name (the panel's instance) and the machine."""
    return str(settings.Q_CLUSTER.get("name", "")), socket.gethostname()


def beat(name: str | None = None, host: str | None = None) -> None:
    """Write "this cluster runs now" (on the database's clock) and forget long-silent ones."""
    own_name, own_host = this_cluster()
    key = {"name": name or own_name, "host": host or own_host}
    if not ClusterHeartbeat.objects.filter(**key).update(seen_at=db_now()):
        try:
            with transaction.atomic():
                ClusterHeartbeat.objects.create(**key, seen_at=db_now())
        except IntegrityError:  # a second cluster on this machine wrote it first
            ClusterHeartbeat.objects.filter(**key).update(seen_at=db_now())
    ClusterHeartbeat.objects.filter(seen_at__lt=db_now_plus(-FORGET_AFTER.total_seconds())).delete()


def keep_beating(alive: Callable[[], bool], every: float | None = None) -> None:
    """Beat while ``alive()``: at once, then every ``every`` seconds (``beat_every()``).

    A database that does not answer is logged once and tried again at the next beat: the
    cluster goes on, and its silence shows on the pages as it should. The connection is
    closed after each beat, so a restarted database is simply reconnected to.
    """
    every = beat_every() if every is None else every
    failing = False
    while alive():
        try:
            beat()
            failing = False
        except DatabaseError as e:
            if not failing:
                logger.warning("The cluster could not write its heartbeat: %s", e)
            failing = True
        finally:
            connection.close()
        deadline = time.monotonic() + every
        while alive() and time.monotonic() < deadline:
            time.sleep(min(0.5, every))


@dataclass(frozen=True)
class ClusterState:
    """What the pages and ``/healthz`` say of the clusters."""

    seen: bool
    last_seen: datetime | None  # the youngest heartbeat, None when no cluster ever ran

    @property
    def key(self) -> str:
        """Equal keys mean the banner shows the same thing (for the banner's poll)."""
        if self.seen:
            return "seen"
        return f"{self.last_seen:%Y%m%dT%H%M%S%f}" if self.last_seen else "never"


def cluster_state() -> ClusterState:
    """One query: is any cluster's heartbeat younger than the threshold, and the last one."""
    row = ClusterHeartbeat.objects.aggregate(
        last=Max("seen_at"),
        fresh=Count("pk", filter=Q(seen_at__gt=db_now_plus(-late_seconds()))),
    )
    return ClusterState(seen=bool(row["fresh"]), last_seen=row["last"])

"""``manage.py alerts``: the small process beside the cluster that watches it and sends.

It runs outside the django-q cluster on purpose: a cluster that is dead or frozen cannot say
so, and a receiver that hangs must not hold up a worker. Each pass, about every two seconds:

1. the cluster: late when no heartbeat is younger than ``PANEL_CLUSTER_LATE_SECONDS``
   (``sync.heartbeat``, the rule the pages and ``/healthz`` use); turning late, or running
   again, is a change row written with the alert side's state in one transaction;
2. a digest, when one is due (``digests.make_digest``);
3. the outbox (``digests.deliver``).

A pass that finds nothing to do reads a few rows and writes nothing (on SQLite a write takes
the whole database for a moment). Several of these processes (several machines) are safe: the
state row is locked for each change and digest, and a delivery is claimed before it is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import DatabaseError, connection, transaction

from sync.alerts.channels import Channel
from sync.alerts.digests import deliver, digest_due, locked_state, make_digest, prune_alerts
from sync.clock import read_db_now
from sync.heartbeat import cluster_state, late_seconds
from sync.models import CLUSTER_LATE, AlertState, ConditionChange

log = logging.getLogger("sync.alerts")

PASS_SECONDS = 2.0
PRUNE_EVERY_SECONDS = 3600.0


def cluster_late_now(waited: float) -> tuple[bool | None, str]:
    """Whether the cluster counts as late, and the words for it; None while undecided.

    Late is judged only once this process has watched for the threshold itself: ``runpanel``
    and systemd start the cluster and this process together, and a cluster that was stopped
    with the panel beats again a moment after the restart (a "late" then would be noise).
    """
    state = cluster_state()
    if state.seen:
        return False, ""
    if waited < late_seconds():
        return None, ""
    if state.last_seen is not None:
        return True, (
            f"no cluster heartbeat since {state.last_seen:%Y-%m-%d %H:%M:%S} UTC "
            f"(late after {late_seconds()} s)"
        )
    return True, "no cluster has run yet"


def watch_cluster(waited: float) -> bool | None:
    """Write the cluster's change when it turned late or runs again; the new state, or None
    when nothing changed."""
    late, message = cluster_late_now(waited)
    if late is None or AlertState.objects.filter(pk=1, cluster_late=late).exists():
        return None
    if not late and not AlertState.objects.filter(pk=1).exists():
        return None  # a cluster running as ever: nothing to write, no state row needed
    with transaction.atomic():
        state = locked_state()
        if state.cluster_late == late:
            return None
        state.cluster_late = late
        state.save(update_fields=["cluster_late"])
        ConditionChange.objects.create(
            at=read_db_now(), condition=CLUSTER_LATE, entered=late, message=message[:500]
        )
    if late:
        log.warning("the cluster is late: %s", message)
    else:
        log.info("the cluster runs again")
    return late


@dataclass
class AlertsProcess:
    """One alerts process: its channels, and since when it watches."""

    channels: Sequence[Channel]
    started: float = field(default_factory=time.monotonic)
    pruned: float = 0.0

    def one_pass(self) -> None:
        watch_cluster(time.monotonic() - self.started)
        if digest_due():
            make_digest(self.channels)
        deliver(self.channels)
        if time.monotonic() - self.pruned >= PRUNE_EVERY_SECONDS:
            prune_alerts()
            self.pruned = time.monotonic()

    def run(self, stop: Callable[[], bool], every: float = PASS_SECONDS) -> None:
        """Pass after pass until ``stop()``. A database that does not answer is one warning
        and tried again at the next pass; the connection is closed after each pass, so a
        restarted database is simply reconnected to."""
        failing = False
        while not stop():
            try:
                self.one_pass()
                failing = False
            except DatabaseError as e:
                if not failing:
                    log.warning("the alerts process could not reach the database: %s", e)
                failing = True
            finally:
                connection.close()
            deadline = time.monotonic() + every
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(0.2, every))

"""Digests: the changes not yet reported, as one message per period, and the outbox.

At most one digest per ``PANEL_ALERT_DIGEST_SECONDS``, made once the oldest change it holds
has waited ``PANEL_ALERT_GATHER_SECONDS`` (changes that come together go together), never one
per run. It lists every change, a node's changes of one condition as one line (a flapping
node is one line with its count). Each configured channel gets a delivery row; a channel's
digests go out oldest first, and one that fails is tried again after a backoff that doubles
up to an hour, for as long as it takes, while the newer ones wait behind it: nothing is lost
and the order holds.

Every time is the database's (``sync.clock``), like the rest of the panel's "due" times.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from sync.alerts.channels import Channel, send
from sync.clock import db_now, db_now_plus, read_db_now
from sync.models import (
    AlertDelivery,
    AlertDigest,
    AlertState,
    ConditionChange,
    DeliveryState,
)

log = logging.getLogger("sync.alerts")

# A digest lists this many lines at most (a rack going down is a few hundred nodes; the rest
# is counted and on the pages); it takes at most this many changes, the rest go in the next.
MAX_LINES = 200
MAX_CHANGES = 5000
# The longest wait between two attempts at one receiver.
RETRY_CAP_SECONDS = 3600
# While one process sends a delivery, others leave it alone this long (apprise's timeouts are
# far shorter).
SENDING_SECONDS = 300
TITLE_GROUPS = 3


def locked_state() -> AlertState:
    """The alert side's one row, locked for this transaction (made on first use)."""
    if not AlertState.objects.filter(pk=1).exists():
        try:
            with transaction.atomic():
                AlertState.objects.create(pk=1)
        except IntegrityError:  # another alerts process made it first
            pass
    return AlertState.objects.select_for_update().get(pk=1)


# --- Writing a digest -----------------------------------------------------------------------


def _time(at: datetime) -> str:
    return f"{at:%H:%M:%S}"


def _short(change: ConditionChange) -> str:
    """A few words for the title: "n1 unreachable", "n2 no longer failing", "cluster late"."""
    if change.is_cluster:
        return "cluster late" if change.entered else "cluster running again"
    no_longer = "" if change.entered else "no longer "
    return f"{change.node_name} {no_longer}{change.condition_label}"


def _groups(changes: Iterable[ConditionChange]) -> list[list[ConditionChange]]:
    """The changes of one node (or the cluster) and one condition together, in time order;
    the cluster first, then the nodes by name."""
    groups: dict[tuple, list[ConditionChange]] = {}
    for change in sorted(changes, key=lambda c: (c.at, c.pk)):
        key = (not change.is_cluster, change.node_name, change.node_id or 0, change.condition)
        groups.setdefault(key, []).append(change)
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3]))]


def _line(group: Sequence[ConditionChange]) -> str:
    first, last = group[0], group[-1]
    who = "The cluster" if last.is_cluster else last.node_name
    if len(group) == 1:
        return f"{_time(last.at)} {who} {last.state_text}"
    return (
        f"{_time(first.at)}-{_time(last.at)} {who}: {last.condition_label} changed "
        f"{len(group)} times (flapping); now it {last.state_text}"
    )


def compose(changes: Sequence[ConditionChange]) -> tuple[str, str]:
    """The digest's title and plain-text body for ``changes`` (at least one)."""
    groups = _groups(changes)
    lasts = [group[-1] for group in groups]
    title = ", ".join(_short(change) for change in lasts[:TITLE_GROUPS])
    if len(groups) > TITLE_GROUPS:
        title += f" and {len(groups) - TITLE_GROUPS} more"
    first = min(change.at for change in changes)
    last = max(change.at for change in changes)
    nodes = {change.node_name for change in changes if not change.is_cluster}
    who = [f"{len(nodes)} node{'s'[: len(nodes) != 1]}"] if nodes else []
    who += ["the cluster"] if any(change.is_cluster for change in changes) else []
    lines = [
        f"{len(changes)} change{'s'[: len(changes) != 1]} of {' and '.join(who)}, "
        f"{first:%Y-%m-%d %H:%M:%S} to {last:%H:%M:%S} UTC:",
        "",
    ]
    lines += [_line(group) for group in groups[:MAX_LINES]]
    if len(groups) > MAX_LINES:
        lines.append(f"... and {len(groups) - MAX_LINES} more (the audit page lists them all)")
    lines += [
        "",
        f"From the cluster panel {settings.PANEL_INSTANCE_NAME}: each node's page and the audit "
        "page show its changes and what was sent.",
    ]
    return f"Panel alert: {title}"[:200], "\n".join(lines)


def make_digest(channels: Sequence[Channel]) -> AlertDigest | None:
    """Make the next digest when one is due, with one delivery per channel; None otherwise.

    Due: changes wait, the oldest for at least the gather time, and the last digest is at
    least a period old. The changes are taken by id (not "every id up to N": a transaction
    that commits late may hold a smaller id, and its change goes in the next digest).
    """
    with transaction.atomic():
        state = locked_state()
        now = read_db_now()
        period = timedelta(seconds=settings.PANEL_ALERT_DIGEST_SECONDS)
        if state.last_digest_at is not None and now - state.last_digest_at < period:
            return None
        waiting = list(ConditionChange.objects.filter(digest=None).order_by("pk")[:MAX_CHANGES])
        gather = timedelta(seconds=settings.PANEL_ALERT_GATHER_SECONDS)
        if not waiting or now - min(c.at for c in waiting) < gather:
            return None
        title, body = compose(waiting)
        digest = AlertDigest.objects.create(made_at=now, title=title, body=body)
        ConditionChange.objects.filter(pk__in=[c.pk for c in waiting]).update(digest=digest)
        AlertDelivery.objects.bulk_create(
            AlertDelivery(digest=digest, channel=c.key, label=c.label, next_attempt_at=now)
            for c in channels
        )
        state.last_digest_at = now
        state.save(update_fields=["last_digest_at"])
    log.info(
        "alert digest %d made: %d changes, %d channels", digest.pk, len(waiting), len(channels)
    )
    return digest


def digest_due() -> bool:
    """Cheap, without a lock: may ``make_digest`` find something to do?"""
    return ConditionChange.objects.filter(digest=None).exists()


# --- The outbox -----------------------------------------------------------------------------


def retry_after(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: ``PANEL_ALERT_RETRY_SECONDS`` doubling to an
    hour, with equal jitter (receivers that were down for everyone are not all hit at once)."""
    step = min(RETRY_CAP_SECONDS, settings.PANEL_ALERT_RETRY_SECONDS * 2 ** (attempts - 1))
    return step / 2 + random.uniform(0, step / 2)


def _claim_oldest(channel: Channel) -> AlertDelivery | None:
    """The channel's oldest undelivered digest if its attempt is due, claimed for sending (a
    conditional UPDATE: another alerts process leaves it alone meanwhile)."""
    oldest = (
        AlertDelivery.objects.filter(channel=channel.key, state=DeliveryState.PENDING)
        .select_related("digest")
        .order_by("digest_id")
        .first()
    )
    if oldest is None:
        return None
    claimed = AlertDelivery.objects.filter(
        pk=oldest.pk, state=DeliveryState.PENDING, next_attempt_at__lte=db_now()
    ).update(next_attempt_at=db_now_plus(SENDING_SECONDS))
    return oldest if claimed else None


def deliver(
    channels: Sequence[Channel], sender: Callable[[Channel, str, str], str | None] = send
) -> int:
    """Send what the outbox holds for each channel, oldest first; how many went out.

    A failure stops that channel until its retry (its newer digests wait behind it); the other
    channels go on.
    """
    sent = 0
    for channel in channels:
        while (delivery := _claim_oldest(channel)) is not None:
            error = sender(channel, delivery.digest.title, delivery.digest.body)
            attempts = delivery.attempts + 1
            if error is None:
                AlertDelivery.objects.filter(pk=delivery.pk).update(
                    state=DeliveryState.SENT, sent_at=db_now(), attempts=F("attempts") + 1
                )
                log.info("alert digest %d sent to %s", delivery.digest_id, channel.label)
                sent += 1
                continue
            wait = retry_after(attempts)
            AlertDelivery.objects.filter(pk=delivery.pk).update(
                attempts=F("attempts") + 1, last_error=error, next_attempt_at=db_now_plus(wait)
            )
            log.warning(
                "alert digest %d to %s failed (attempt %d, next in %d s): %s",
                delivery.digest_id,
                channel.label,
                attempts,
                wait,
                error,
            )
            break
    return sent


def prune_alerts(days: int | None = None, batch: int = 5000) -> int:
    """Forget changes and digests older than ``PANEL_AUDIT_DAYS`` (the audit trail's age),
    at most ``batch`` of each a pass; how many rows went."""
    cutoff = db_now_plus(-timedelta(days=days or settings.PANEL_AUDIT_DAYS).total_seconds())
    old_changes = list(
        ConditionChange.objects.filter(at__lt=cutoff).values_list("pk", flat=True)[:batch]
    )
    ConditionChange.objects.filter(pk__in=old_changes).delete()
    old_digests = list(
        AlertDigest.objects.filter(made_at__lt=cutoff).values_list("pk", flat=True)[:batch]
    )
    AlertDigest.objects.filter(pk__in=old_digests).delete()
    return len(old_changes) + len(old_digests)

"""The audit trail: writing one entry per action, reading them back, keeping them for a while.

A table of the panel's own rather than django-auditlog or django-simple-history: those record
model saves, and most actions here are not one save (forcing a run takes a lease, accepting a
key proves it on the network first, a bulk delete is one act on many rows), while a model
save made by the engine (a status, a lease) is no one's action. What an operator did is known
where the action is, so the action writes it (``sync.actions``), in its own transaction.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from nodes.models import Node
from sync.actor import Actor, ActorKind
from sync.models import AuditEntry, AuditTarget


@dataclass(frozen=True)
class Target:
    """What an entry is about: a kind ("node", "role", "managed file"...), an id and a name."""

    kind: str
    object_id: int | None
    name: str

    @classmethod
    def of(cls, row: models.Model) -> Target:
        kind = "node" if isinstance(row, Node) else str(row._meta.verbose_name)
        return cls(kind, row.pk, str(row)[:300])


def node_targets(nodes: Iterable[Node]) -> list[Target]:
    return [Target("node", n.pk, n.name) for n in nodes]


def record(
    actor: Actor,
    action: str,
    targets: Sequence[Target] = (),
    *,
    summary: str = "",
    before: Any = None,
    after: Any = None,
) -> AuditEntry:
    """Write the entry of one action; must run inside the action's transaction, so the entry
    exists exactly when the change does."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("an audit entry is written in the transaction of its action")
    user = actor.user if actor.kind == ActorKind.USER else None
    entry = AuditEntry.objects.create(
        actor_kind=actor.kind,
        user=user if getattr(user, "pk", None) else None,
        actor_name=actor.label[:150],
        address=actor.address[:45],
        action=action,
        summary=summary[:500],
        before=before,
        after=after,
    )
    AuditTarget.objects.bulk_create(
        AuditTarget(entry=entry, kind=t.kind, object_id=t.object_id, name=t.name[:300])
        for t in targets
    )
    return entry


def entries(
    *,
    since: datetime.datetime | None = None,
    node: str = "",
    action: str = "",
    actor: str = "",
) -> QuerySet[AuditEntry]:
    """Entries, newest first, filtered as the audit page and ``manage.py audit`` offer."""
    qs = AuditEntry.objects.all()
    if since is not None:
        qs = qs.filter(at__gte=since)
    if node:
        qs = qs.filter(targets__kind="node", targets__name=node)
    if action:
        qs = qs.filter(action=action)
    if actor:
        qs = qs.filter(actor_name=actor)
    return qs.distinct().prefetch_related("targets").order_by("-at", "-id")


def prune_audit(batch: int = 5000) -> int:
    """Delete entries older than ``PANEL_AUDIT_DAYS`` (at most ``batch`` a pass); the health
    pass calls this beside the run history's pruning."""
    cutoff = timezone.now() - datetime.timedelta(days=settings.PANEL_AUDIT_DAYS)
    old = list(AuditEntry.objects.filter(at__lt=cutoff).values_list("pk", flat=True)[:batch])
    if old:
        AuditEntry.objects.filter(pk__in=old).delete()
    return len(old)


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry as ``manage.py audit --json`` prints it."""
    return {
        "id": entry.pk,
        "at": entry.at.isoformat(),
        "actor_kind": entry.actor_kind,
        "actor": entry.actor_name,
        "user_id": entry.user_id,
        "address": entry.address,
        "action": entry.action,
        "summary": entry.summary,
        "targets": [
            {"kind": t.kind, "id": t.object_id, "name": t.name} for t in entry.targets.all()
        ],
        "before": entry.before,
        "after": entry.after,
    }


_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> datetime.datetime:
    """``7d``, ``12h``, ``30m``, ``2w`` ago, or an ISO date or date-time (UTC unless it says);
    ValueError with a one-line reason otherwise. Shared by the audit page and command."""
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in _UNITS:
        return timezone.now() - datetime.timedelta(**{_UNITS[text[-1]]: int(text[:-1])})
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an age (7d, 12h, 30m, 2w) nor a date (2026-01-31, "
            "2026-01-31T08:00)"
        ) from None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, datetime.UTC)
    return moment


def _models_by_kind() -> dict[str, type[models.Model]]:
    from django.apps import apps

    return {str(m._meta.verbose_name): m for m in apps.get_models()}


def may_see_changes(user, entry: AuditEntry) -> bool:
    """Whether ``user`` may see an entry's before and after: for managed data, only with the
    view permission of that data (its fields and checksums are what the admin would show);
    node entries (fingerprints, roles, maintenance) with the nodes themselves."""
    kinds = {t.kind for t in entry.targets.all()} - {"node", "type", "role"}
    by_kind = _models_by_kind()
    for kind in kinds:
        model = by_kind.get(kind)
        if model is None or not user.has_perm(
            f"{model._meta.app_label}.view_{model._meta.model_name}"
        ):
            return False
    return True

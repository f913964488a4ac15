"""Changes of the fleet's managed data (files, users, packages, services): add, change,
delete, each with the acting user and one audit entry.

The data's own rules stay where they are: the model form validates, the watches
(``sync.watching``) register the types for the nodes concerned in the same transaction. This
adds who did it and what it was before and after: plain fields as they are, texts (a file's
content, a user's keys) as their checksum, never the text itself, and not even that for a
row marked secret (a checksum of a short secret can be guessed back).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.forms import ModelForm

from sync.actions.results import Act, ActionResult
from sync.actor import Actor
from sync.audit import Target, record
from sync.rights import SECRET_FIELD, data_change_refusals
from sync.validators import sha256_text


def snapshot(row: models.Model) -> dict[str, Any]:
    """What the audit entry keeps of a row: see the module's docstring."""
    secret = bool(getattr(row, SECRET_FIELD, False))
    state: dict[str, Any] = {}
    for f in row._meta.concrete_fields:
        if f.primary_key:
            continue
        value = f.value_from_object(row)
        if isinstance(f, models.TextField):
            value = "(secret)" if secret else f"sha256:{sha256_text(value or '')}"
        elif not isinstance(value, str | int | float | bool | type(None)):
            value = str(value)
        state[f.name] = value
    if row.pk:
        for f in row._meta.many_to_many:
            state[f.name] = sorted(str(r) for r in getattr(row, f.name).all())
    return state


def _check(actor: Actor, model: type[models.Model], verb: str) -> None:
    perm = f"{model._meta.app_label}.{verb}_{model._meta.model_name}"
    if not actor.subject.has_perm(perm):
        raise PermissionDenied(f"You may not {verb} {model._meta.verbose_name_plural}.")


def save_data(actor: Actor, form: ModelForm) -> ActionResult:
    """Save a validated model form of managed data (a new row or a change) with its links."""
    model = type(form.instance)
    adding = form.instance._state.adding or form.instance.pk is None
    _check(actor, model, "add" if adding else "change")
    with transaction.atomic():
        stored = None if adding else model._default_manager.filter(pk=form.instance.pk).first()
        if refusals := data_change_refusals(actor.subject, stored, form.instance):
            raise PermissionDenied(" ".join(refusals))
        before = snapshot(stored) if stored is not None else None
        row = form.save()
        after = snapshot(row)
        changed = sorted(k for k in after if before is None or before.get(k) != after[k])
        act = Act.DATA_ADD if adding else Act.DATA_CHANGE
        entry = record(
            actor,
            act,
            [Target.of(row)],
            summary=("Added" if adding else f"Changed {', '.join(changed) or 'nothing'}")
            + f" ({model._meta.verbose_name} {row}).",
            before=before,
            after=after,
        )
    return ActionResult(act, entry.pk, count=1, extra={"row": row, "changed": changed})


def delete_data(actor: Actor, rows: Sequence[models.Model]) -> ActionResult:
    """Delete rows of managed data (of one model); their nodes get the removal."""
    rows = list(rows)
    if not rows:
        return ActionResult(Act.DATA_DELETE, 0)
    model = type(rows[0])
    _check(actor, model, "delete")
    with transaction.atomic():
        targets = [Target.of(r) for r in rows]
        before = {str(r): snapshot(r) for r in rows}
        for r in rows:
            r.delete()  # one by one: each row's watches see it go
        entry = record(
            actor,
            Act.DATA_DELETE,
            targets,
            summary=f"Deleted {len(rows)} {model._meta.verbose_name_plural}.",
            before=before,
        )
    return ActionResult(Act.DATA_DELETE, entry.pk, count=len(rows))

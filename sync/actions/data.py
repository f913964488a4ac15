"""Changes of the fleet's managed data (roles, files, users, packages, services): add, change,
delete, each with the acting user and one audit entry.

The data's own rules stay where they are: the model form validates, the watches
(``sync.watching``) register the types for the nodes concerned in the same transaction. This
adds who did it and what it was before and after: plain fields as they are, texts (a file's
content, a user's keys) as their checksum, never the text itself, and not even that for a
row marked secret (a checksum of a short secret can be guessed back).

What a change does on the nodes (``DataEffect``: "3 nodes will synchronize files") is what
the watches register while it is made, noted as they do it (``sync.watching.noting``), never
counted a second way: a node that keeps a row through another of its roles is not among
them. A confirmation asks the same action with ``dry_run=True``: the change is made in a
transaction that is rolled back, so it is told by the very rules (and refused by the very
rights) that the real change meets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.forms import ModelForm

from nodes.models import Node, Role
from sync.actions.results import Act, ActionResult, NodeOutcome
from sync.actor import Actor
from sync.audit import Target, record
from sync.rights import (
    SECRET_FIELD,
    NodeChange,
    check_node_change,
    data_change_refusals,
    data_panel_host_refusals,
    stored_data_refusals,
)
from sync.synchronizers import REGISTRY
from sync.validators import sha256_text
from sync.watching import Noted, noting


def count_nodes(count: int) -> str:
    return f"{count} node{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class DataEffect:
    """What a change of data does on the nodes: per synchronizer type (its title, in priority
    order) the number of nodes it registers that type for, and all those nodes."""

    by_type: tuple[tuple[str, int], ...] = ()
    node_ids: frozenset[int] = frozenset()

    @classmethod
    def of(cls, noted: Noted) -> DataEffect:
        known = [REGISTRY[name] for name in noted.concerned if name in REGISTRY]
        by_type = tuple(
            (t.title, len(noted.concerned[t.name]))
            for t in sorted(known, key=lambda t: (t.priority, t.name))
        )
        return cls(by_type, frozenset(noted.node_ids))

    def count(self, title: str) -> int:
        return dict(self.by_type).get(title, 0)

    @property
    def nodes(self) -> int:
        return len(self.node_ids)

    def sentence(self) -> str:
        """ "3 nodes will synchronize files; 1 node will synchronize services." """
        if not self.by_type:
            return "No node will synchronize anything: no node's data changes."
        return (
            "; ".join(
                f"{count_nodes(n)} will synchronize {title.lower()}" for title, n in self.by_type
            )
            + "."
        )


class _Rehearsed(Exception):  # noqa: N818 - not an error: how a dry run leaves its transaction
    def __init__(self, result: Any) -> None:
        self.result = result


def made_in_one_transaction(change: Callable[[Noted], Any], *, dry_run: bool) -> Any:
    """Run ``change`` (given what the watches note) in one transaction; a dry run rolls it
    back and returns what it returned all the same."""
    with noting(rehearsal=dry_run) as noted:
        try:
            with transaction.atomic():
                result = change(noted)
                if dry_run:
                    raise _Rehearsed(result)
        except _Rehearsed as rehearsed:
            return rehearsed.result
    return result


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
        if isinstance(row, Role):
            state["nodes"] = sorted(row.nodes.values_list("name", flat=True))
    return state


def _check(actor: Actor, model: type[models.Model], verb: str) -> None:
    perm = f"{model._meta.app_label}.{verb}_{model._meta.model_name}"
    if not actor.subject.has_perm(perm):
        raise PermissionDenied(f"You may not {verb} {model._meta.verbose_name_plural}.")


def _check_role_nodes(actor: Actor, role: Role, nodes: Iterable[Node] | None) -> None:
    """A role's nodes given (``nodes``) or taken (None: the role goes) change what those nodes
    are: each is asked of ``sync.rights`` as giving or taking a role on its own page is."""
    now = {n.pk: n for n in role.nodes.all()} if role.pk else {}
    after = {n.pk: n for n in nodes} if nodes is not None else {}
    for pk in now.keys() ^ after.keys():
        node = now.get(pk) or after[pk]
        roles = [r for r in node.roles.all() if r.pk != role.pk]
        if pk in after:
            roles.append(role)
        check_node_change(actor.subject, node, NodeChange(roles=tuple(roles)))


def _refuse_panel_host(actor: Actor, noted: Noted) -> None:
    if refusals := data_panel_host_refusals(actor.subject, noted.node_ids):
        raise PermissionDenied(" ".join(refusals))


def _outcomes(effect: DataEffect, noted: Noted) -> tuple[NodeOutcome, ...]:
    titles = {t: REGISTRY[t].title for t in noted.concerned if t in REGISTRY}
    names = dict(Node.objects.filter(pk__in=effect.node_ids).values_list("pk", "name"))
    return tuple(
        NodeOutcome(
            pk,
            names.get(pk, str(pk)),
            "registered",
            tuple(titles[t] for t in titles if pk in noted.concerned[t]),
        )
        for pk in sorted(effect.node_ids)
    )


def save_data(actor: Actor, form: ModelForm, *, dry_run: bool = False) -> ActionResult:
    """Save a validated model form of managed data or of a role (a new row or a change) with
    its links; ``extra["effect"]`` says what it does on the nodes. ``dry_run``: only tell
    (and refuse) what saving would do; nothing is kept."""
    instance = form.instance
    model = type(instance)
    adding = instance._state.adding or instance.pk is None
    _check(actor, model, "add" if adding else "change")

    def change(noted: Noted) -> ActionResult:
        stored = None if adding else model._default_manager.filter(pk=instance.pk).first()
        refusals = data_change_refusals(actor.subject, stored, instance)
        if stored is not None:
            refusals += stored_data_refusals(actor.subject, stored)
        if refusals:
            raise PermissionDenied(" ".join(dict.fromkeys(refusals)))
        if isinstance(instance, Role) and "nodes" in form.cleaned_data:
            _check_role_nodes(actor, instance, form.cleaned_data["nodes"])
        before = snapshot(stored) if stored is not None else None
        row = form.save()  # the watches register the types concerned (and note them)
        if isinstance(row, Role) and "nodes" in form.cleaned_data:
            row.nodes.set(form.cleaned_data["nodes"])  # so do these links
        _refuse_panel_host(actor, noted)
        after = snapshot(row)
        changed = sorted(k for k in after if before is None or before.get(k) != after[k])
        effect = DataEffect.of(noted)
        act = Act.DATA_ADD if adding else Act.DATA_CHANGE
        entry = record(
            actor,
            act,
            [Target.of(row)],
            summary=("Added" if adding else f"Changed {', '.join(changed) or 'nothing'}")
            + f" ({model._meta.verbose_name} {row}). {effect.sentence()}",
            before=before,
            after=after,
        )
        return ActionResult(
            act,
            entry.pk,
            _outcomes(effect, noted),
            count=1,
            extra={"row": row, "changed": changed, "effect": effect},
        )

    try:
        return made_in_one_transaction(change, dry_run=dry_run)
    finally:
        if dry_run and adding:  # the rolled-back row has no id: the form may be shown again
            instance.pk = None
            instance._state.adding = True


def delete_data(
    actor: Actor, rows: Sequence[models.Model], *, dry_run: bool = False
) -> ActionResult:
    """Delete rows of managed data or roles (of one model); their nodes get the removal.
    ``extra["effect"]`` says what it does on the nodes; ``dry_run``: only tell it (the rows
    given are left as they are)."""
    rows = list(rows)
    if not rows:
        return ActionResult(Act.DATA_DELETE, 0, extra={"effect": DataEffect()})
    model = type(rows[0])
    _check(actor, model, "delete")
    if dry_run:  # deleting clears a row's id: rehearse on copies
        rows = list(model._default_manager.filter(pk__in=[r.pk for r in rows]))

    def change(noted: Noted) -> ActionResult:
        targets = [Target.of(r) for r in rows]
        before = {str(r): snapshot(r) for r in rows}
        for r in rows:
            if isinstance(r, Role):
                _check_role_nodes(actor, r, None)
            r.delete()  # one by one: each row's watches see it go
        _refuse_panel_host(actor, noted)
        effect = DataEffect.of(noted)
        entry = record(
            actor,
            Act.DATA_DELETE,
            targets,
            summary=f"Deleted {len(rows)} {model._meta.verbose_name_plural}. {effect.sentence()}",
            before=before,
        )
        return ActionResult(
            Act.DATA_DELETE,
            entry.pk,
            _outcomes(effect, noted),
            count=len(rows),
            extra={"effect": effect},
        )

    return made_in_one_transaction(change, dry_run=dry_run)


def deletion_effect(rows: Sequence[models.Model]) -> DataEffect:
    """What deleting ``rows`` would do on the nodes, whoever asks (the admin's confirmations
    say it to those the admin lets delete): rehearsed, never kept."""
    rows = list(rows)
    if not rows:
        return DataEffect()
    model = type(rows[0])
    copies = list(model._default_manager.filter(pk__in=[r.pk for r in rows]))

    def change(noted: Noted) -> DataEffect:
        for r in copies:
            r.delete()
        return DataEffect.of(noted)

    return made_in_one_transaction(change, dry_run=True)

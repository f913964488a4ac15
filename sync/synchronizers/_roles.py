"""What the role-carried types share: their models' base and their admin's base.

This module declares no synchronizer type; the loader imports it like any other module here.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.actions import delete_selected
from django.db import models
from django.http import HttpRequest
from django.template.response import TemplateResponse

from sync.actions.data import count_nodes, delete_data, deletion_effect, save_data
from sync.actor import actor_for_request
from sync.watching import WatchedQuerySet


class RoleData(models.Model):
    """Data carried to the nodes of its roles; ``update()`` on it registers like a save."""

    objects = WatchedQuerySet.as_manager()

    #: What leaving a node does to a row of this type, in a few words: a deleted role's
    #: confirmation lists it for each type it carries.
    removal_short = "removed"

    class Meta:
        abstract = True

    @classmethod
    def removal_effect(cls, rows: Sequence[RoleData], nodes: int) -> str:
        """What deleting ``rows`` does on the ``nodes`` nodes of their roles, in the admin's
        words: every confirmation of a deletion says it before anything happens. A type
        whose removal does something else (or nothing) says so in its own override."""
        return f"Removed from {count_nodes(nodes)} (the nodes of {its_or_their(rows)} roles)."


def its_or_their(rows: Sequence[models.Model]) -> str:
    return "its" if len(rows) == 1 else "their"


def removal_notice(rows: Sequence[RoleData]) -> str:
    """The sentence a deletion's confirmation shows for ``rows`` (of one model), counting the
    nodes the deletion changes as the watches find them (``deletion_effect``)."""
    rows = list(rows)
    if not rows:
        return ""
    return type(rows[0]).removal_effect(rows, deletion_effect(rows).nodes)


def role_removal_notice(roles: Sequence[models.Model], nodes: int | None = None) -> str:
    """What deleting ``roles`` does on their nodes: each node loses the data they carry,
    unless another of its roles carries it too. Empty when they carry nothing. ``nodes``: the
    nodes the deletion changes when the caller rehearsed it already (``deletion_effect``)."""
    role_ids = [r.pk for r in roles]
    parts = []
    for model in apps.get_models():
        if not issubclass(model, RoleData):
            continue
        names = [str(row) for row in model.objects.filter(roles__in=role_ids).distinct()]
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{model._meta.verbose_name_plural} {shown}: {model.removal_short}")
    if not parts:
        return ""
    if nodes is None:
        nodes = deletion_effect(roles).nodes
    return (
        f"On {count_nodes(nodes)}, unless another of a node's roles carries them too: "
        + "; ".join(parts)
        + "."
    )


def _delete_selected(modeladmin, request: HttpRequest, queryset):
    """The admin's "delete selected" action, its confirmation saying what happens on the
    nodes (``removal_notice``)."""
    response = delete_selected(modeladmin, request, queryset)
    if isinstance(response, TemplateResponse):
        response.context_data["on_nodes"] = modeladmin.removal_notice(list(queryset))
    return response


class SaysWhatDeletionDoes:
    """An admin whose delete confirmations (one row, and selected rows) say first what the
    deletion does on the nodes (``removal_notice``)."""

    delete_confirmation_template = "admin/role_data_delete_confirmation.html"
    delete_selected_confirmation_template = "admin/role_data_delete_selected_confirmation.html"

    def render_delete_form(self, request, context):
        context["on_nodes"] = self.removal_notice([context["object"]])
        return super().render_delete_form(request, context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (_delete_selected, name, description)
        return actions

    def removal_notice(self, rows: Sequence[models.Model]) -> str:
        return removal_notice(rows)


class RoleDataAdmin(SaysWhatDeletionDoes, admin.ModelAdmin):
    """The admin of role-carried data: every save and delete goes through the data actions
    (``sync.actions.data``), which record who changed what."""

    list_display = ("__str__", "role_names")
    list_filter = ("roles",)
    filter_horizontal = ("roles",)

    def save_model(self, request, obj, form, change) -> None:
        """Nothing yet: the row and its links are saved together by the action, in
        ``save_related`` (the admin calls both in one transaction)."""

    def save_related(self, request, form, formsets, change) -> None:
        save_data(actor_for_request(request), form)
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request, obj) -> None:
        delete_data(actor_for_request(request), [obj])

    def delete_queryset(self, request, queryset) -> None:
        delete_data(actor_for_request(request), list(queryset))

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("roles")

    @admin.display(description="roles")
    def role_names(self, obj: models.Model) -> str:
        return ", ".join(r.name for r in obj.roles.all())

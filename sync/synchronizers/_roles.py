"""What the role-carried types share: their models' base and their admin's base.

This module declares no synchronizer type; the loader imports it like any other module here.
"""

from __future__ import annotations

from django.contrib import admin
from django.db import models

from sync.actions.data import delete_data, save_data
from sync.actor import actor_for_request
from sync.watching import WatchedQuerySet


class RoleData(models.Model):
    """Data carried to the nodes of its roles; ``update()`` on it registers like a save."""

    objects = WatchedQuerySet.as_manager()

    class Meta:
        abstract = True


class RoleDataAdmin(admin.ModelAdmin):
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

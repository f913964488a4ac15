"""What the role-carried types share: their models' base and their admin's base.

This module declares no synchronizer type; the loader imports it like any other module here.
"""

from __future__ import annotations

from django.contrib import admin
from django.db import models

from sync.watching import WatchedQuerySet


class RoleData(models.Model):
    """Data carried to the nodes of its roles; ``update()`` on it registers like a save."""

    objects = WatchedQuerySet.as_manager()

    class Meta:
        abstract = True


class RoleDataAdmin(admin.ModelAdmin):
    list_display = ("__str__", "role_names")
    list_filter = ("roles",)
    filter_horizontal = ("roles",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("roles")

    @admin.display(description="roles")
    def role_names(self, obj: models.Model) -> str:
        return ", ".join(r.name for r in obj.roles.all())

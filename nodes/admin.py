from django.contrib import admin
from django.db.models import Count
from django.template.defaultfilters import truncatechars

from nodes.access import LOCAL_REFUSED, may_manage_local
from nodes.choices import Transport
from nodes.models import Node, Role

admin.site.site_header = "Cluster panel"
admin.site.site_title = "Cluster panel"
admin.site.index_title = "Administration"


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ("name", "node_count")
    search_fields = ("name",)

    def get_queryset(self, request):
        # Annotated so the changelist counts nodes without a query per role.
        return super().get_queryset(request).annotate(node_count=Count("nodes"))

    @admin.display(description="nodes", ordering="node_count")
    def node_count(self, obj: Role) -> int:
        return obj.node_count


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "address",
        "transport",
        "status",
        "maintenance",
        "last_sync_at",
        "short_last_error",
    )
    list_filter = ("status", "transport", "maintenance", "roles")
    search_fields = ("name", "host")
    filter_horizontal = ("roles",)
    # The status, the lease and the facts are written by the engine; editing them here would
    # only race with it.
    readonly_fields = (
        "status",
        "last_sync_at",
        "last_error",
        "facts",
        "lease_owner",
        "lease_until",
        "current_action_id",
        "created_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "roles", "maintenance")}),
        ("Connection", {"fields": ("transport", "host", "port", "username", "host_key")}),
        ("State", {"fields": ("status", "last_sync_at", "last_error", "facts", "created_at")}),
        ("Lease", {"fields": ("lease_owner", "lease_until", "current_action_id")}),
    )

    def has_change_permission(self, request, obj: Node | None = None) -> bool:
        """Local nodes (the panel's own server) are read-only here for all but superusers."""
        if obj is not None and obj.transport == Transport.LOCAL:
            if not may_manage_local(request.user):
                return False
        return super().has_change_permission(request, obj)

    def formfield_for_choice_field(self, db_field, request, **kwargs):
        # Staff who are not superusers cannot choose ``local``: not offered, and refused if
        # posted by hand (the form validates against these choices).
        if db_field.name == "transport" and not may_manage_local(request.user):
            kwargs["choices"] = [(Transport.SSH.value, Transport.SSH.label)]
            kwargs["error_messages"] = {"invalid_choice": LOCAL_REFUSED}
        return super().formfield_for_choice_field(db_field, request, **kwargs)

    @admin.display(description="address")
    def address(self, obj: Node) -> str:
        return obj.address

    @admin.display(description="last error", ordering="last_error")
    def short_last_error(self, obj: Node) -> str:
        return truncatechars(obj.last_error, 60)

"""The admin's titles and the roles' admin.

The nodes' admin is registered by the synchronization (``sync.node_admin``): who may change a
node there is a rights rule of ``sync.rights`` (the panel's own server, the data its roles
carry), and this app never imports the one above it.
"""

from django.contrib import admin
from django.db.models import Count

from nodes.models import Role

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

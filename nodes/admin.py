from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.template.defaultfilters import truncatechars

from nodes.access import LOCAL_REFUSED, may_manage_local
from nodes.choices import Transport
from nodes.managed import ManagedFile, ManagedUser, Package, Service
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
        "current_action",
        "created_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "roles", "maintenance")}),
        ("Connection", {"fields": ("transport", "host", "port", "username", "host_key")}),
        ("State", {"fields": ("status", "last_sync_at", "last_error", "facts", "created_at")}),
        ("Lease", {"fields": ("lease_owner", "lease_until", "current_action")}),
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


# --- The data carried to nodes (nodes/managed.py) -------------------------------------------


class OctalModeField(forms.CharField):
    """File modes are read and written in octal (0644), as everywhere else on Linux."""

    def prepare_value(self, value):
        return f"{value:04o}" if isinstance(value, int) else value

    def to_python(self, value):
        value = super().to_python(value).strip()
        try:
            return int(value, 8)
        except ValueError:
            raise ValidationError("Enter an octal mode such as 0644 or 0755.") from None


class ManagedFileForm(forms.ModelForm):
    # Not stripped: a file's leading blanks and final newline are part of its content.
    content = forms.CharField(
        widget=forms.Textarea(attrs={"cols": 100, "rows": 20, "spellcheck": "false"}),
        required=False,
        strip=False,
    )
    mode = OctalModeField(
        initial="0644", widget=forms.TextInput(attrs={"size": 6}), help_text="Octal, e.g. 0644."
    )

    class Meta:
        model = ManagedFile
        fields = ("path", "content", "mode", "owner", "group", "roles")


@admin.register(Package)
class PackageAdmin(admin.ModelAdmin):
    list_display = ("name", "role_names")
    list_filter = ("roles",)
    search_fields = ("name",)
    filter_horizontal = ("roles",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("roles")

    @admin.display(description="roles")
    def role_names(self, obj: Package) -> str:
        return ", ".join(r.name for r in obj.roles.all())


@admin.register(ManagedFile)
class ManagedFileAdmin(PackageAdmin):
    form = ManagedFileForm
    list_display = ("path", "octal_mode", "owner", "group", "role_names")
    search_fields = ("path", "content")

    @admin.display(description="mode", ordering="mode")
    def octal_mode(self, obj: ManagedFile) -> str:
        return f"{obj.mode:04o}"


@admin.register(ManagedUser)
class ManagedUserAdmin(PackageAdmin):
    list_display = ("name", "state", "shell", "role_names")
    list_filter = ("state", "roles")


@admin.register(Service)
class ServiceAdmin(PackageAdmin):
    list_display = ("name", "role_names", "file_count")
    filter_horizontal = ("roles", "files")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(file_count=Count("files", distinct=True))

    @admin.display(description="files", ordering="file_count")
    def file_count(self, obj: Service) -> int:
        return obj.file_count

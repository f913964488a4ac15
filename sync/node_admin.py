"""The nodes' admin, with the rights rules of ``sync.rights``.

Raw rows are for repairs, not a door around the pages' checks: the host key is read-only for
everyone (a key is pinned only once the node proved it holds it, on the node's page or with
``acceptkey``), and for everyone but superusers so are host, port and user (a node moves only
through the page, which confirms the new key and checks the login) and nodes cannot be added
here. Roles given here pass the same rule as on the pages, and the panel's own server is
read-only and cannot be deleted by anyone but a superuser.

Nothing is written here: saving, deleting (one node or the bulk action) and maintenance (a
read-only field, switched by the list's actions) go through ``sync.actions``, which record
who did it.
"""

from __future__ import annotations

import copy

from django import forms
from django.contrib import admin
from django.db.models import Count
from django.template.defaultfilters import truncatechars

from nodes.choices import Transport
from nodes.models import Node, Role
from sync import actions as node_actions
from sync.actions.data import delete_data, save_data
from sync.actor import actor_for_request
from sync.rights import (
    LOCAL_REFUSED,
    NodeChange,
    may_change_node,
    may_manage_panel_host,
    node_change_refusals,
)
from sync.synchronizers._roles import SaysWhatDeletionDoes, role_removal_notice

# Moving a node sends its roles' data elsewhere: changed through the pages' checked steps.
ADDRESS_FIELDS = ("host", "port", "username")
SUPERUSER_FIELDS = (*ADDRESS_FIELDS, "is_panel_host")
MODEL_FIELDS = {f.name for f in Node._meta.concrete_fields}


class NodeAdminForm(forms.ModelForm):
    """Asks ``sync.rights`` about the change the form is about to save."""

    acting_user = None  # set per request by NodeAdmin.get_form

    def clean(self) -> dict:
        data = super().clean()
        node = copy.copy(self.instance)
        for name, value in data.items():
            if name in self.fields and name != "roles" and hasattr(node, name):
                setattr(node, name, value)
        change = NodeChange(
            adding=self.instance.pk is None,
            roles=tuple(data["roles"]) if "roles" in data else None,
            address=any(f in self.changed_data for f in (*ADDRESS_FIELDS, "transport")),
        )
        for refusal in node_change_refusals(self.acting_user, node, change):
            field = refusal.field if refusal.field in self.fields else None
            if field is None or field not in self.errors:
                self.add_error(field, refusal.message)
        return data


class NodeAdmin(admin.ModelAdmin):
    form = NodeAdminForm
    list_display = (
        "name",
        "address",
        "transport",
        "status",
        "maintenance",
        "is_panel_host",
        "last_sync_at",
        "short_last_error",
    )
    list_filter = ("status", "transport", "maintenance", "is_panel_host", "roles")
    search_fields = ("name", "host")
    filter_horizontal = ("roles",)
    # The status, the lease and the facts are written by the engine; editing them here would
    # only race with it. The host key is pinned only with proof (see the module's docstring).
    readonly_fields = (
        "host_key",
        "maintenance",
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
        (None, {"fields": ("name", "roles", "maintenance", "is_panel_host")}),
        ("Connection", {"fields": ("transport", "host", "port", "username", "host_key")}),
        ("State", {"fields": ("status", "last_sync_at", "last_error", "facts", "created_at")}),
        ("Lease", {"fields": ("lease_owner", "lease_until", "current_action_id")}),
    )

    actions = ["maintenance_on", "maintenance_off"]

    # --- Every write through the actions (sync.actions), which record who did it ---------

    def save_model(self, request, obj: Node, form, change: bool) -> None:
        """Nothing yet: the node and its roles are saved together by the action, in
        ``save_related`` (the admin calls both in one transaction)."""

    def save_related(self, request, form, formsets, change: bool) -> None:
        actor = actor_for_request(request)
        roles = form.cleaned_data.get("roles")
        if not change:
            node_actions.add_node(actor, form.instance, roles or ())
            return
        fields = [f for f in form.changed_data if f != "roles" and f in MODEL_FIELDS]
        node_actions.edit_node(actor, form.instance, fields, roles=roles)

    def delete_model(self, request, obj: Node) -> None:
        node_actions.delete_nodes(actor_for_request(request), [obj])

    def delete_queryset(self, request, queryset) -> None:
        node_actions.delete_nodes(actor_for_request(request), list(queryset))

    @admin.action(description="Maintenance on for the selected nodes", permissions=["change"])
    def maintenance_on(self, request, queryset) -> None:
        self._maintenance(request, queryset, True)

    @admin.action(description="Maintenance off for the selected nodes", permissions=["change"])
    def maintenance_off(self, request, queryset) -> None:
        self._maintenance(request, queryset, False)

    def _maintenance(self, request, queryset, on: bool) -> None:
        done = node_actions.set_maintenance(actor_for_request(request), list(queryset), on)
        state = "on" if on else "off"
        self.message_user(request, f"Maintenance {state} for {done.count} node(s).")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.acting_user = request.user  # a class made for this request by modelform_factory
        return form

    def get_readonly_fields(self, request, obj: Node | None = None):
        fields = tuple(super().get_readonly_fields(request, obj))
        if may_manage_panel_host(request.user):
            return fields
        return (*SUPERUSER_FIELDS, *fields)

    def has_add_permission(self, request) -> bool:
        """Only superusers add nodes here; everyone else on the page, which confirms the
        host key and checks the login before anything is saved."""
        return may_manage_panel_host(request.user) and super().has_add_permission(request)

    def has_change_permission(self, request, obj: Node | None = None) -> bool:
        """The panel's own server is read-only here for all but superusers."""
        if obj is not None and not may_change_node(request.user, obj):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj: Node | None = None) -> bool:
        """Nobody but a superuser deletes the panel's own server (the bulk action asks too)."""
        if obj is not None and not may_change_node(request.user, obj, NodeChange(deleting=True)):
            return False
        return super().has_delete_permission(request, obj)

    def formfield_for_choice_field(self, db_field, request, **kwargs):
        # Staff who are not superusers cannot choose ``local``: not offered, and refused if
        # posted by hand (the form validates against these choices).
        if db_field.name == "transport" and not may_manage_panel_host(request.user):
            kwargs["choices"] = [(Transport.SSH.value, Transport.SSH.label)]
            kwargs["error_messages"] = {"invalid_choice": LOCAL_REFUSED}
        return super().formfield_for_choice_field(db_field, request, **kwargs)

    @admin.display(description="address")
    def address(self, obj: Node) -> str:
        return obj.address

    @admin.display(description="last error", ordering="last_error")
    def short_last_error(self, obj: Node) -> str:
        return truncatechars(obj.last_error, 60)


admin.site.register(Node, NodeAdmin)


@admin.register(Role)
class RoleAdmin(SaysWhatDeletionDoes, admin.ModelAdmin):
    """Roles: added, renamed and deleted through the data actions (a deleted role takes its
    data away from its nodes, so who did it is recorded)."""

    list_display = ("name", "node_count")
    search_fields = ("name",)

    def get_queryset(self, request):
        # Annotated so the changelist counts nodes without a query per role.
        return super().get_queryset(request).annotate(node_count=Count("nodes"))

    @admin.display(description="nodes", ordering="node_count")
    def node_count(self, obj: Role) -> int:
        return obj.node_count

    def save_model(self, request, obj: Role, form, change: bool) -> None:
        """Saved with its links by the action, in ``save_related``."""

    def save_related(self, request, form, formsets, change: bool) -> None:
        save_data(actor_for_request(request), form)

    def removal_notice(self, rows) -> str:
        return role_removal_notice(rows)

    def delete_model(self, request, obj: Role) -> None:
        delete_data(actor_for_request(request), [obj])

    def delete_queryset(self, request, queryset) -> None:
        delete_data(actor_for_request(request), list(queryset))

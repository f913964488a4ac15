"""Admin of the engine's tables.

Synchronizer types come from code and desynchronizations and runs are written only by the
engine, so the admin shows them but does not let anyone add or edit them.
"""

from django.contrib import admin
from django.template.defaultfilters import truncatechars
from django.utils.html import format_html

from sync import actions, node_admin  # noqa: F401 - node_admin registers the nodes' admin
from sync.actor import actor_for_request
from sync.models import Node2Sync, SyncAction, SyncRun


class EngineWrittenAdmin(admin.ModelAdmin):
    """Read-only: rows belong to the engine. Superusers may still delete stale ones."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(SyncAction)
class SyncActionAdmin(admin.ModelAdmin):
    list_display = ("name", "title", "priority", "node_status", "timeout")
    list_filter = ("node_status",)
    search_fields = ("name", "title")
    # Every column comes from the code: ``update_syncactions`` writes the registry's name,
    # title, priority, node status and timeout back after every migrate, so an edit here
    # would be silently reverted (and a priority or status changed meanwhile would leave the
    # nodes' statuses computed from values the code does not hold). Read-only, like the
    # engine's tables; a type changes in its module (``sync/synchronizers/``).
    readonly_fields = ("name", "title", "priority", "node_status", "timeout")

    def has_add_permission(self, request):
        # Types are registered in code (sync.synchronizers); a row without code does nothing.
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Node2Sync)
class Node2SyncAdmin(EngineWrittenAdmin):
    """Deleting a desynchronization here is skipping it (``sync.actions.skip_work``): the
    node's status is recomputed, a ``skipped`` run and an audit entry say who did it."""

    list_display = (
        "node",
        "action",
        "action_priority",
        "action_node_status",
        "state",
        "attempts",
        "next_attempt_at",
        "short_last_error",
    )
    list_filter = ("state", "action", "action__node_status")
    list_select_related = ("node", "action")
    search_fields = ("node__name", "action__name")
    ordering = ("node__name", "action__priority")

    def delete_model(self, request, obj: Node2Sync) -> None:
        actions.skip_work(actor_for_request(request), obj.node, [obj.action])

    def delete_queryset(self, request, queryset) -> None:
        by_node: dict[int, tuple] = {}
        for row in queryset.select_related("node", "action"):
            node, types = by_node.setdefault(row.node_id, (row.node, []))
            types.append(row.action)
        actor = actor_for_request(request)
        for node, types in by_node.values():
            actions.skip_work(actor, node, types)

    @admin.display(description="priority", ordering="action__priority")
    def action_priority(self, obj: Node2Sync) -> int:
        return obj.action.priority

    @admin.display(description="node status", ordering="action__node_status")
    def action_node_status(self, obj: Node2Sync) -> str:
        return obj.action.get_node_status_display()

    @admin.display(description="last error", ordering="last_error")
    def short_last_error(self, obj: Node2Sync) -> str:
        return truncatechars(obj.last_error, 60)


@admin.register(SyncRun)
class SyncRunAdmin(EngineWrittenAdmin):
    list_display = (
        "node",
        "action",
        "worker",
        "started_at",
        "finished_at",
        "outcome",
        "duration_display",
    )
    list_filter = ("outcome", "action")
    list_select_related = ("node", "action")
    search_fields = ("node__name", "worker")
    fields = (
        "node",
        "action",
        "worker",
        "started_at",
        "finished_at",
        "duration_display",
        "outcome",
        "generation",
        "log_display",
    )
    readonly_fields = ("duration_display", "log_display")

    @admin.display(description="duration")
    def duration_display(self, obj: SyncRun) -> str | None:
        duration = obj.duration
        return None if duration is None else f"{duration:.1f} s"

    @admin.display(description="log")
    def log_display(self, obj: SyncRun) -> str:
        # Preformatted so command output keeps its lines and alignment.
        return format_html('<pre class="sync-log">{}</pre>', obj.log)

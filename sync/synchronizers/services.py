"""Services: enabled and running on the nodes of their roles, reloaded when their files change.

A reload is decided by checksums, not by whether ``files`` wrote something in this session:
the node's ``services.json`` manifest keeps, per service, the sha256 of each of its files at
its last (re)start. So a reload that failed, or a change written while the service was down,
is still caught on the next run, and nothing changed means no reload at all.

Nodes with systemd running use ``systemctl``; others (containers, the test machine) use the
SysV script in /etc/init.d directly. A service dropped from the panel is left as it is:
stopping something is a decision the panel cannot take from a missing row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from django.contrib import admin
from django.db import models
from django.db.models import Count

from nodes.choices import NodeStatus
from sync.context import RunContext
from sync.synchronizers import synchronizer
from sync.synchronizers._manifest import read_manifest, write_manifest
from sync.synchronizers._roles import RoleData, RoleDataAdmin, count_nodes, its_or_their
from sync.synchronizers.files import FILE_FIELDS, ManagedFile, desired_files
from sync.validators import check_service_name, validate_service_name
from sync.watching import Watch

MANIFEST = "services"


class Service(RoleData):
    """A service enabled and running on the nodes of its roles, reloaded when its files change."""

    name = models.CharField(max_length=100, unique=True, validators=[validate_service_name])
    roles = models.ManyToManyField(
        "nodes.Role", blank=True, related_name="services", db_table="service_roles"
    )
    files = models.ManyToManyField(
        ManagedFile,
        blank=True,
        related_name="services",
        db_table="service_files",
        help_text="Reload the service when one of these files changes.",
    )

    class Meta:
        db_table = "service"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    removal_short = "left as they are (not stopped, not disabled)"

    @classmethod
    def removal_effect(cls, rows: Sequence[RoleData], nodes: int) -> str:
        """A service dropped from the panel is left as it is (this module's docstring)."""
        where = f"the {count_nodes(nodes)} of {its_or_their(rows)} roles"
        return (
            f"Left as {'it is' if len(rows) == 1 else 'they are'} on {where}: the panel does not "
            "stop or disable a service it no longer manages; it is no longer started or reloaded."
        )


@admin.register(Service)
class ServiceAdmin(RoleDataAdmin):
    list_display = ("name", "role_names", "file_count")
    search_fields = ("name",)
    filter_horizontal = ("roles", "files")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(file_count=Count("files", distinct=True))

    @admin.display(description="files", ordering="file_count")
    def file_count(self, obj: Service) -> int:
        return obj.file_count


SERVICES = Watch(Service, fields=("name", "files"))
# A node reloads a service on the files it has itself: those files, through both paths.
RELOAD_FILES = Watch(
    ManagedFile, fields=FILE_FIELDS, paths=("roles__nodes", "services__roles__nodes")
)


def _services_for(node_id: int) -> list[dict]:
    """The node's services, each with {path: sha256} of its files that this node receives."""
    services = [
        {"pk": s["id"], "name": s["name"]}
        for s in SERVICES.values_for(node_id, "id", "name", order_by="name")
    ]
    if not services:
        return []
    node_files = desired_files(node_id)
    paths: dict[int, dict[str, str]] = defaultdict(dict)
    links = Service.files.through.objects.filter(service_id__in=[s["pk"] for s in services])
    for service_id, path in links.values_list("service_id", "managedfile__path"):
        if path in node_files:
            paths[service_id][path] = node_files[path]
    return [{"name": s["name"], "files": paths[s["pk"]]} for s in services]


class Systemd:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    async def is_running(self, name: str) -> bool:
        argv = ["systemctl", "is-active", "--quiet", name]
        return (await self.ctx.transport.run(argv, check=False)).exit_status == 0

    async def enable(self, name: str, *, start: bool) -> None:
        now = ["--now"] if start else []
        await self.ctx.transport.run(["systemctl", "enable", *now, name])

    async def reload(self, name: str) -> None:
        await self.ctx.transport.run(["systemctl", "reload-or-restart", name])


class SysV:
    """The init script itself, the way a node without systemd runs services."""

    def __init__(self, ctx: RunContext, has_update_rc_d: bool) -> None:
        self.ctx = ctx
        self.has_update_rc_d = has_update_rc_d

    @staticmethod
    def script(name: str) -> str:
        return f"/etc/init.d/{name}"

    async def is_running(self, name: str) -> bool:
        script = self.script(name)
        if (await self.ctx.transport.run(["test", "-x", script], check=False)).exit_status:
            raise ValueError(f"service {name}: no systemd and no executable {script} on the node")
        # LSB: status exits 0 when the service runs (3 when stopped, 4 when unknown).
        return (await self.ctx.transport.run([script, "status"], check=False)).exit_status == 0

    async def enable(self, name: str, *, start: bool) -> None:
        if self.has_update_rc_d:
            await self.ctx.transport.run(["update-rc.d", name, "defaults"])
        if start:
            await self.ctx.transport.run([self.script(name), "start"])

    async def reload(self, name: str) -> None:
        await self.ctx.transport.run([self.script(name), "reload"])


async def service_manager(ctx: RunContext) -> Systemd | SysV:
    systemd = await ctx.transport.run(["test", "-d", "/run/systemd/system"], check=False)
    if systemd.exit_status == 0:
        return Systemd(ctx)
    # A fixed command with no data in it: asks the node's shell whether the program exists.
    found = await ctx.transport.run(["sh", "-c", "command -v update-rc.d"], check=False)
    return SysV(ctx, has_update_rc_d=found.exit_status == 0)


@synchronizer(
    name="services",
    title="Services",
    priority=50,
    node_status=NodeStatus.READY,
    timeout=300,
    watches=[SERVICES, RELOAD_FILES],
    needs=("software", "files"),
)
async def sync_services(ctx: RunContext) -> None:
    services = await ctx.db(_services_for, ctx.node.pk)
    for service in services:
        check_service_name(service["name"])
    manifest = await read_manifest(ctx, MANIFEST)
    if not services and not manifest:
        ctx.log("no services for this node's roles")
        return
    wanted = {s["name"] for s in services}
    for name in sorted(set(manifest) - wanted):
        ctx.log(f"{name}: no longer managed here, left as it is")

    manager = await service_manager(ctx) if services else None
    recorded: dict[str, dict[str, str]] = {}
    for service in services:
        name, files = service["name"], service["files"]
        before = manifest.get(name)
        running = await manager.is_running(name)
        if not running or before is None:
            # Enabling is idempotent but not free: done when first managed or found stopped.
            await manager.enable(name, start=not running)
        if not running:
            ctx.log(f"{name}: enabled and started")
        elif before != files:
            # Changed files, or first managed while already running (its configuration may
            # have been written just now): the running service must read it.
            await manager.reload(name)
            old = before or {}
            changed = sorted(p for p in files.keys() | old.keys() if files.get(p) != old.get(p))
            ctx.log(f"{name}: reloaded ({', '.join(changed) or 'first run'})")
        else:
            ctx.log(f"{name}: running, unchanged")
        recorded[name] = files
    if recorded != manifest:
        await write_manifest(ctx, MANIFEST, recorded)

"""Software: the packages the node's roles need, installed with the node's package manager.

Installed packages are checked first so a node that has everything costs one query and runs
no package manager at all (apt and dnf take locks and may touch the network). Packages are
never removed: a package dropped from a role may be needed by something the panel does not
know about.
"""

from __future__ import annotations

import shlex

from django.contrib import admin
from django.db import models

from nodes.choices import NodeStatus
from nodes.models import Node
from nodes.transports import CommandFailed, TransportError
from sync.context import RunContext
from sync.synchronizers import synchronizer
from sync.synchronizers._roles import RoleData, RoleDataAdmin
from sync.validators import check_package_name, validate_package_name
from sync.watching import Watch

APT_DISTROS = {"debian", "ubuntu"}
DNF_DISTROS = {"fedora", "rhel", "centos", "rocky", "almalinux", "alma"}

# What apt-get says when its package lists are older than the package asked for.
STALE_LISTS = ("Unable to locate package", "has no installation candidate")
APT_GET = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o", "DPkg::Lock::Timeout=300"]


class Package(RoleData):
    """A package installed on every node that has one of its roles."""

    name = models.CharField(max_length=128, unique=True, validators=[validate_package_name])
    roles = models.ManyToManyField(
        "nodes.Role", blank=True, related_name="packages", db_table="package_roles"
    )

    class Meta:
        db_table = "package"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


@admin.register(Package)
class PackageAdmin(RoleDataAdmin):
    list_display = ("name", "role_names")
    search_fields = ("name",)


PACKAGES = Watch(Package, fields=("name",))


def _software_for(node_id: int) -> tuple[list[str], dict]:
    """The package names the node's roles need (sorted, unique) and the node's facts."""
    names = PACKAGES.rows_for(node_id).order_by("name").values_list("name", flat=True)
    facts = Node.objects.filter(pk=node_id).values_list("facts", flat=True).first()
    return list(names), facts or {}


def package_manager(os_ids: list[str]) -> str | None:
    """``apt`` or ``dnf`` for the first known id among the OS id and its ID_LIKE ids."""
    for os_id in os_ids:
        if os_id in APT_DISTROS:
            return "apt"
        if os_id in DNF_DISTROS:
            return "dnf"
    return None


def parse_os_release(text: str) -> list[str]:
    """``ID`` then the ``ID_LIKE`` ids of an os-release file."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            try:
                values[key.strip()] = " ".join(shlex.split(value))
            except ValueError:
                continue
    return [values.get("ID", ""), *values.get("ID_LIKE", "").split()]


async def _os_ids(ctx: RunContext, facts: dict) -> list[str]:
    """The node's OS ids from its facts; from its /etc/os-release when it has no facts yet."""
    os_facts = facts.get("os") or {}
    if os_facts.get("id"):
        return [os_facts["id"], *str(os_facts.get("id_like") or "").split()]
    try:
        return parse_os_release((await ctx.transport.read_file("/etc/os-release")).decode())
    except TransportError:
        return []


async def _missing_apt(ctx: RunContext, names: list[str]) -> list[str]:
    argv = ["dpkg-query", "-W", "-f=${Package}\t${Status}\n", *names]
    result = await ctx.transport.run(argv, check=False)
    if result.exit_status not in (0, 1):  # 1: some package is unknown to dpkg
        raise CommandFailed(argv, result.exit_status, result.stderr)
    installed = set()
    for line in result.stdout.splitlines():
        name, _, status = line.partition("\t")
        if status.split()[-1:] == ["installed"]:  # "install ok installed", "hold ok installed"
            installed.add(name)
    return [n for n in names if n not in installed]


async def _missing_dnf(ctx: RunContext, names: list[str]) -> list[str]:
    # Exits with the number of missing packages, printing "package X is not installed".
    result = await ctx.transport.run(
        ["rpm", "-q", "--queryformat", "%{NAME}\n", *names], check=False
    )
    installed = set(result.stdout.split())
    return [n for n in names if n not in installed]


async def _install_apt(ctx: RunContext, names: list[str]) -> None:
    install = [*APT_GET, "install", "-y", "--no-install-recommends", *names]
    try:
        await ctx.transport.run(install)
    except CommandFailed as e:
        if not any(m in e.stderr for m in STALE_LISTS):
            raise
        ctx.log("apt-get could not find a package: updating the package lists and retrying")
        await ctx.transport.run([*APT_GET, "update"])
        await ctx.transport.run(install)


async def _install_dnf(ctx: RunContext, names: list[str]) -> None:
    await ctx.transport.run(["dnf", "install", "-y", *names])


@synchronizer(
    name="software",
    title="Software packages",
    priority=20,
    node_status=NodeStatus.INSTALLING,
    timeout=900,
    watches=[PACKAGES],
)
async def install_software(ctx: RunContext) -> None:
    names, facts = await ctx.db(_software_for, ctx.node.pk)
    if not names:
        ctx.log("no packages for this node's roles")
        return
    for name in names:
        check_package_name(name)
    os_ids = await _os_ids(ctx, facts)
    manager = package_manager(os_ids)
    if manager is None:
        shown = " / ".join(i for i in os_ids if i) or "unknown"
        raise ValueError(
            f"no package manager for this node's OS ({shown}): "
            "software supports Debian/Ubuntu (apt) and Fedora/RHEL-like systems (dnf)"
        )
    missing = await (_missing_apt if manager == "apt" else _missing_dnf)(ctx, names)
    if not missing:
        ctx.log(f"all {len(names)} packages installed")
        return
    ctx.log(
        f"{manager}: installing {' '.join(missing)} ({len(names) - len(missing)} already there)"
    )
    await (_install_apt if manager == "apt" else _install_dnf)(ctx, missing)
    # Proven, not assumed: a package manager that read a name as something else (an
    # operator, a file) must not leave a run that says it installed it.
    still = await (_missing_apt if manager == "apt" else _missing_dnf)(ctx, missing)
    if still:
        raise ValueError(f"{manager} finished but did not install: {' '.join(still)}")
    ctx.log(f"installed {len(missing)} package(s)")

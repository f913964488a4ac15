"""Software: the packages the node's roles need, installed with the node's package manager.

Installed packages are checked first so a node that has everything costs one query and runs
no package manager at all (apt and dnf take locks and may touch the network). Packages are
never removed: a package dropped from a role may be needed by something the panel does not
know about.

A name is installed only once the node's package manager has said that it knows a package of
exactly that name. apt reads a name that matches no package as a regular expression (``lib.``
installs hundreds of packages, ``sysvinit.core`` replaces the init system) and dnf reads one
as a glob or a name-version-release: the check asks with queries that match nothing but
prefixes (``apt-cache pkgnames``) and compares the answers whole, so by the time apt-get or
dnf sees a name, it is a package's own name, which both take before any pattern. A virtual
name (apt would pick one of its providers, or none) is refused too, its providers named.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from django.contrib import admin
from django.db import models

from nodes.choices import NodeStatus
from nodes.models import Node
from nodes.transports import CommandFailed, TransportError
from nodes.transports.limits import OUTPUT_LIMIT
from sync.context import RunContext
from sync.synchronizers import synchronizer
from sync.synchronizers._roles import RoleData, RoleDataAdmin, count_nodes, its_or_their
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

    removal_short = "left installed (the panel never removes a package)"

    @classmethod
    def removal_effect(cls, rows: Sequence[RoleData], nodes: int) -> str:
        """Packages are never removed (this module's docstring says why)."""
        where = f"the {count_nodes(nodes)} of {its_or_their(rows)} roles"
        return (
            f"Nothing is uninstalled on {where}: the panel "
            "never removes a package (something it does not know of may need it); remove it "
            "there yourself if it must go."
        )


@admin.register(Package)
class PackageAdmin(RoleDataAdmin):
    list_display = ("name", "role_names")
    search_fields = ("name",)


PACKAGES = Watch(Package, fields=("name",))


def _software_for(node_id: int) -> tuple[list[str], dict]:
    """The package names the node's roles need (sorted, unique) and the node's facts."""
    names = [row["name"] for row in PACKAGES.values_for(node_id, "name", order_by="name")]
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


async def _listed(ctx: RunContext, argv: list[str], name: str) -> bool:
    """Whether ``name`` is one whole line of what ``argv`` prints (a list of names)."""
    out = (await ctx.transport.run(argv)).stdout
    if name in out.split():
        return True
    if len(out.encode()) >= OUTPUT_LIMIT:  # cut: the name may have been in the middle
        raise ValueError(
            f"cannot check the package name {name}: more package names start with it "
            "than the panel reads from a node"
        )
    return False


def reverse_provides(showpkg: str) -> list[str]:
    """The packages that provide a virtual one, from ``apt-cache showpkg``'s last section."""
    _, _, rest = showpkg.partition("\nReverse Provides:")
    return sorted({line.split()[0] for line in rest.splitlines()[1:] if line.strip()})


def _virtual(name: str, providers: list[str]) -> str:
    if not providers:
        return f"{name}: a virtual package that no package provides"
    return f"{name}: a virtual package, provided by {', '.join(providers)}: name one of them"


async def _apt_is_package(ctx: RunContext, name: str) -> bool:
    # ``pkgnames PREFIX`` matches prefixes only, never patterns, and leaves virtual names out.
    return await _listed(ctx, ["apt-cache", "pkgnames", "--", name], name)


async def _apt_refusal(ctx: RunContext, name: str) -> str:
    """Why apt has no package of exactly this name: a virtual name, with its providers
    (``showpkg`` is asked only about a name that exists as it is, which apt takes as it is
    before it would try it as a pattern), or no such name at all."""
    if not await _listed(ctx, ["apt-cache", "pkgnames", "--all-names", "--", name], name):
        return f"{name}: apt knows no package of exactly this name"
    showpkg = await ctx.transport.run(["apt-cache", "showpkg", "--", name])
    return _virtual(name, reverse_provides(showpkg.stdout))


# dnf 4 turns the two characters \n into a newline, dnf 5 needs them: one name a line.
DNF_NAMES = ["dnf", "repoquery", "--quiet", "--queryformat", "%{name}\\n"]


async def _dnf_is_package(ctx: RunContext, name: str) -> bool:
    """``repoquery NAME`` also answers for a glob and for the ``name.arch`` or
    ``name-version-release`` forms of another package: only an answer that is ``name``
    itself proves a package of that name (globs cannot even get here: the validator refuses
    ``* ? [ ]``)."""
    return await _listed(ctx, [*DNF_NAMES, "--", name], name)


async def _dnf_refusal(ctx: RunContext, name: str) -> str:
    """Why dnf has no package of exactly this name: one that packages only provide (named),
    or no such name at all."""
    providers = await ctx.transport.run([*DNF_NAMES, "--whatprovides", name])
    if names := sorted(set(providers.stdout.split())):
        return _virtual(name, names)
    return f"{name}: dnf knows no package of exactly this name"


async def refusals(ctx: RunContext, manager: str, names: list[str]) -> list[str]:
    """Why each of ``names`` that is not a real package's own name must not be given to the
    node's package manager; an empty list when all are.

    apt's lists are refreshed once when a name is not among them (a new node, or a package
    newer than its lists); dnf refreshes its metadata itself.
    """
    is_package = _apt_is_package if manager == "apt" else _dnf_is_package
    others = [name for name in names if not await is_package(ctx, name)]
    if others and manager == "apt":
        ctx.log(f"apt has no package named {' '.join(others)}: updating the package lists")
        await ctx.transport.run([*APT_GET, "update"])
        others = [name for name in others if not await is_package(ctx, name)]
    refusal = _apt_refusal if manager == "apt" else _dnf_refusal
    return [await refusal(ctx, name) for name in others]


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
    needs=("nodeinfo",),
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
    if refused := await refusals(ctx, manager, missing):
        raise ValueError("nothing was installed: " + "; ".join(refused))
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

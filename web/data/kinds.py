"""What each kind of data shows on its pages: one small class per model on one generic base.

A ``DataKind`` names its model, its form, what its list searches and shows (``columns``) and
what its page shows (``facts``, ``sections``, ``content``). The views (``web.data.views``)
know nothing of any model: a kind added here gets its list, page, editor and deletion.
Cells are built with ``format_html`` (escaped), so no value reaches a page unescaped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django import forms
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from nodes.models import Node, Role
from sync.actions.data import DataEffect
from sync.rights import may_view_content, receiving_nodes
from sync.synchronizers._roles import role_removal_notice
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.services import Service
from sync.synchronizers.software import Package
from sync.synchronizers.users import ManagedUser
from web.data import forms as data_forms

SHOWN_NAMES = 8  # names listed in a cell before "and N more"


@dataclass(frozen=True)
class Column:
    label: str
    cell: Callable[[models.Model], SafeString]


@dataclass(frozen=True)
class Section:
    """A list of linked rows on a row's page (a role's files, a service's files...)."""

    title: str
    items: Sequence[SafeString]
    empty: str = "None."


@dataclass(frozen=True)
class Content:
    """A text shown as a block (a file's content, a user's keys); ``hidden`` says why not."""

    label: str
    text: str = ""
    hidden: str = ""


def url_of(row: models.Model, view: str = "detail") -> str:
    kind = KIND_OF[type(row)]
    return reverse(f"data:{kind.slug}_{view}", args=[row.pk])


def link(row: models.Model) -> SafeString:
    if isinstance(row, Node):
        return format_html('<a href="{}">{}</a>', reverse("nodes:detail", args=[row.pk]), row)
    return format_html('<a href="{}">{}</a>', url_of(row), row)


def links(rows: Iterable[models.Model], limit: int = SHOWN_NAMES) -> SafeString:
    rows = list(rows)
    if not rows:
        return mark_safe('<span class="text-body-secondary">—</span>')
    shown = format_html_join(", ", "{}", ((link(r),) for r in rows[:limit]))
    if len(rows) > limit:
        return format_html("{} and {} more", shown, len(rows) - limit)
    return shown


def code(value: object) -> SafeString:
    return format_html("<code>{}</code>", value)


class DataKind:
    """The generic base: every attribute a kind's pages need, with defaults for role data."""

    slug: str
    model: type[models.Model]
    form_class: type[forms.ModelForm]
    title: str  # the list's heading, plural
    search_fields: tuple[str, ...] = ("name",)
    prefetch: tuple[str, ...] = ("roles",)
    search_help: str = "Name"

    @property
    def singular(self) -> str:
        return str(self.model._meta.verbose_name)

    def perm(self, verb: str) -> str:
        return f"{self.model._meta.app_label}.{verb}_{self.model._meta.model_name}"

    def queryset(self) -> models.QuerySet:
        return self.model._default_manager.prefetch_related(*self.prefetch)

    def search(self, rows: models.QuerySet, text: str, user) -> models.QuerySet:
        query = Q()
        for name in self.search_fields:
            query |= Q(**{f"{name}__icontains": text})
        return rows.filter(query)

    def filter_role(self, rows: models.QuerySet, role: Role) -> models.QuerySet:
        return rows.filter(roles=role)

    def columns(self) -> list[Column]:
        return [Column("Name", link), Column("Roles", lambda r: links(r.roles.all()))]

    def facts(self, row: models.Model, user) -> list[tuple[str, SafeString]]:
        return [("Roles", links(row.roles.all(), limit=100))]

    def sections(self, row: models.Model, user) -> list[Section]:
        nodes = list(receiving_nodes(row).order_by("name")[:101])
        more = " (the first 100)" if len(nodes) > 100 else ""
        return [
            Section(
                f"Nodes that receive it{more}",
                [link(n) for n in nodes[:100]],
                "No node receives it: none of its roles is given to a node.",
            )
        ]

    def content(self, row: models.Model, user) -> Content | None:
        return None

    def form(self, user, *args, **kwargs) -> forms.ModelForm:
        return self.form_class(*args, user=user, **kwargs)

    def removal(self, rows: Sequence[models.Model], effect: DataEffect) -> str:
        """What deleting ``rows`` does on the nodes, in the model's own words."""
        return type(rows[0]).removal_effect(rows, effect.nodes) if rows else ""


class RoleKind(DataKind):
    slug = "roles"
    model = Role
    form_class = data_forms.RoleForm
    title = "Roles"
    prefetch = ("nodes", "files", "users", "packages", "services")
    CARRIED = (("files", "Files"), ("users", "Users"), ("packages", "Packages"))

    def filter_role(self, rows, role):
        return rows.filter(pk=role.pk)

    def columns(self) -> list[Column]:
        carried = [
            Column(title, lambda r, name=name: links(getattr(r, name).all(), limit=4))
            for name, title in (*self.CARRIED, ("services", "Services"))
        ]
        return [
            Column("Name", link),
            Column("Nodes", lambda r: links(r.nodes.all(), limit=4)),
            *carried,
        ]

    def facts(self, row, user):
        return [("Nodes", format_html("{}", row.nodes.count()))]

    def sections(self, row, user):
        nodes = Section("Nodes", [link(n) for n in row.nodes.order_by("name")], "No node has it.")
        carried = [
            Section(title, [link(r) for r in getattr(row, name).all()], "None.")
            for name, title in (*self.CARRIED, ("services", "Services"))
        ]
        return [nodes, *carried]

    def removal(self, rows, effect):
        return role_removal_notice(rows, effect.nodes)


class PackageKind(DataKind):
    slug = "packages"
    model = Package
    form_class = data_forms.PackageForm
    title = "Packages"


class FileKind(DataKind):
    slug = "files"
    model = ManagedFile
    form_class = data_forms.FileForm
    title = "Files"
    search_fields = ("path",)
    prefetch = ("roles", "services")
    search_help = "Path"

    def columns(self):
        return [
            Column("Path", link),
            Column("Mode", lambda r: code(f"{r.mode:04o}")),
            Column("Owner", lambda r: code(f"{r.owner}:{r.group}")),
            Column(
                "Secret",
                lambda r: (
                    mark_safe('<span class="badge text-bg-warning">secret</span>')
                    if r.secret
                    else mark_safe("")
                ),
            ),
            Column("Roles", lambda r: links(r.roles.all())),
        ]

    def facts(self, row, user):
        bits = "allowed" if row.special_bits else "not allowed"
        return [
            ("Mode", code(f"{row.mode:04o}")),
            ("Owner", code(row.owner)),
            ("Group", code(row.group)),
            ("Special bits", format_html("{}", bits)),
            ("Secret", format_html("{}", "yes" if row.secret else "no")),
            *super().facts(row, user),
            ("Reloads", links(row.services.all(), limit=100)),
        ]

    def content(self, row, user):
        if not may_view_content(user, row):
            return Content(
                "Content", hidden="Secret: shown only to users allowed to view secret files."
            )
        return Content("Content", row.content)


class UserKind(DataKind):
    slug = "users"
    model = ManagedUser
    form_class = data_forms.UserForm
    title = "Users"

    def columns(self):
        return [
            Column("Name", link),
            Column("State", lambda r: format_html("{}", r.get_state_display())),
            Column("Shell", lambda r: code(r.shell)),
            Column("Keys", lambda r: format_html("{}", key_count(r))),
            Column("Roles", lambda r: links(r.roles.all())),
        ]

    def facts(self, row, user):
        return [
            ("State", format_html("{}", row.get_state_display())),
            ("Shell", code(row.shell)),
            (
                "Takes over an existing account",
                format_html("{}", "yes" if row.adopt_existing else "no"),
            ),
            *super().facts(row, user),
        ]

    def content(self, row, user):
        return Content("SSH keys (authorized_keys)", row.authorized_keys or "(none)")


def key_count(user: ManagedUser) -> int:
    return sum(1 for line in user.authorized_keys.splitlines() if line.strip())


class ServiceKind(DataKind):
    slug = "services"
    model = Service
    form_class = data_forms.ServiceForm
    title = "Services"
    prefetch = ("roles", "files")

    def columns(self):
        return [
            Column("Name", link),
            Column("Reloaded by", lambda r: links(r.files.all(), limit=4)),
            Column("Roles", lambda r: links(r.roles.all())),
        ]

    def facts(self, row, user):
        return [
            *super().facts(row, user),
            ("Reloaded when these files change", links(row.files.all(), limit=100)),
        ]


KINDS: dict[str, DataKind] = {
    k.slug: k for k in (RoleKind(), PackageKind(), FileKind(), UserKind(), ServiceKind())
}
KIND_OF: dict[type[models.Model], DataKind] = {k.model: k for k in KINDS.values()}

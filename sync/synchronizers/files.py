"""Files: the configuration files of the node's roles, written atomically and checked.

The node is asked for the checksum, mode and owner of every file in one request, each read
through one descriptor opened without following a link (``Transport.stat_files``), so an
unchanged file costs nothing and is never rewritten (its mtime stays, nothing that watches it
wakes up); a file with the right bytes but another mode or owner gets them on its descriptor,
only while it still holds those bytes (``set_attrs``: nothing is ever changed by path, which
a user who owns a folder on the way could re-point at root's files). A written file is read
back by checksum: a run succeeds only when the node holds
exactly the panel's bytes. The node's ``files.json`` manifest lists the paths this panel
manages there, so a file dropped from the panel (or from the node's roles) is removed,
through no link and no folder but root's and the file owner's.
"""

from __future__ import annotations

import posixpath

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import models

from nodes.choices import NodeStatus
from nodes.transports import TransportError
from nodes.transports.base import FileState
from sync.context import RunContext
from sync.rights import may_view_content, may_view_secrets
from sync.synchronizers import synchronizer
from sync.synchronizers._manifest import read_manifest, write_manifest
from sync.synchronizers._roles import RoleData, RoleDataAdmin
from sync.validators import (
    check_path,
    check_posix_name,
    sha256_text,
    special_mode_bits,
    unix_newlines,
    validate_absolute_path,
    validate_mode,
    validate_posix_name,
    validate_special_bits,
)
from sync.watching import Watch

MANIFEST = "files"


class ManagedFile(RoleData):
    """A file written on every node that has one of its roles; removed when it goes."""

    path = models.CharField(max_length=512, unique=True, validators=[validate_absolute_path])
    content = models.TextField(blank=True)
    # Secret content (keys, passwords) is shown only to users with ``view_secret`` and
    # delivered only by them (``sync.rights``); others see the path, mode, owner and roles.
    secret = models.BooleanField(
        default=False,
        help_text=(
            "Its content is shown only to users allowed to view secret files, and only they "
            "may give its roles to a node."
        ),
    )
    mode = models.PositiveIntegerField(default=0o644, validators=[validate_mode])
    special_bits = models.BooleanField(
        "Allow special bits",
        default=False,
        help_text="Allow a setuid, setgid or world-writable mode (e.g. 4755 or 0666).",
    )
    owner = models.CharField(max_length=32, default="root", validators=[validate_posix_name])
    group = models.CharField(max_length=32, default="root", validators=[validate_posix_name])
    roles = models.ManyToManyField(
        "nodes.Role", blank=True, related_name="files", db_table="managed_file_roles"
    )

    class Meta:
        db_table = "managed_file"
        ordering = ["path"]
        verbose_name = "managed file"
        permissions = [("view_secret_managedfile", "Can view the content of secret files")]

    def __str__(self) -> str:
        return self.path

    def clean(self) -> None:
        self.content = unix_newlines(self.content)
        if isinstance(self.mode, int):
            try:
                validate_special_bits(self.mode, self.special_bits)
            except ValidationError as e:
                raise ValidationError({"mode": e.messages}) from None

    @property
    def sha256(self) -> str:
        return sha256_text(self.content)


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
        fields = ("path", "content", "secret", "mode", "special_bits", "owner", "group", "roles")


@admin.register(ManagedFile)
class ManagedFileAdmin(RoleDataAdmin):
    """A secret file's content is for users with ``view_secret`` only (``sync.rights``).

    Everyone else sees its path, mode, owner and roles, read-only: changing its roles would
    send it to their own node, and its path or mode could expose it on the nodes it has.
    They cannot mark or unmark files secret, and their search does not look into content.
    """

    form = ManagedFileForm
    list_display = ("path", "secret", "octal_mode", "owner", "group", "role_names")
    list_filter = ("secret", "roles")
    search_fields = ("path", "content")

    def _hides_content(self, request, obj: ManagedFile | None) -> bool:
        return obj is not None and not may_view_content(request.user, obj)

    def get_fields(self, request, obj: ManagedFile | None = None):
        fields = list(super().get_fields(request, obj))
        if self._hides_content(request, obj):
            shown = {"content": "content_hidden", "mode": "octal_mode"}
            fields = [shown.get(f, f) for f in fields]
        return fields

    def get_readonly_fields(self, request, obj: ManagedFile | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if not may_view_secrets(request.user, ManagedFile):
            fields.append("secret")
        if self._hides_content(request, obj):
            # "content" leaves the form; the mode and its special bits stay as they are.
            fields += ["content", "content_hidden", "octal_mode", "special_bits"]
        return fields

    def get_search_fields(self, request):
        if may_view_secrets(request.user, ManagedFile):
            return self.search_fields
        return ("path",)

    def has_change_permission(self, request, obj: ManagedFile | None = None) -> bool:
        if self._hides_content(request, obj):
            return False
        return super().has_change_permission(request, obj)

    @admin.display(description="content")
    def content_hidden(self, obj: ManagedFile) -> str:
        return "(secret: shown only to users allowed to view secret files)"

    @admin.display(description="mode", ordering="mode")
    def octal_mode(self, obj: ManagedFile) -> str:
        return f"{obj.mode:04o}"


# What a node receives of a file: all of it (a new mode or owner is a change on the node).
FILE_FIELDS = ("path", "content", "mode", "owner", "group")
FILES = Watch(ManagedFile, fields=FILE_FIELDS)


def _files_for(node_id: int) -> list[dict]:
    """The node's files (path, content, mode, owner, group), one query, no duplicates."""
    # With special_bits, which the run checks again (a row written by update() skips clean()),
    # but is not watched: ticking the box changes nothing on the nodes.
    return FILES.values_for(node_id, *FILE_FIELDS, "special_bits", order_by="path")


def desired_files(node_id: int) -> dict[str, str]:
    """Path -> panel-side sha256 of the node's files (what ``services`` reloads on)."""
    return {f["path"]: sha256_text(f["content"]) for f in _files_for(node_id)}


# What ``node_files`` answers per path: kind, mode, owner, group and sha256 (``users`` too).
NodeFile = FileState


async def node_files(ctx: RunContext, paths: list[str]) -> dict[str, NodeFile]:
    """What the node has at ``paths``; missing paths are left out.

    Read through one descriptor per file (``Transport.stat_files``), never by path twice: a
    link, a FIFO or anything but a regular file is answered ``refused`` with its reason and
    an empty checksum, so it differs from every file and is replaced by the next write.
    """
    found = await ctx.transport.stat_files(paths)
    return {path: state for path, state in found.items() if state.kind != "missing"}


def _check_file(f: dict) -> None:
    check_path(f["path"])
    check_posix_name(f["owner"])
    check_posix_name(f["group"])
    if not 0 <= f["mode"] <= 0o7777:
        raise ValueError(f"invalid mode {f['mode']:o} for {f['path']}")
    bits = special_mode_bits(f["mode"])
    if bits and not f.get("special_bits"):
        raise ValueError(
            f"refusing mode {f['mode']:04o} for {f['path']}: it is {', '.join(bits)} and the "
            "file does not allow special bits"
        )


def _same_content(have: NodeFile | None, sha: str) -> bool:
    return have is not None and have.is_file and have.sha256 == sha


def _same_attrs(have: NodeFile, f: dict) -> bool:
    return have.mode == f["mode"] and (have.owner, have.group) == (f["owner"], f["group"])


def _same(have: NodeFile | None, f: dict, sha: str) -> bool:
    return _same_content(have, sha) and _same_attrs(have, f)


async def remove_stale(ctx: RunContext, stale: list[str]) -> list[str]:
    """Remove the paths the panel no longer wants here; return those removed.

    ``remove_file`` follows no link on the way and trusts only root's folders and those of
    the file's owner (as the write trusted the owner it wrote for): a path whose folder a
    user swapped for a link is refused and said in the log, never followed. Trusting the
    owner found on the node is safe for the same reason: no link is followed, so only that
    user's own folders on the very path are let through.
    """
    valid = []
    for path in stale:
        try:
            valid.append(check_path(path))
        except ValueError as e:
            ctx.log(f"ignoring a bad path in the node's manifest: {e}")
    owners = await _owners(ctx, valid)
    removed = []
    for path in valid:
        try:
            if await ctx.transport.remove_file(path, trusting=owners.get(path)):
                removed.append(path)
        except TransportError as e:
            ctx.log(f"not removed: {e}")
    return removed


async def _owners(ctx: RunContext, paths: list[str]) -> dict[str, str]:
    """The owner of each existing regular file (a user name the panel could have written it
    for); a link or anything else trusts nobody but root."""
    owners = {}
    for path, state in (await ctx.transport.stat_files(paths)).items():
        try:
            owners[path] = check_posix_name(state.owner) if state.is_file else None
        except ValueError:
            continue  # a uid without a name, or odd: trust nobody but root
    return {path: owner for path, owner in owners.items() if owner}


async def _push(ctx: RunContext, files: list[dict], shas: dict[str, str]) -> None:
    """Write the files (mode and owner set on the file's descriptor, setuid bits kept), then
    prove it: checksum, mode and owner as the panel has them."""
    # Folders of a file's owner are trusted on the way to it, nobody else's (see make_dir).
    for parent, owner in sorted({(posixpath.dirname(f["path"]), f["owner"]) for f in files}):
        await ctx.transport.make_dir(parent, trusting=owner)
    for f in files:
        await ctx.transport.put_file(
            f["path"], f["content"].encode(), mode=f["mode"], owner=f["owner"], group=f["group"]
        )
    await _check_written(ctx, files, shas)


async def _set_attrs(ctx: RunContext, files: list[dict], shas: dict[str, str]) -> None:
    """Give files that hold the right bytes their mode and owner, on their descriptor, and
    only while they still hold those bytes (no rewrite: their mtime stays)."""
    for f in files:
        await ctx.transport.set_attrs(
            f["path"], mode=f["mode"], owner=f["owner"], group=f["group"], sha256=shas[f["path"]]
        )
    await _check_written(ctx, files, shas)


async def _check_written(ctx: RunContext, files: list[dict], shas: dict[str, str]) -> None:
    """Read back what was done. The error never shows what the node holds (its checksum
    could be of a file that the admins reading the error may not see)."""
    written = await node_files(ctx, [f["path"] for f in files])
    for f in files:
        have = written.get(f["path"])
        if not _same(have, f, shas[f["path"]]):
            raise TransportError(
                f"the node's copy of {f['path']} differs from what the panel wrote"
            )


@synchronizer(
    name="files",
    title="Files",
    priority=30,
    node_status=NodeStatus.SYNCHRONIZING,
    timeout=300,
    watches=[FILES],
    needs=("software",),
)
async def sync_files(ctx: RunContext) -> None:
    files = await ctx.db(_files_for, ctx.node.pk)
    for f in files:
        _check_file(f)
    manifest = await read_manifest(ctx, MANIFEST)
    if not files and not manifest:
        ctx.log("no files for this node's roles")
        return
    shas = {f["path"]: sha256_text(f["content"]) for f in files}

    removed = await remove_stale(ctx, sorted(set(manifest) - set(shas)))
    for path in removed:
        ctx.log(f"removed {path}")

    have = await node_files(ctx, list(shas))
    changed, attrs_only = [], []
    for f in files:
        path, state = f["path"], have.get(f["path"])
        if not _same_content(state, shas[path]):
            changed.append(f)
            if state is not None and not state.is_file:
                ctx.log(f"replacing {path}: {state.reason}")
        elif not _same_attrs(state, f):
            attrs_only.append(f)
        else:
            ctx.log(f"unchanged {path}")
    if changed or attrs_only:
        if set(shas) - set(manifest):
            # Record new paths before they are first written: a run that fails half-way must
            # not leave a file the panel would never remove.
            await write_manifest(ctx, MANIFEST, {p: manifest.get(p, "") for p in shas})
    if changed:
        await _push(ctx, changed, shas)
        for f in changed:
            why = "new" if f["path"] not in have else "updated"
            ctx.log(f"wrote {f['path']} ({why}, mode {f['mode']:04o}, {f['owner']}:{f['group']})")
    if attrs_only:
        await _set_attrs(ctx, attrs_only, shas)
        for f in attrs_only:
            ctx.log(
                f"set {f['path']} (updated, mode {f['mode']:04o}, {f['owner']}:{f['group']}; "
                "content unchanged)"
            )
    if shas != manifest:
        await write_manifest(ctx, MANIFEST, shas)
    unchanged = len(files) - len(changed) - len(attrs_only)
    attrs_set = f", {len(attrs_only)} with mode or owner set" if attrs_only else ""
    ctx.log(f"{len(changed)} written, {unchanged} unchanged, {len(removed)} removed{attrs_set}")

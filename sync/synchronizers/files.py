"""Files: the configuration files of the node's roles, written atomically and checked.

The node is asked for the checksum, mode and owner of every file in two commands, so an
unchanged file costs nothing and is never rewritten (its mtime stays, nothing that watches it
wakes up). A written file is read back by checksum: a run succeeds only when the node holds
exactly the panel's bytes. The node's ``files.json`` manifest lists the paths this panel
manages there, so a file dropped from the panel (or from the node's roles) is removed.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from nodes.choices import NodeStatus
from nodes.managed import ManagedFile, check_path, check_posix_name, sha256_text
from nodes.transports import TransportError
from sync.context import RunContext
from sync.synchronizers import synchronizer
from sync.synchronizers._manifest import read_manifest, write_manifest

MANIFEST = "files"


def _files_for(node_id: int) -> list[dict]:
    """The node's files (path, content, mode, owner, group), one query, no duplicates.

    ``pk__in`` rather than ``distinct()``: DISTINCT over a text column is slow on MariaDB.
    """
    of_node = ManagedFile.objects.filter(roles__nodes=node_id).values("pk")
    return list(
        ManagedFile.objects.filter(pk__in=of_node)
        .order_by("path")
        .values("path", "content", "mode", "owner", "group")
    )


def desired_files(node_id: int) -> dict[str, str]:
    """Path -> panel-side sha256 of the node's files (what ``services`` reloads on)."""
    return {f["path"]: sha256_text(f["content"]) for f in _files_for(node_id)}


@dataclass(frozen=True)
class NodeFile:
    sha256: str | None
    mode: int
    owner: str
    group: str


async def node_files(ctx: RunContext, paths: list[str]) -> dict[str, NodeFile]:
    """What the node has at ``paths``, in two commands; missing paths are left out.

    NUL-terminated output (``--printf ...\\0``, ``sha256sum -z``) keeps any path intact:
    ``-z`` also turns off sha256sum's escaping of backslashes in names.
    """
    if not paths:
        return {}
    stat_argv = ["stat", "--printf=%a\t%U\t%G\t%n\\0", "--", *paths]
    stats = await ctx.transport.run(stat_argv, check=False)
    sums = await ctx.transport.run(["sha256sum", "-z", "--", *paths], check=False)
    checksums = {}
    for record in sums.stdout.split("\0"):
        if len(record) > 66:
            checksums[record[66:]] = record[:64]
    found: dict[str, NodeFile] = {}
    for record in stats.stdout.split("\0"):
        fields = record.split("\t", 3)
        if len(fields) == 4:
            mode, owner, group, path = fields
            found[path] = NodeFile(checksums.get(path), int(mode, 8), owner, group)
    return found


def _check_file(f: dict) -> None:
    check_path(f["path"])
    check_posix_name(f["owner"])
    check_posix_name(f["group"])
    if not 0 <= f["mode"] <= 0o7777:
        raise ValueError(f"invalid mode {f['mode']:o} for {f['path']}")


def _same(have: NodeFile | None, f: dict, sha: str) -> bool:
    return (
        have is not None
        and have.sha256 == sha
        and have.mode == f["mode"]
        and (have.owner, have.group) == (f["owner"], f["group"])
    )


async def remove_stale(ctx: RunContext, stale: list[str]) -> list[str]:
    """``rm -f`` the paths the panel no longer wants here; return those removed."""
    valid = []
    for path in stale:
        try:
            valid.append(check_path(path))
        except ValueError as e:
            ctx.log(f"ignoring a bad path in the node's manifest: {e}")
    if valid:
        await ctx.transport.run(["rm", "-f", "--", *valid])
    return valid


async def _push(ctx: RunContext, files: list[dict], shas: dict[str, str]) -> None:
    """Write the files, then prove it: checksum, mode and owner as the panel has them."""
    # Folders of a file's owner are trusted on the way to it, nobody else's (see make_dir).
    for parent, owner in sorted({(posixpath.dirname(f["path"]), f["owner"]) for f in files}):
        await ctx.transport.make_dir(parent, trusting=owner)
    for f in files:
        await ctx.transport.put_file(
            f["path"], f["content"].encode(), mode=f["mode"], owner=f["owner"], group=f["group"]
        )
    written = await node_files(ctx, [f["path"] for f in files])
    for f in files:
        have = written.get(f["path"])
        if have is None or have.sha256 != shas[f["path"]]:
            raise TransportError(
                f"checksum mismatch after writing {f['path']}: expected {shas[f['path']]}, "
                f"the node has {have.sha256 if have else 'no file'}"
            )
        if have.mode != f["mode"]:
            # chown after chmod clears setuid/setgid bits: set the mode again, owner is right.
            await ctx.transport.run(["chmod", f"{f['mode']:04o}", "--", f["path"]])


@synchronizer(
    name="files",
    title="Files",
    priority=30,
    node_status=NodeStatus.SYNCHRONIZING,
    timeout=300,
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
    changed = [f for f in files if not _same(have.get(f["path"]), f, shas[f["path"]])]
    changed_paths = {f["path"] for f in changed}
    for path in shas:
        if path not in changed_paths:
            ctx.log(f"unchanged {path}")
    if changed:
        if set(shas) - set(manifest):
            # Record new paths before they are first written: a run that fails half-way must
            # not leave a file the panel would never remove.
            await write_manifest(ctx, MANIFEST, {p: manifest.get(p, "") for p in shas})
        await _push(ctx, changed, shas)
        for f in changed:
            why = "new" if f["path"] not in have else "updated"
            ctx.log(f"wrote {f['path']} ({why}, mode {f['mode']:04o}, {f['owner']}:{f['group']})")
    if shas != manifest:
        await write_manifest(ctx, MANIFEST, shas)
    unchanged = len(files) - len(changed)
    ctx.log(f"{len(changed)} written, {unchanged} unchanged, {len(removed)} removed")

"""Users: the login accounts of the node's roles, with their shell and SSH keys.

Accounts are looked up with ``getent`` (the node's own view, whatever its NSS setup) and
changed only where they differ. The node's ``users.json`` manifest records each account the
panel manages there: its uid, and whether the panel *created* it or *took over* one that was
there before, with the time. Only an account the panel created, and still the same one (same
uid), is ever deleted; an account that was there before is managed only when its user says
``adopt_existing``, and removing it locks it and takes back its keys, but keeps the account
and its home. Entries of older manifests (a bare uid) did not tell the two apart, so they
count as taken over: never deleted.

Removing a user ends its access before ``userdel`` (``_lockout``), which refuses an account
that still has a process. Each user has its own outcome: one that fails is named in the log
and in the run's error at the end, and the others are still brought in line.

System accounts (uid < 1000), the account the panel logs in with and the one it runs as on
its own server are never changed or removed: a typo in the panel must not lock anyone out.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field

from django.contrib import admin
from django.db import models
from django.utils import timezone

from nodes.choices import NodeStatus, Transport
from nodes.transports import CommandFailed, TransportError
from sync.context import RunContext
from sync.synchronizers import synchronizer
from sync.synchronizers._lockout import key_paths, lock_account, unlock_account
from sync.synchronizers._manifest import read_manifest, write_manifest
from sync.synchronizers._roles import RoleData, RoleDataAdmin, count_nodes, its_or_their
from sync.validators import (
    check_posix_name,
    check_shell,
    sha256_text,
    unix_newlines,
    validate_authorized_keys,
    validate_not_system_account,
    validate_posix_name,
    validate_shell,
)
from sync.watching import Watch

MANIFEST = "users"
FIRST_REGULAR_UID = 1000


class UserState(models.TextChoices):
    PRESENT = "present", "Present"
    ABSENT = "absent", "Absent (removed from the nodes)"


class ManagedUser(RoleData):
    """A login account on the nodes of its roles, with its SSH keys."""

    name = models.CharField(
        max_length=32, unique=True, validators=[validate_posix_name, validate_not_system_account]
    )
    shell = models.CharField(max_length=255, default="/bin/bash", validators=[validate_shell])
    authorized_keys = models.TextField(
        blank=True,
        validators=[validate_authorized_keys],
        help_text='One OpenSSH public key per line, options such as from="..." allowed.',
    )
    state = models.CharField(max_length=10, choices=UserState, default=UserState.PRESENT)
    adopt_existing = models.BooleanField(
        "Take over an account that already exists on the node",
        default=False,
        help_text=(
            "Without this, a node where an account of this name exists that the panel did not "
            "create fails this user. A taken-over account is never deleted: removing the user "
            "locks it and takes back its keys."
        ),
    )
    roles = models.ManyToManyField(
        "nodes.Role", blank=True, related_name="users", db_table="managed_user_roles"
    )

    class Meta:
        db_table = "managed_user"
        ordering = ["name"]
        verbose_name = "managed user"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        self.authorized_keys = unix_newlines(self.authorized_keys)

    removal_short = (
        "an account the panel created is deleted with userdel --remove, its home folder too; "
        "one it took over is locked, the account and its home kept"
    )

    @classmethod
    def removal_effect(cls, rows: Sequence[RoleData], nodes: int) -> str:
        """What ``_revoke`` does: it deletes only accounts the panel created, and locks the
        ones it took over; a user already marked absent was removed before."""
        present = [r.name for r in rows if r.state == UserState.PRESENT]
        if not present:
            where = f"the {count_nodes(nodes)} of {its_or_their(rows)} roles"
            return f"Nothing more happens on {where}: already removed there."
        return (
            f"On {count_nodes(nodes)} (the nodes of {its_or_their(rows)} roles), for "
            f"{', '.join(present)}: an account the panel created there is deleted with "
            "userdel --remove, its home folder and everything in it deleted too; an account "
            "that was there before and that the panel took over is locked and its keys "
            "taken back, the account and its home kept."
        )


@admin.register(ManagedUser)
class ManagedUserAdmin(RoleDataAdmin):
    list_display = ("name", "state", "shell", "adopt_existing", "role_names")
    list_filter = ("state", "adopt_existing", "roles")
    search_fields = ("name",)


USER_FIELDS = ("name", "shell", "authorized_keys", "state", "adopt_existing")
USERS = Watch(ManagedUser, fields=USER_FIELDS)


def _users_for(node_id: int) -> list[dict]:
    """The node's users (name, shell, authorized_keys, state), one query, no duplicates."""
    return USERS.values_for(node_id, *USER_FIELDS, order_by="name")


# --- the node's record of the accounts the panel manages there -------------------------------

CREATED = "created"
ADOPTED = "adopted"


class UsersFailed(ValueError):
    """Some users could not be brought in line on the node; the others were."""

    def __init__(self, failed: dict[str, str]) -> None:
        self.failed = failed
        names = ", ".join(failed)
        details = "; ".join(f"{name}: {why}" for name, why in failed.items())
        count = f"{len(failed)} user{'s' if len(failed) != 1 else ''}"
        super().__init__(f"{count} failed on this node ({names}): {details}")


@dataclass
class Record:
    """One account of the manifest: which uid, and whether the panel made it or took it over.

    ``since`` is when (None for entries of older manifests, which kept no time); ``locked`` is
    when the panel locked it on its way out, with what ``unlock`` needs to give back.
    """

    uid: int
    origin: str
    since: str | None
    locked: str | None = None
    password_was_locked: bool = False

    @classmethod
    def load(cls, name: str, value: object) -> Record:
        if isinstance(value, int) and not isinstance(value, bool):
            # A bare uid: written by panels that did not tell created from taken over.
            return cls(value, ADOPTED, None)
        if (
            isinstance(value, dict)
            and type(value.get("uid")) is int
            and value.get("origin") in (CREATED, ADOPTED)
        ):
            return cls(
                value["uid"],
                value["origin"],
                _text_or_none(value.get("since")),
                _text_or_none(value.get("locked")),
                value.get("password_was_locked") is True,
            )
        raise ValueError(f"the node's users manifest has an entry for {name!r} of an unknown form")

    def dump(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _now() -> str:
    return timezone.now().isoformat(timespec="seconds")


@dataclass
class Manifest:
    """The node's ``users.json``, written back whenever it changed (``save``)."""

    records: dict[str, Record]
    written: dict = field(default_factory=dict)

    @classmethod
    async def read(cls, ctx: RunContext) -> Manifest:
        raw = await read_manifest(ctx, MANIFEST)
        return cls({name: Record.load(name, value) for name, value in raw.items()}, raw)

    def created(self, name: str, uid: int) -> None:
        self.records[name] = Record(uid, CREATED, _now())

    def adopted(self, name: str, uid: int) -> Record:
        self.records[name] = Record(uid, ADOPTED, _now())
        return self.records[name]

    async def save(self, ctx: RunContext) -> None:
        data = {name: record.dump() for name, record in sorted(self.records.items())}
        if data != self.written:
            await write_manifest(ctx, MANIFEST, data)
            self.written = data


# --- accounts on the node ----------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


async def get_account(ctx: RunContext, name: str) -> Account | None:
    argv = ["getent", "passwd", name]
    result = await ctx.transport.run(argv, check=False)
    if result.exit_status == 2:  # no such key
        return None
    if result.exit_status != 0:
        raise CommandFailed(argv, result.exit_status, result.stderr)
    fields = result.stdout.splitlines()[0].split(":")
    if len(fields) < 7:
        raise ValueError(f"unexpected getent output for {name}: {result.stdout.strip()!r}")
    return Account(fields[0], int(fields[2]), int(fields[3]), fields[5], fields[6])


def _guard(ctx: RunContext, account: Account, doing: str) -> None:
    """Refuse to touch accounts the panel must not manage (see the module docstring)."""
    if account.uid < FIRST_REGULAR_UID:
        raise ValueError(
            f"refusing to {doing} {account.name}: it is a system account (uid {account.uid}) "
            "on the node; the panel manages regular users only"
        )
    if ctx.node.transport == Transport.SSH and account.name == ctx.node.username:
        raise ValueError(f"refusing to {doing} {account.name}: the panel logs in as this user")
    if ctx.node.transport == Transport.LOCAL and account.uid == os.geteuid():
        raise ValueError(f"refusing to {doing} {account.name}: the panel runs as this user")


def _home_ok(home: str) -> bool:
    return home.startswith("/") and home != "/" and ".." not in home.split("/")


def _not_ours(account: Account, doing: str) -> ValueError:
    adopt = ManagedUser._meta.get_field("adopt_existing").verbose_name
    return ValueError(
        f"an account named {account.name} (uid {account.uid}) exists on the node and the panel "
        f"did not create it: not {doing} (tick \u201c{adopt}\u201d to let the panel take it over)"
    )


async def _lock(ctx: RunContext, account: Account, record: Record) -> None:
    if not _home_ok(account.home):
        raise ValueError(f"unexpected home directory {account.home!r}: not locking {account.name}")
    locked = await lock_account(ctx, account.name, account.uid, account.home)
    if record.locked is None:  # a second lock must not forget how the password was before
        record.password_was_locked = locked.password_was_locked
    record.locked = _now()


async def _revoke(ctx: RunContext, manifest: Manifest, name: str, row: dict | None) -> None:
    """Take ``name`` off the node: it is absent in the panel, or gone from the node's roles."""
    record = manifest.records.get(name)
    account = await get_account(ctx, check_posix_name(name))
    if account is None:
        if record is not None:
            del manifest.records[name]
        ctx.log(f"user {name} {'already gone' if record else 'absent'}")
        return
    _guard(ctx, account, "remove")
    if record is not None and record.uid != account.uid:
        del manifest.records[name]
        ctx.log(f"user {name} is now another account (uid {account.uid}): left alone")
        return
    if record is None:  # absent in the panel, and an account the panel did not make
        if not (row and row["adopt_existing"]):
            raise _not_ours(account, "removed")
        record = manifest.adopted(name, account.uid)
    if record.origin == CREATED:
        await _lock(ctx, account, record)
        await manifest.save(ctx)  # locked, even if userdel fails below
        await ctx.transport.run(["userdel", "--remove", "--", name])
        del manifest.records[name]
        ctx.log(f"removed user {name}")
    elif record.locked:
        ctx.log(f"{name}: kept locked (taken over, not created by the panel)")
    else:
        await _lock(ctx, account, record)
        ctx.log(f"{name}: locked and its keys taken back; the account and its home are kept")


async def _ensure_present(ctx: RunContext, manifest: Manifest, user: dict) -> None:
    name, shell = user["name"], user["shell"]
    account = await get_account(ctx, name)
    if account is None:
        await ctx.transport.run(["useradd", "--create-home", "--shell", shell, "--", name])
        account = await get_account(ctx, name)
        if account is None:
            raise ValueError(f"useradd succeeded but the node does not know {name}")
        manifest.created(name, account.uid)
        # Recorded at once: a run failing later must not leave an account the panel forgets.
        await manifest.save(ctx)
        ctx.log(f"created user {name} (uid {account.uid}, shell {shell})")
    else:
        _guard(ctx, account, "manage")
        record = manifest.records.get(name)
        if record is None or record.uid != account.uid:
            if not user["adopt_existing"]:
                raise _not_ours(account, "managed")
            manifest.adopted(name, account.uid)
            await manifest.save(ctx)
            ctx.log(f"{name}: took over the existing account (uid {account.uid})")
        elif record.locked:
            await unlock_account(ctx, name, record.password_was_locked)
            record.locked, record.password_was_locked = None, False
            await manifest.save(ctx)
        if account.shell != shell:
            await ctx.transport.run(["usermod", "--shell", shell, "--", name])
            ctx.log(f"{name}: shell {account.shell} -> {shell}")
    if not _home_ok(account.home):
        raise ValueError(f"unexpected home directory {account.home!r}: not writing authorized_keys")
    if await _write_keys(ctx, account, user["authorized_keys"]):
        ctx.log(f"{name}: authorized_keys written ({_count_keys(user['authorized_keys'])})")
    else:
        ctx.log(f"{name}: unchanged")


async def _write_keys(ctx: RunContext, account: Account, keys: str) -> bool:
    """Install ``~/.ssh/authorized_keys`` (0600, the user's); False when already right.

    Whatever is there is never opened as a file to read unless it is a regular file: a FIFO
    would stall the run (and every other user's change behind it) until its timeout.

    ``authorized_keys2``, which Debian's sshd also reads, is removed: the panel's keys are
    the only ones, and one file is the one place they are.
    """
    if keys and not keys.endswith("\n"):
        keys += "\n"
    ssh_dir = posixpath.join(account.home, ".ssh")
    path, path2 = key_paths(account.home)
    group = (await ctx.transport.run(["id", "-gn", "--", account.name])).stdout.strip()
    if await ctx.transport.remove_file(path2, trusting=account.name):
        ctx.log(f"{account.name}: authorized_keys2 removed (the panel's keys: authorized_keys)")
    # Read through one descriptor that follows no link and never blocks: a FIFO, socket or
    # link there is refused unread, then replaced by the rename of put_file.
    have = await ctx.transport.stat_file(path)
    if have.is_file and (have.sha256, have.mode, have.owner, have.group) == (
        sha256_text(keys),
        0o600,
        account.name,
        group,
    ):
        return False
    if not have.is_file and have.kind != "missing":
        ctx.log(f"{account.name}: authorized_keys replaced, unread ({have.reason})")
    # The home belongs to the user, who can swap ~/.ssh or the temporary file for a link at
    # any moment: make_dir and put_file never follow one (a test-then-act could be raced).
    await ctx.transport.make_dir(ssh_dir, mode=0o700, owner=account.name, group=group)
    await ctx.transport.put_file(path, keys.encode(), mode=0o600, owner=account.name, group=group)
    return True


def _count_keys(keys: str) -> str:
    n = sum(1 for line in keys.splitlines() if line.strip() and not line.startswith("#"))
    return f"{n} key{'s' if n != 1 else ''}"


async def _each(ctx: RunContext, failed: dict[str, str], name: str, step: Awaitable[None]) -> None:
    """Run one user's step: its failure is that user's outcome, never the others'."""
    try:
        await step
    except (TransportError, ValueError) as e:
        failed[name] = str(e)
        ctx.log(f"{name}: FAILED: {e}")


@synchronizer(
    name="users",
    title="Users",
    priority=40,
    node_status=NodeStatus.READY,
    timeout=300,
    watches=[USERS],
    needs=("nodeinfo",),
)
async def sync_users(ctx: RunContext) -> None:
    users = await ctx.db(_users_for, ctx.node.pk)
    for user in users:
        check_posix_name(user["name"])
        check_shell(user["shell"])
    manifest = await Manifest.read(ctx)
    if not users and not manifest.records:
        ctx.log("no users for this node's roles")
        return
    wanted = {u["name"]: u for u in users}
    present = [u for u in users if u["state"] == UserState.PRESENT]
    leaving = sorted(
        {name for name in manifest.records if name not in wanted}
        | {u["name"] for u in users if u["state"] != UserState.PRESENT}
    )
    failed: dict[str, str] = {}
    for name in leaving:
        await _each(ctx, failed, name, _revoke(ctx, manifest, name, wanted.get(name)))
        await manifest.save(ctx)
    for user in present:
        await _each(ctx, failed, user["name"], _ensure_present(ctx, manifest, user))
        await manifest.save(ctx)
    if failed:
        raise UsersFailed(failed)

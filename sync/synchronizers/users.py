"""Users: the login accounts of the node's roles, with their shell and SSH keys.

Accounts are looked up with ``getent`` (the node's own view, whatever its NSS setup) and
changed only where they differ. The node's ``users.json`` manifest remembers the accounts this
panel created there with their uid, so an account deleted from the panel is removed, and only
if it is still the one the panel created. System accounts (uid < 1000) and the account the
panel logs in with are never changed or removed: a typo in the panel must not lock anyone out.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from django.contrib import admin
from django.db import models

from nodes.choices import NodeStatus, Transport
from nodes.transports import CommandFailed
from sync.context import RunContext
from sync.synchronizers import synchronizer
from sync.synchronizers._manifest import read_manifest, write_manifest
from sync.synchronizers._roles import RoleData, RoleDataAdmin
from sync.synchronizers.files import node_files
from sync.validators import (
    check_posix_name,
    check_shell,
    sha256_text,
    unix_newlines,
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

    name = models.CharField(max_length=32, unique=True, validators=[validate_posix_name])
    shell = models.CharField(max_length=255, default="/bin/bash", validators=[validate_shell])
    authorized_keys = models.TextField(blank=True, help_text="One public key per line.")
    state = models.CharField(max_length=10, choices=UserState, default=UserState.PRESENT)
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


@admin.register(ManagedUser)
class ManagedUserAdmin(RoleDataAdmin):
    list_display = ("name", "state", "shell", "role_names")
    list_filter = ("state", "roles")
    search_fields = ("name",)


USER_FIELDS = ("name", "shell", "authorized_keys", "state")
USERS = Watch(ManagedUser, fields=USER_FIELDS)


def _users_for(node_id: int) -> list[dict]:
    """The node's users (name, shell, authorized_keys, state), one query, no duplicates."""
    return list(USERS.rows_for(node_id).order_by("name").values(*USER_FIELDS))


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


async def _remove(ctx: RunContext, account: Account) -> None:
    _guard(ctx, account, "remove")
    await ctx.transport.run(["userdel", "--remove", "--", account.name])
    ctx.log(f"removed user {account.name}")


async def _write_keys(ctx: RunContext, account: Account, keys: str) -> bool:
    """Install ``~/.ssh/authorized_keys`` (0600, the user's); False when already right."""
    if keys and not keys.endswith("\n"):
        keys += "\n"
    ssh_dir = posixpath.join(account.home, ".ssh")
    path = posixpath.join(ssh_dir, "authorized_keys")
    group = (await ctx.transport.run(["id", "-gn", "--", account.name])).stdout.strip()
    have = (await node_files(ctx, [path])).get(path)
    if have and (have.sha256, have.mode, have.owner, have.group) == (
        sha256_text(keys),
        0o600,
        account.name,
        group,
    ):
        return False
    # The home belongs to the user, who can swap ~/.ssh or the temporary file for a link at
    # any moment: make_dir and put_file never follow one (a test-then-act could be raced).
    await ctx.transport.make_dir(ssh_dir, mode=0o700, owner=account.name, group=group)
    await ctx.transport.put_file(path, keys.encode(), mode=0o600, owner=account.name, group=group)
    return True


async def _ensure_present(ctx: RunContext, user: dict, managed: dict[str, int]) -> None:
    name, shell = user["name"], user["shell"]
    account = await get_account(ctx, name)
    if account is None:
        await ctx.transport.run(["useradd", "--create-home", "--shell", shell, "--", name])
        account = await get_account(ctx, name)
        if account is None:
            raise ValueError(f"useradd succeeded but the node does not know {name}")
        managed[name] = account.uid
        # Recorded at once: a run failing later must not leave an account the panel forgets.
        await write_manifest(ctx, MANIFEST, managed)
        ctx.log(f"created user {name} (uid {account.uid}, shell {shell})")
    else:
        _guard(ctx, account, "manage")
        managed[name] = account.uid
        if account.shell != shell:
            await ctx.transport.run(["usermod", "--shell", shell, "--", name])
            ctx.log(f"{name}: shell {account.shell} -> {shell}")
    _check_home(account.home)
    if await _write_keys(ctx, account, user["authorized_keys"]):
        ctx.log(f"{name}: authorized_keys written ({_count_keys(user['authorized_keys'])})")
    else:
        ctx.log(f"{name}: unchanged")


def _check_home(home: str) -> None:
    if not home.startswith("/") or home == "/" or ".." in home.split("/"):
        raise ValueError(f"unexpected home directory {home!r}: not writing authorized_keys")


def _count_keys(keys: str) -> str:
    n = sum(1 for line in keys.splitlines() if line.strip() and not line.startswith("#"))
    return f"{n} key{'s' if n != 1 else ''}"


@synchronizer(
    name="users",
    title="Users",
    priority=40,
    node_status=NodeStatus.READY,
    timeout=300,
    watches=[USERS],
)
async def sync_users(ctx: RunContext) -> None:
    users = await ctx.db(_users_for, ctx.node.pk)
    for user in users:
        check_posix_name(user["name"])
        check_shell(user["shell"])
    manifest = await read_manifest(ctx, MANIFEST)
    if not users and not manifest:
        ctx.log("no users for this node's roles")
        return
    present = [u for u in users if u["state"] == UserState.PRESENT]
    absent = [u["name"] for u in users if u["state"] != UserState.PRESENT]
    managed = {n: uid for n, uid in manifest.items() if n in {u["name"] for u in present}}

    # Accounts this panel created and no longer wants here: only if still the same account.
    for name, uid in sorted(manifest.items()):
        if name in managed or name in absent:
            continue
        account = await get_account(ctx, check_posix_name(name))
        if account is None:
            ctx.log(f"user {name} already gone")
        elif account.uid != uid:
            ctx.log(f"user {name} is now another account (uid {account.uid}): left alone")
        else:
            await _remove(ctx, account)
    for name in absent:
        account = await get_account(ctx, name)
        if account is None:
            ctx.log(f"user {name} absent")
        else:
            await _remove(ctx, account)
    for user in present:
        await _ensure_present(ctx, user, managed)
    if managed != manifest:
        await write_manifest(ctx, MANIFEST, managed)

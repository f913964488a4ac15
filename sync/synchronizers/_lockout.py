"""Ending an account's access to a node: what the users type does before it removes a user.

``userdel`` refuses an account that still has a process (exit 8), and a refused ``userdel``
used to leave the account, its password and its ``authorized_keys`` in place: a revoked user
kept access for as long as one of their processes lived. So access is ended first, in the
order that leaves the user no way back in:

1. the password is locked and the account expired (``usermod -L -e 1``): no new login, by
   password or by key (sshd and PAM refuse an expired account);
2. cron and at jobs are removed, so nothing starts again on the user's behalf;
3. where systemd-logind runs, lingering is turned off and the user's sessions terminated;
4. every remaining process of the uid is killed, until none is left;
5. ``~/.ssh/authorized_keys`` and ``authorized_keys2`` are removed through the transport's
   descriptor-based file work (no link followed): last, when no process of the user is left
   to write them again.

Every step works by uid or by name on the node's own view of the account, and the account the
panel logs in with is refused before this is reached (``users._guard``).

This module declares no synchronizer type; the loader imports it like any other module here.
"""

from __future__ import annotations

import asyncio
import posixpath
from dataclasses import dataclass

from nodes.transports import CommandFailed
from sync.context import RunContext

# ``authorized_keys2`` is read by Debian's sshd by default (its AuthorizedKeysFile lists both).
KEY_FILES = ("authorized_keys", "authorized_keys2")

# ``passwd --status``'s word for a locked password: Debian's shadow-utils, and Red Hat's passwd.
PASSWORD_LOCKED = ("L", "LK")

# How long remaining processes may take to die (a zombie waits for its parent to reap it).
KILL_ROUNDS = 50
KILL_PAUSE = 0.1


@dataclass(frozen=True)
class LockedAccount:
    """What the lock changed that an unlock may give back."""

    password_was_locked: bool


def key_paths(home: str) -> list[str]:
    """The files under ``home`` from which sshd takes a user's keys."""
    return [posixpath.join(home, ".ssh", name) for name in KEY_FILES]


async def lock_account(ctx: RunContext, name: str, uid: int, home: str) -> LockedAccount:
    """End every way ``name`` (uid ``uid``) has into the node; see the module docstring."""
    status = await ctx.transport.run(["passwd", "--status", "--", name])
    fields = status.stdout.split()
    was_locked = len(fields) > 1 and fields[1] in PASSWORD_LOCKED
    await ctx.transport.run(["usermod", "--lock", "--expiredate", "1", "--", name])
    done = ["password locked", "account expired"]
    done += await _remove_jobs(ctx, name)
    done += await _end_logind_sessions(ctx, name)
    if await kill_processes(ctx, uid):
        done.append("processes killed")
    removed = [
        posixpath.basename(path)
        for path in key_paths(home)
        if await ctx.transport.remove_file(path, trusting=name)
    ]
    if removed:
        done.append(f"{' and '.join(removed)} removed")
    ctx.log(f"{name}: access ended ({', '.join(done)})")
    return LockedAccount(password_was_locked=was_locked)


async def unlock_account(ctx: RunContext, name: str, password_was_locked: bool) -> None:
    """Give back what ``lock_account`` changed on an account that is wanted again.

    The expiry date is cleared (the panel manages none) and the password unlocked only if it
    was not locked before the panel locked it. Jobs, lingering and keys are not given back:
    the keys are written again by the users type, the rest is the user's to set up again.
    """
    argv = ["usermod", "--expiredate", ""]
    if not password_was_locked:
        argv.append("--unlock")
    await ctx.transport.run([*argv, "--", name])
    ctx.log(f"{name}: unlocked (it had been locked by the panel)")


async def _remove_jobs(ctx: RunContext, name: str) -> list[str]:
    """Remove the user's crontab and at jobs; a node without cron or at has none."""
    done = []
    if await _installed(ctx, "crontab"):
        cron = await ctx.transport.run(["crontab", "-r", "-u", name], check=False)
        if cron.exit_status == 0:
            done.append("crontab removed")
        elif "no crontab" not in cron.stderr:
            raise CommandFailed(["crontab", "-r", "-u", name], cron.exit_status, cron.stderr)
    if not await _installed(ctx, "atq"):
        return done
    queue = await ctx.transport.run(["atq"])
    # As root, atq lists every user's jobs: "ID<TAB>DATE QUEUE USER".
    jobs = [
        line.split("\t", 1)[0]
        for line in queue.stdout.splitlines()
        if line.split() and line.split()[-1] == name
    ]
    if jobs:
        await ctx.transport.run(["atrm", "--", *jobs])
        done.append(f"{len(jobs)} at job{'s' if len(jobs) != 1 else ''} removed")
    return done


async def _installed(ctx: RunContext, tool: str) -> bool:
    """Whether the node has ``tool`` (transports differ in how a missing command fails)."""
    argv = ["sh", "-c", 'command -v "$1" >/dev/null', "sh", tool]
    return (await ctx.transport.run(argv, check=False)).exit_status == 0


async def _end_logind_sessions(ctx: RunContext, name: str) -> list[str]:
    """Where systemd is the init (sd_booted's test), stop lingering and end the sessions.

    Without systemd there is no logind: the processes are ended by uid just after anyway.
    ``terminate-user`` fails for a user without a session, which is not an error here.
    """
    booted = await ctx.transport.run(["test", "-d", "/run/systemd/system"], check=False)
    if booted.exit_status != 0:
        return []
    await ctx.transport.run(["loginctl", "disable-linger", "--", name], check=False)
    ended = await ctx.transport.run(["loginctl", "terminate-user", "--", name], check=False)
    return ["lingering off"] + (["sessions terminated"] if ended.exit_status == 0 else [])


async def kill_processes(ctx: RunContext, uid: int) -> bool:
    """SIGKILL every process whose real or effective uid is ``uid`` until none is left;
    whether there was any. Fails when processes are still there after ``KILL_ROUNDS``."""
    killed = False
    for _ in range(KILL_ROUNDS):
        found = False
        for option in ("-U", "-u"):  # real uid, effective uid (pkill ANDs its criteria)
            argv = ["pkill", "-KILL", option, str(uid)]
            result = await ctx.transport.run(argv, check=False)
            if result.exit_status not in (0, 1):  # 1: no process matched
                raise CommandFailed(argv, result.exit_status, result.stderr)
            found = found or result.exit_status == 0
        if not found:
            return killed
        killed = True
        await asyncio.sleep(KILL_PAUSE)  # the killed ones wait to be reaped by their parents
    raise ValueError(
        f"processes of uid {uid} are still there after {KILL_ROUNDS} rounds of SIGKILL"
    )

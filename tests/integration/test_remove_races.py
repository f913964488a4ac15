"""A user racing root's removes in their home must not make root remove anything of root's.

The files type removes a managed file that left the panel. A real unprivileged process of the
user swaps the file's folder (``~/managed``) for a link to a root-owned folder holding a file
of the same name, and back, and puts a link to that root file in place of the managed file,
as fast as it can, while the panel removes the file again and again: locally, over SSH with
the runner, and over plain SSH (a node without python3). Root's folder and file must come out
untouched, and every remove must succeed, find nothing, or be refused saying why.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from nodes.transports import open_transport
from tests.integration import races
from tests.integration.conftest import without_runner
from tests.integration.races import Attacker, snapshot

pytestmark = pytest.mark.django_db
victim, decoy = races.victim, races.decoy  # fixtures

NAME = "secret"  # the managed file's name: the same as the decoy's, in the decoy's folder

# The unprivileged attacker: standard library only, run by the system python as the user.
ATTACKER = r"""
import json, os, shutil, signal, sys
home, decoy_dir, decoy_file = sys.argv[1:4]
folder, aside = os.path.join(home, "managed"), os.path.join(home, "managed-aside")
counts = {"dir_swaps": 0, "files_made": 0}
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))

def refill(as_link):
    path = os.path.join(folder, "secret")
    try:
        if as_link:  # removing it must remove the link, not root's file
            os.symlink(decoy_file, path)
        else:
            with open(path, "x") as f:
                f.write("the user's own\n")
        counts["files_made"] += 1
    except OSError:
        pass

def restore():
    if os.path.islink(folder):
        os.unlink(folder)
    if os.path.lexists(aside):
        try:
            os.rename(aside, folder)
        except OSError:
            shutil.rmtree(aside, ignore_errors=True)

print("ready", flush=True)
while not stop:
    try:
        os.mkdir(folder, 0o755)
    except OSError:
        pass
    for i in range(10):  # the real folder, with something to remove, most of the time
        refill(as_link=i % 2 == 1)
    try:
        os.rename(folder, aside)
        os.symlink(decoy_dir, folder)
        counts["dir_swaps"] += 1
    except OSError:
        pass
    try:
        restore()
    except OSError:
        pass
restore()
print(json.dumps(counts), flush=True)
"""


async def _remove_many(node, path: str, user: str, count: int) -> tuple[Counter, list[str]]:
    """Remove ``path`` ``count`` times, trusting ``user``'s folders; (outcomes, failures)."""
    transport = await open_transport(node)
    try:
        outcomes, failures = Counter(), []
        for _ in range(count):
            try:
                removed = await transport.remove_file(path, trusting=user)
                outcomes["removed" if removed else "nothing there"] += 1
            except Exception as e:  # every failure is checked by the test
                failures.append(str(e))
        return outcomes, failures
    finally:
        await transport.close()


# What a remove racing the attacker may fail with: a refusal, or the folder gone mid-check.
ALLOWED_FAILURE = re.compile(
    r"refusing to remove \S+: ("
    r"\S+ is a symbolic link"
    r"|the node has no python3: cannot safely write into a folder owned by pr\w+ \(.*\)"
    r")$"
    r"|cannot remove \S+: cannot stat \S+$"
)


@pytest.fixture(params=["local", "ssh-runner", "ssh-plain"])
def target(request, make_node, make_ssh_node, monkeypatch):
    """(mode, node, how many removes): each way the panel removes on a node (this machine)."""
    if request.param == "local":
        return request.param, make_node("race-local"), 300
    node, _ = make_ssh_node("race-ssh")
    if request.param == "ssh-plain":
        without_runner(monkeypatch)
        return request.param, node, 6  # a new SSH session per command; every one refused
    return request.param, node, 300


def test_it_never_removes_through_a_users_links(target, victim, decoy):
    mode, node, count = target
    folder, secret = decoy
    assert secret.name == NAME
    before = snapshot(folder, secret)
    path = f"{victim.pw_dir}/managed/{NAME}"

    attacker = Attacker(ATTACKER, victim, folder, secret)
    try:
        outcomes, failures = asyncio.run(_remove_many(node, path, victim.pw_name, count))
    finally:
        counts = attacker.stop()
    reasons = Counter(re.sub(r"/\S+", "PATH", f) for f in failures)
    print(f"{mode}: {dict(outcomes)}, {len(failures)} refused, attacker {counts}, {reasons}")

    after = snapshot(folder, secret)
    assert after == before, f"root's folder or file was changed: {before} -> {after}"
    unexpected = [f for f in failures if not ALLOWED_FAILURE.match(f)]
    assert not unexpected, unexpected[:5]
    assert sum(outcomes.values()) + len(failures) == count
    assert counts["dir_swaps"] > 10, counts  # the race really ran
    if mode == "ssh-plain":
        assert not outcomes["removed"]

    # Unraced, the remove does exactly what it should (or, without python3, is refused).
    managed = Path(victim.pw_dir) / "managed"
    assert managed.is_dir() and not managed.is_symlink()
    if os.path.lexists(managed / NAME):  # maybe the attacker's link to root's file: not through it
        (managed / NAME).unlink()
    (managed / NAME).write_text("the user's own\n")
    os.chown(managed / NAME, victim.pw_uid, victim.pw_gid)
    outcomes, failures = asyncio.run(_remove_many(node, path, victim.pw_name, 1))
    if mode == "ssh-plain":
        assert failures and "the node has no python3" in failures[0]
        return
    assert (outcomes, failures) == (Counter(removed=1), [])
    assert not os.path.lexists(managed / NAME)
    assert snapshot(folder, secret) == before

"""A managed user racing root's writes into their home must not get anything of root's.

The users type writes ``~/.ssh/authorized_keys`` as root into a folder the user owns. A real
unprivileged process of that user swaps ``~/.ssh`` for a link to a root-owned folder and back,
and swaps the panel's temporary files ``.panel-*`` for links to a root-owned file, as fast as
it can, while the panel writes the keys again and again: locally, over SSH with the runner,
and over plain SSH (a node without python3). Root's folder and file must come out untouched,
and every write must either succeed or be refused, saying why.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import pytest

from nodes.transports import open_transport
from sync.context import RunContext
from sync.synchronizers.users import _write_keys, get_account
from tests.integration import races
from tests.integration.conftest import without_runner
from tests.integration.races import Attacker, snapshot

pytestmark = pytest.mark.django_db
victim, decoy = races.victim, races.decoy  # fixtures

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPanelRaceTestKey"

# The unprivileged attacker: standard library only, run by the system python as the user.
ATTACKER = r"""
import json, os, shutil, signal, sys
home, decoy_dir, decoy_file = sys.argv[1:4]
ssh, aside = os.path.join(home, ".ssh"), os.path.join(home, ".ssh-aside")
counts = {"dir_swaps": 0, "temp_swaps": 0}
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))

def swap_temps(folder):
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        if name.startswith(".panel-") and not os.path.islink(path):
            link = os.path.join(folder, ".x" + name)
            try:
                os.symlink(decoy_file, link)
                os.rename(link, path)
                counts["temp_swaps"] += 1
            except OSError:
                pass

def restore():
    if os.path.islink(ssh):
        os.unlink(ssh)
    if os.path.lexists(aside):
        try:
            os.rename(aside, ssh)
        except OSError:
            shutil.rmtree(aside, ignore_errors=True)

print("ready", flush=True)
while not stop:
    try:
        os.mkdir(ssh, 0o700)  # the user's own, where the panel refused to make one
    except OSError:
        pass
    for _ in range(10):
        swap_temps(ssh)
    try:
        os.rename(ssh, aside)
        os.symlink(decoy_dir, ssh)
        counts["dir_swaps"] += 1
    except OSError:
        pass
    for _ in range(10):
        swap_temps(aside)
    try:
        restore()
    except OSError:
        pass
restore()
print(json.dumps(counts), flush=True)
"""


async def _write_many(node, name: str, count: int) -> tuple[int, list[str]]:
    """Write the user's keys ``count`` times, new keys each time; (written, failures)."""
    transport = await open_transport(node)
    try:
        ctx = RunContext(node, transport)
        account = await get_account(ctx, name)
        written, failures = 0, []
        for i in range(count):
            try:
                await _write_keys(ctx, account, f"{KEY} write-{i}\n")
                written += 1
            except Exception as e:  # every failure is checked by the test
                failures.append(str(e))
        return written, failures
    finally:
        await transport.close()


# What a write racing the attacker may fail with: a refusal, or ~/.ssh gone mid-swap (the
# keys' write, or the removal of authorized_keys2 that comes with it).
ALLOWED_FAILURE = re.compile(
    r"refusing to (write|make the folder|remove) \S+: ("
    r".* is a symbolic link"
    r"|the file was replaced while written"
    r"|the node has no python3: cannot safely write into a folder owned by pr\w+ \(.*\)"
    r")$"
    r"|cannot (write|make the folder|remove) \S+: (.*No such file or directory|cannot stat \S+)$"
)


@pytest.fixture(params=["local", "ssh-runner", "ssh-plain"])
def target(request, make_node, make_ssh_node, monkeypatch):
    """(mode, node, how many writes): each way the panel writes to a node (this machine)."""
    if request.param == "local":
        return request.param, make_node("race-local"), 200
    node, _ = make_ssh_node("race-ssh")
    if request.param == "ssh-plain":
        without_runner(monkeypatch)
        # Each command is a new SSH session (slow), and every write here is refused anyway.
        return request.param, node, 6
    return request.param, node, 200


def test_it_never_writes_through_a_users_links(target, victim, decoy):
    mode, node, count = target
    folder, secret = decoy
    before = snapshot(folder, secret)

    attacker = Attacker(ATTACKER, victim, folder, secret)
    try:
        written, failures = asyncio.run(_write_many(node, victim.pw_name, count))
    finally:
        counts = attacker.stop()
    reasons = Counter(re.sub(r"/\S+", "PATH", f) for f in failures)
    print(f"{mode}: {written} written, {len(failures)} refused, attacker {counts}, {reasons}")

    after = snapshot(folder, secret)
    assert after == before, f"root's folder or file was changed: {before} -> {after}"
    unexpected = [f for f in failures if not ALLOWED_FAILURE.match(f)]
    assert not unexpected, unexpected[:5]
    assert written + len(failures) == count
    assert counts["dir_swaps"] > 10, counts  # the race really ran
    home = Path(victim.pw_dir)
    root_owned = [p for p in home.rglob("*") if p.lstat().st_uid == 0]
    assert not root_owned, root_owned  # no root file left for the user to play with

    # Unraced, the write does exactly what it should (or, without python3, is refused).
    written, failures = asyncio.run(_write_many(node, victim.pw_name, 1))
    keys = home / ".ssh" / "authorized_keys"
    if mode == "ssh-plain":
        assert failures and "the node has no python3" in failures[0]
        return
    assert written == 1, failures
    assert keys.read_text() == f"{KEY} write-0\n"
    st, ssh_dir = keys.lstat(), keys.parent.lstat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (victim.pw_uid, victim.pw_gid, 0o600)
    assert (ssh_dir.st_uid, ssh_dir.st_mode & 0o7777) == (victim.pw_uid, 0o700)

"""A managed file's owner racing root's read-then-set of its mode must not reach root's files.

The files type reads a managed file's state (checksum, mode, owner) and, when only its mode or
owner differs, sets them. The file's owner here is a real unprivileged user whose folder holds
it; their process swaps, in a tight loop, what the managed path names:

- ``link``: the file itself, between a regular copy of the managed content and a symbolic
  link to a root-only decoy (what /etc/shadow is);
- ``folder``: the file's folder, exchanged atomically (``renameat2(RENAME_EXCHANGE)``) with a
  link to the decoy's folder, which holds a root file of the same name.

The panel side does what the files type does, 1,000 times over one session (the runner over
a real sshd, and the local transport): ``stat_file``, then ``set_attrs`` with the checksum it
read. An attempt where the read found the managed file and the act found the attacker's swap
is one where the swap landed between the read and the act: the test requires some (else it
proves nothing), and the decoy must keep its mode, owner and content.

Run with PANEL_RACE_OLD_WAY=1, the ``old-way`` case plays the argv sequence of the panel
before ``stat_file`` (``stat`` and ``sha256sum``, then ``chmod`` by path) under the same attack
and requires the decoy to have been changed: a one-off check that the attack is real.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import re
import stat
import time
from collections import Counter
from pathlib import Path

import pytest

from nodes.transports import TransportError
from tests.integration import races
from tests.integration.conftest import with_transport
from tests.integration.races import Attacker

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(os.geteuid() != 0, reason="plays a real unprivileged user: needs root"),
]
victim = races.victim  # fixture

ATTEMPTS = 1000
# ...and for at least this long: the local transport makes its attempts in well under a second,
# and on a busy machine the attacker would get too few turns meanwhile to prove anything.
MIN_SECONDS = 3.0
CONTENT = b"listen 80\n"
SHA = hashlib.sha256(CONTENT).hexdigest()
NAME = "app.conf"  # the managed file's name: the decoy's too, in the decoy's folder
DECOY = b"root:$6$not-for-users:19000:0:99999:7:::\n"

# The unprivileged attacker: standard library only, run by the system python as the user.
ATTACKER = r"""
import ctypes, json, os, signal, sys
home, decoy_dir, decoy_file = sys.argv[1:4]
variant, name, content = VARIANT, NAME, CONTENT
folder, other = os.path.join(home, "managed"), os.path.join(home, "other")
path = os.path.join(folder, name)
counts = {"swaps": 0}
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2

def exchange(a, b):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")

def regular_copy(at):
    fd = os.open(at, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, content)
    os.fchmod(fd, 0o600)
    return fd

os.mkdir(folder, 0o755)
real = regular_copy(path)
if variant == "folder":
    os.symlink(decoy_dir, other)
print("ready", flush=True)
while not stop:
    try:
        if variant == "link":  # a link to root's file in place of the managed file, and back
            os.close(regular_copy(path + ".copy"))
            os.rename(path + ".copy", path)
            os.symlink(decoy_file, path + ".link")
            os.rename(path + ".link", path)
        else:  # the folder and a link to root's folder exchange names, atomically
            os.fchmod(real, 0o600)
            exchange(folder, other)
        counts["swaps"] += 1
    except OSError:
        pass
print(json.dumps(counts), flush=True)
"""


def _attacker_script(variant: str) -> str:
    values = f"{variant!r}, {NAME!r}, {CONTENT!r}"
    return ATTACKER.replace("VARIANT, NAME, CONTENT", values)


@pytest.fixture
def root_only_decoy(tmp_path) -> tuple[Path, Path]:
    """A root folder holding a root-only file (0600) of the managed file's name."""
    folder = tmp_path / "decoy"
    folder.mkdir(mode=0o755)
    secret = folder / NAME
    secret.write_bytes(DECOY)
    secret.chmod(0o600)
    return folder, secret


def _decoy_state(secret: Path) -> tuple:
    st = secret.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), secret.read_bytes()


async def _read_then_set(transport, path: str, owner: str, group: str) -> Counter:
    """What the files type does to a file with the right bytes and another mode, ATTEMPTS
    times and for MIN_SECONDS at least (up to five times that many while no swap has landed
    between the two, so a machine busy elsewhere does not make the test prove nothing): read
    its state, then set its mode and owner with the checksum read."""
    seen: Counter = Counter()
    until = time.monotonic() + MIN_SECONDS
    while (
        seen["attempts"] < ATTEMPTS
        or time.monotonic() < until
        or (not seen["landed between"] and seen["attempts"] < 5 * ATTEMPTS)
    ):
        seen["attempts"] += 1
        state = await transport.stat_file(path)
        if not (state.is_file and state.sha256 == SHA):
            seen["swapped before the read"] += 1
            continue
        try:
            await transport.set_attrs(path, mode=0o644, owner=owner, group=group, sha256=SHA)
            seen["set"] += 1
        except TransportError as e:
            seen["landed between"] += 1
            seen["refused: " + re.sub(r"/[^\s:]+", "PATH", str(e))] += 1
    return seen


async def _old_way(transport, path: str, secret: Path) -> Counter:
    """The panel before ``stat_file``: stat and sha256sum by path, then chmod by path."""
    seen: Counter = Counter()
    for _ in range(ATTEMPTS):
        sums = await transport.run(["sha256sum", "-z", "--", path], check=False)
        await transport.run(["stat", "--printf=%a\t%U\t%G\t%n\\0", "--", path], check=False)
        if not sums.stdout.startswith(SHA):
            seen["swapped before the read"] += 1
            continue
        await transport.run(["chmod", "0644", "--", path], check=False)
        seen["chmod"] += 1
        if stat.S_IMODE(secret.stat().st_mode) != 0o600:
            seen["decoy changed"] += 1
            secret.chmod(0o600)
    return seen


@pytest.fixture(params=["ssh", "local", "old-way"])
def way(request, make_node, make_ssh_node):
    """(name, node): the runner over a real sshd, the local transport, and the old argv."""
    if request.param == "old-way" and os.environ.get("PANEL_RACE_OLD_WAY") != "1":
        pytest.skip("a one-off check of the attack against the old argv: PANEL_RACE_OLD_WAY=1")
    if request.param == "local":
        return request.param, make_node("attrs-race-local")
    node, _ = make_ssh_node("attrs-race-ssh")
    return request.param, node


@pytest.mark.parametrize("variant", ["link", "folder"])
def test_a_swap_between_read_and_set_never_reaches_roots_file(
    way, variant, victim, root_only_decoy
):
    mode, node = way
    folder, secret = root_only_decoy
    before = _decoy_state(secret)
    path = os.path.join(victim.pw_dir, "managed", NAME)
    owner, group = victim.pw_name, _group_name(victim)

    attacker = Attacker(_attacker_script(variant), victim, folder, secret)
    started = time.monotonic()
    try:
        if mode == "old-way":
            seen = asyncio.run(with_transport(node, lambda t: _old_way(t, path, secret)))
        else:
            seen = asyncio.run(
                with_transport(node, lambda t: _read_then_set(t, path, owner, group))
            )
    finally:
        counts = attacker.stop()
        after = _decoy_state(secret)
        secret.chmod(0o600)
        os.chown(secret, 0, 0)
    took = time.monotonic() - started
    print(f"{mode}/{variant}: {took:.1f} s, {dict(seen)}, {counts}")

    assert counts["swaps"] > 100, counts  # the attacker really ran all along
    if mode == "old-way":
        assert seen["decoy changed"] > 0, seen
        return
    assert seen["attempts"] >= ATTEMPTS
    assert seen["landed between"] > 0, seen  # the race was really run, and lost by the user
    refusals = [k for k in seen if k.startswith("refused: ")]
    assert all(_EXPECTED_REFUSAL.match(k) for k in refusals), refusals
    assert after == before, f"root's file was changed: {before} -> {after}"
    home = Path(victim.pw_dir)
    assert not [p for p in home.rglob("*") if p.lstat().st_uid == 0]  # nothing of root's left


# What an act finds after the swap: a link (the file, or a folder on the way), or a file that
# is not the one read (the attacker's next copy: not yet written, or just renamed away).
_EXPECTED_REFUSAL = re.compile(
    r"refused: (refusing to change PATH: ("
    r"PATH is a symbolic link, not a regular file"
    r"|PATH is a symbolic link"
    r"|it was changed since it was read)"
    r"|cannot change PATH: there is no such file)$"
)


def _group_name(user: pwd.struct_passwd) -> str:
    import grp

    return grp.getgrgid(user.pw_gid).gr_name

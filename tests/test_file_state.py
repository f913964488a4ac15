"""Reading a file's state and changing its mode and owner, through one descriptor.

``Transport.stat_files`` and ``set_attrs`` run here through the local transport, which calls
the node runner's own functions (``remote_runner.stat_file`` / ``set_attrs``) and checks their
replies like the SSH transport; the plain-SSH fallback (``shell_files``) runs here with ``sh``,
as a node without python3 runs it. ``nobody`` plays the unprivileged user.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from nodes.transports import TransportError
from nodes.transports.base import FileState
from nodes.transports.fileops import RunnerFileOps
from nodes.transports.local import LocalTransport
from nodes.transports.shell_files import ShellFileOps
from nodes.transports.streams import PlainOutput

NOBODY = pwd.getpwnam("nobody")
CONTENT = b"managed\n"
SHA = hashlib.sha256(CONTENT).hexdigest()

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changes owners: needs root")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))  # a FIFO must never hold a read


@pytest.fixture
def root_dir(tmp_path) -> Path:
    """A root-owned folder, 0755, with a root-only decoy file (what /etc/shadow is)."""
    tmp_path.chmod(0o755)
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    return tmp_path


def _meta(p: Path) -> tuple[int, int, int]:
    st = p.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def _user_dir(root_dir: Path) -> Path:
    home = root_dir / "home"
    home.mkdir(mode=0o755)
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    return home


async def _sh(argv, *, input=None, timeout=None, file_limit=None) -> PlainOutput:
    """What ``run_plain`` does on a node without python3, here with a local process."""
    done = subprocess.run(list(argv), input=input, capture_output=True, timeout=20)
    return PlainOutput(done.returncode, done.stdout, done.stderr, False)


# Each way a session does file work: the runner's functions, and sh without python3.
WAYS = {"runner": lambda: LocalTransport(), "sh": lambda: _ShellTransport()}


class _ShellTransport(LocalTransport):
    def __init__(self) -> None:
        super().__init__()
        self._files = ShellFileOps(_sh)


@pytest.fixture(params=sorted(WAYS))
def transport(request) -> LocalTransport:
    return WAYS[request.param]()


# --- stat_files ------------------------------------------------------------------------------


def test_it_answers_a_regular_files_state_from_one_descriptor(transport, root_dir):
    path = root_dir / "app.conf"
    path.write_bytes(CONTENT)
    os.chown(path, NOBODY.pw_uid, 0)
    path.chmod(0o640)
    state = run(transport.stat_file(str(path)))
    assert state == FileState(
        "file", mode=0o640, uid=NOBODY.pw_uid, gid=0, owner="nobody", group="root", sha256=SHA
    )


def test_a_missing_file_or_folder_is_missing_not_an_error(transport, root_dir):
    paths = [str(root_dir / "none"), str(root_dir / "no-folder" / "none")]
    assert {p: s.kind for p, s in run(transport.stat_files(paths)).items()} == dict.fromkeys(
        paths, "missing"
    )


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda p, d: os.mkfifo(p), "is a FIFO, not a regular file"),
        (lambda p, d: p.symlink_to(d / "secret"), "is a symbolic link, not a regular file"),
        (lambda p, d: socket.socket(socket.AF_UNIX).bind(str(p)), "is a socket, not a regular"),
        (lambda p, d: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3)), "character device"),
        (lambda p, d: p.mkdir(), "is a folder, not a regular file"),
    ],
    ids=["fifo", "link", "socket", "device", "folder"],
)
def test_anything_but_a_regular_file_is_refused_saying_what_it_is(transport, root_dir, make, said):
    path = root_dir / "odd"
    make(path, root_dir)
    state = run(transport.stat_file(str(path)))
    assert state.kind == "refused" and said in state.reason, state
    assert not state.sha256  # nothing of it read (a FIFO would have blocked)


def test_it_answers_many_paths_in_order_in_one_call(transport, root_dir):
    paths = []
    for i in range(120):  # more than one request's worth
        p = root_dir / f"f{i}"
        p.write_bytes(b"%d\n" % i)
        paths.append(str(p))
    states = run(transport.stat_files([*paths, str(root_dir / "none")]))
    assert [states[p].sha256 for p in paths] == [
        hashlib.sha256(b"%d\n" % i).hexdigest() for i in range(120)
    ]
    assert states[str(root_dir / "none")].kind == "missing"


def test_the_runner_reads_no_more_than_a_file_the_panel_could_have_written(root_dir):
    huge = root_dir / "huge"
    with huge.open("wb") as f:
        f.truncate(1 << 40)  # a user's sparse terabyte: hashing it would hold the session
    state = run(LocalTransport().stat_file(str(huge)))
    assert state.kind == "refused" and "larger than 8 MiB" in state.reason


def test_the_runner_reads_no_link_on_the_way(root_dir):
    (root_dir / "real").mkdir()
    (root_dir / "real" / "secret").write_bytes(b"x")
    (root_dir / "link").symlink_to(root_dir / "real")
    state = run(LocalTransport().stat_file(str(root_dir / "link" / "secret")))
    assert state.kind == "refused" and "/link is a symbolic link" in state.reason


def test_the_runner_reads_in_a_users_folder(root_dir):
    home = _user_dir(root_dir)
    (home / "keys").write_bytes(CONTENT)
    assert run(LocalTransport().stat_file(str(home / "keys"))).sha256 == SHA


def test_without_python3_nothing_is_read_in_a_users_folder(root_dir):
    home = _user_dir(root_dir)
    (home / "keys").write_bytes(CONTENT)
    state = run(_ShellTransport().stat_file(str(home / "keys")))
    assert state.kind == "refused"
    assert (
        "the node has no python3: the panel changes files in folders a user owns only "
        "through its runner" in state.reason
    )


def test_read_file_refuses_a_fifo_without_blocking(root_dir):
    os.mkfifo(root_dir / "fifo")
    with pytest.raises(TransportError, match="fifo is a FIFO, not a regular file"):
        run(LocalTransport().read_file(str(root_dir / "fifo")))


# --- set_attrs -------------------------------------------------------------------------------


def test_it_sets_owner_then_mode_so_setuid_stays(transport, root_dir):
    path = root_dir / "tool"
    path.write_bytes(CONTENT)
    run(transport.set_attrs(str(path), mode=0o4750, owner="nobody", group="root", sha256=SHA))
    assert _meta(path) == (NOBODY.pw_uid, 0, 0o4750)
    run(transport.set_attrs(str(path), mode=0o600))  # mode only: the owner stays
    assert _meta(path) == (NOBODY.pw_uid, 0, 0o600)


def test_it_never_changes_what_a_link_points_at(transport, root_dir):
    link = root_dir / "app.conf"
    link.symlink_to(root_dir / "secret")
    with pytest.raises(TransportError, match="app.conf is a symbolic link, not a regular file"):
        run(transport.set_attrs(str(link), mode=0o644, owner="nobody"))
    assert _meta(root_dir / "secret") == (0, 0, 0o600)


def test_it_refuses_a_fifo_without_blocking(transport, root_dir):
    os.mkfifo(root_dir / "fifo", 0o600)
    with pytest.raises(TransportError, match="fifo is a FIFO, not a regular file"):
        run(transport.set_attrs(str(root_dir / "fifo"), mode=0o644, sha256=SHA))
    assert _meta(root_dir / "fifo") == (0, 0, 0o600)


def test_it_changes_only_the_content_that_was_read(transport, root_dir):
    path = root_dir / "app.conf"
    path.write_bytes(b"other\n")
    path.chmod(0o600)
    with pytest.raises(TransportError, match="it was changed since it was read"):
        run(transport.set_attrs(str(path), mode=0o644, sha256=SHA))
    assert _meta(path) == (0, 0, 0o600)


def test_the_runner_refuses_a_link_among_the_folders(root_dir):
    (root_dir / "link").symlink_to(root_dir)
    with pytest.raises(TransportError, match="/link is a symbolic link"):
        run(LocalTransport().set_attrs(str(root_dir / "link" / "secret"), mode=0o644))
    assert _meta(root_dir / "secret") == (0, 0, 0o600)


def test_the_runner_trusts_a_users_folder_only_for_that_users_files(root_dir):
    home = _user_dir(root_dir)
    (home / "keys").write_bytes(CONTENT)
    with pytest.raises(TransportError, match=f"/home is owned by uid {NOBODY.pw_uid}"):
        run(LocalTransport().set_attrs(str(home / "keys"), mode=0o4755, owner="root"))
    run(LocalTransport().set_attrs(str(home / "keys"), mode=0o600, owner="nobody"))
    assert _meta(home / "keys")[::2] == (NOBODY.pw_uid, 0o600)


def test_the_runner_refuses_a_hard_link_in_a_users_folder(root_dir):
    home = _user_dir(root_dir)
    os.link(root_dir / "secret", home / "keys")  # what a user could do with another file
    with pytest.raises(TransportError, match="it has 2 hard links, in a folder others can"):
        run(LocalTransport().set_attrs(str(home / "keys"), mode=0o644, owner="nobody"))
    assert _meta(root_dir / "secret") == (0, 0, 0o600)


def test_without_python3_nothing_is_changed_in_a_users_folder(root_dir):
    home = _user_dir(root_dir)
    (home / "keys").write_bytes(CONTENT)
    with pytest.raises(TransportError) as e:
        run(_ShellTransport().set_attrs(str(home / "keys"), mode=0o644, owner="nobody"))
    assert (
        "the node has no python3: the panel changes files in folders a user owns only "
        "through its runner" in str(e.value)
    )
    assert _meta(home / "keys")[::2] == (0, 0o644)


# --- what a hostile node answers -------------------------------------------------------------

GOOD = {"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "owner": "root", "group": None}


@pytest.mark.parametrize(
    "answer",
    [
        "file",
        {"type": "socket"},
        {**GOOD, "sha256": "x" * 64},
        {**GOOD, "sha256": SHA, "mode": 0o17777},
        {**GOOD, "sha256": SHA, "uid": True},
        {**GOOD, "sha256": SHA, "owner": ["root"]},
    ],
    ids=["not-an-object", "unknown-type", "bad-sha", "bad-mode", "bool-uid", "bad-owner"],
)
def test_a_stat_answer_of_the_wrong_shape_is_not_a_runner_reply(answer):
    with pytest.raises(TransportError, match="answered something that is not a runner reply"):
        run(RunnerFileOps(_answering({"files": [answer]}), "hostile").stat(["/etc/x"]))


def test_a_stat_reply_must_answer_every_path():
    ops = RunnerFileOps(_answering({"files": []}), "hostile")
    with pytest.raises(TransportError, match="no answer per path"):
        run(ops.stat(["/etc/x"]))
    state = run(RunnerFileOps(_answering({"files": [{**GOOD, "sha256": SHA}]}), "n").stat(["/x"]))
    assert state["/x"] == FileState("file", mode=0o644, uid=0, gid=0, owner="root", sha256=SHA)


def _answering(reply: dict):
    async def send(request: dict) -> dict:
        return reply

    return send

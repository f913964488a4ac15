"""Root's writes on a node never follow a link or trust another user's folder.

The descriptor-based writes (``remote_runner.write_file`` / ``make_dir``) run here through the
local transport, which calls the very same functions; the plain-SSH fallback scripts
(``shell_files``) run here with ``sh``, as a node without python3 runs them. ``nobody`` plays
the unprivileged user.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from nodes.transports import TransportError
from nodes.transports.local import LocalTransport
from nodes.transports.shell_files import MAKE_DIR_SCRIPT, PUT_FILE_SCRIPT

NOBODY = pwd.getpwnam("nobody")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def root_dir(tmp_path) -> Path:
    """A root-owned folder, 0755, with a root-owned file in a root-owned decoy folder."""
    (tmp_path / "decoy").mkdir(mode=0o755)
    (tmp_path / "decoy" / "secret").write_text("root's\n")
    return tmp_path


def _owner_mode(p: Path) -> tuple[int, int]:
    st = p.lstat()
    return st.st_uid, stat.S_IMODE(st.st_mode)


def test_it_refuses_to_write_through_a_linked_folder(root_dir):
    (root_dir / "link").symlink_to(root_dir / "decoy")
    with pytest.raises(TransportError, match=r"refusing to write .*: .*/link is a symbolic link"):
        run(LocalTransport().put_file(str(root_dir / "link" / "secret"), b"x", owner="nobody"))
    assert (root_dir / "decoy" / "secret").read_text() == "root's\n"
    assert sorted(os.listdir(root_dir / "decoy")) == ["secret"]


def test_it_replaces_a_link_in_place_of_the_file_without_following_it(root_dir):
    target = root_dir / "keys"
    target.symlink_to(root_dir / "decoy" / "secret")
    run(LocalTransport().put_file(str(target), b"new\n", mode=0o600, owner="nobody"))
    assert not target.is_symlink() and target.read_bytes() == b"new\n"
    assert _owner_mode(target) == (NOBODY.pw_uid, 0o600)
    assert _owner_mode(root_dir / "decoy" / "secret") == (0, 0o644)


def test_it_trusts_a_users_folder_only_for_that_users_files(root_dir):
    home = root_dir / "home"
    home.mkdir()
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(TransportError, match=rf"/home is owned by uid {NOBODY.pw_uid}"):
        run(LocalTransport().put_file(str(home / "root-file"), b"x"))
    assert not (home / "root-file").exists()
    run(LocalTransport().put_file(str(home / "theirs"), b"x", owner="nobody"))
    assert (home / "theirs").stat().st_uid == NOBODY.pw_uid


def test_it_makes_folders_like_mkdir_p_and_sets_them_like_install_d(root_dir):
    leaf = root_dir / "a" / "b" / "c"
    run(LocalTransport().make_dir(str(leaf), mode=0o700, owner="nobody", group="nogroup"))
    assert _owner_mode(root_dir / "a" / "b") == (0, 0o755)
    assert _owner_mode(leaf) == (NOBODY.pw_uid, 0o700)
    leaf.chmod(0o777)
    run(LocalTransport().make_dir(str(leaf), mode=0o700, owner="nobody"))
    assert _owner_mode(leaf) == (NOBODY.pw_uid, 0o700)
    run(LocalTransport().make_dir(str(root_dir / "a")))  # mkdir -p of what exists: untouched
    assert _owner_mode(root_dir / "a") == (0, 0o755)


def test_it_refuses_to_make_a_folder_that_is_a_link(root_dir):
    (root_dir / ".ssh").symlink_to(root_dir / "decoy")
    with pytest.raises(TransportError, match=r"/\.ssh is a symbolic link"):
        run(LocalTransport().make_dir(str(root_dir / ".ssh"), mode=0o700, owner="nobody"))
    assert _owner_mode(root_dir / "decoy") == (0, 0o755)


def test_it_trusts_the_folders_of_the_user_a_file_is_for(root_dir):
    home = root_dir / "home"
    home.mkdir()
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(TransportError, match="is owned by uid"):
        run(LocalTransport().make_dir(str(home / "conf")))
    run(LocalTransport().make_dir(str(home / "conf"), trusting="nobody"))
    assert _owner_mode(home / "conf")[0] == 0


def test_it_leaves_no_temporary_file_when_a_write_fails(root_dir):
    (root_dir / "dir.conf").mkdir()
    with pytest.raises(TransportError, match="cannot write .*dir.conf"):
        run(LocalTransport().put_file(str(root_dir / "dir.conf"), b"x"))
    assert not [p for p in os.listdir(root_dir) if p.startswith(".panel-")]


@pytest.mark.parametrize("path", ["relative/file", "/etc/../etc/passwd", "/tmp/./x"])
def test_it_refuses_paths_that_are_not_plain_absolute_ones(path):
    with pytest.raises(TransportError, match="must be absolute"):
        run(LocalTransport().put_file(path, b"x"))


# --- the plain-SSH fallback's scripts -------------------------------------------------------


def sh(script: str, *args: str, data: bytes = b"data\n") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-c", script, "panel", *args], input=data, capture_output=True, check=False
    )


def test_it_writes_without_python3_where_only_root_can_change_names(root_dir):
    folder = root_dir / "etc"
    folder.mkdir(mode=0o755)
    done = sh(PUT_FILE_SCRIPT, str(folder), "640", "nobody:nogroup", str(folder / "app.conf"))
    assert done.returncode == 0, done.stderr
    assert (folder / "app.conf").read_bytes() == b"data\n"
    assert _owner_mode(folder / "app.conf") == (NOBODY.pw_uid, 0o640)
    assert os.listdir(folder) == ["app.conf"]


@pytest.mark.parametrize(
    "setup, reason",
    [
        ("user", "the node has no python3: cannot safely write into a folder owned by nobody"),
        ("link", "/target is a symbolic link"),
        ("writable", "which other users can write to"),
    ],
)
def test_it_refuses_without_python3_where_a_user_could_race(root_dir, setup, reason):
    target = root_dir / "target"
    if setup == "link":
        target.symlink_to(root_dir / "decoy")
    else:
        target.mkdir(mode=0o755)
        if setup == "user":
            os.chown(target, NOBODY.pw_uid, NOBODY.pw_gid)
        else:
            target.chmod(0o1777)  # sticky is enough above the folder, not for the folder
    put = sh(PUT_FILE_SCRIPT, str(target), "600", "", str(target / "secret"))
    made = sh(MAKE_DIR_SCRIPT, str(target / ".ssh"), "700", "nobody")
    for result in (put, made):
        assert result.returncode == 3
        assert reason in result.stderr.decode()
    assert (root_dir / "decoy" / "secret").read_text() == "root's\n"
    assert _owner_mode(root_dir / "decoy") == (0, 0o755)
    assert not (root_dir / "decoy" / ".ssh").exists()


def test_it_makes_folders_without_python3(root_dir):
    leaf = root_dir / "x" / "y"
    done = sh(MAKE_DIR_SCRIPT, str(leaf), "700", "nobody:nogroup")
    assert done.returncode == 0, done.stderr
    assert _owner_mode(root_dir / "x") == (0, 0o755)
    assert _owner_mode(leaf) == (NOBODY.pw_uid, 0o700)

"""Root's removes on a node never follow a link on the way, nor remove a folder.

``remove_file`` (``remote_runner.remove_file``) runs here through the local transport, which
calls the very same code as a node's runner; the plain-SSH fallback script
(``shell_files.REMOVE_FILE_SCRIPT``) runs here with ``sh``, as a node without python3 runs it.
``nobody`` plays the unprivileged user. Races: ``tests/integration/test_remove_races.py``.
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
from nodes.transports.shell_files import REMOVE_FILE_SCRIPT

NOBODY = pwd.getpwnam("nobody")


def remove(path: Path | str, **options) -> bool:
    return asyncio.run(LocalTransport().remove_file(str(path), **options))


@pytest.fixture
def root_dir(tmp_path) -> Path:
    """A root-owned folder, 0755, with a root-owned file in a root-owned decoy folder."""
    (tmp_path / "decoy").mkdir(mode=0o755)
    (tmp_path / "decoy" / "secret").write_text("root's\n")
    return tmp_path


def _decoy_intact(root_dir: Path) -> bool:
    secret = root_dir / "decoy" / "secret"
    return os.listdir(root_dir / "decoy") == ["secret"] and secret.read_text() == "root's\n"


def test_it_removes_a_file_and_says_whether_there_was_one(root_dir):
    path = root_dir / "app.conf"
    path.write_text("x")
    assert remove(path) is True
    assert not path.exists()
    assert remove(path) is False  # already gone: not an error
    assert remove(root_dir / "no-such-folder" / "deeper" / "app.conf") is False


def test_it_refuses_to_remove_through_a_linked_folder(root_dir):
    (root_dir / "link").symlink_to(root_dir / "decoy")
    with pytest.raises(TransportError, match=r"refusing to remove .*: .*/link is a symbolic link"):
        remove(root_dir / "link" / "secret")
    assert _decoy_intact(root_dir)


def test_it_removes_a_link_in_place_of_the_file_not_what_it_points_at(root_dir):
    target = root_dir / "keys"
    target.symlink_to(root_dir / "decoy" / "secret")
    assert remove(target) is True
    assert not os.path.lexists(target)
    assert _decoy_intact(root_dir)


def test_it_refuses_to_remove_a_folder(root_dir):
    with pytest.raises(TransportError, match=r"refusing to remove .*/decoy: it is a folder"):
        remove(root_dir / "decoy")
    assert _decoy_intact(root_dir)


def test_it_trusts_a_users_folder_only_for_that_users_files(root_dir):
    home = root_dir / "home"
    home.mkdir()
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    (home / "theirs").write_text("x")
    with pytest.raises(TransportError, match=r"refusing to remove .*: .*/home is owned by uid"):
        remove(home / "theirs")
    assert (home / "theirs").exists()
    assert remove(home / "theirs", trusting="nobody") is True
    unknown = "cannot remove .*: the file's owner no-such-user is not a user on this node"
    with pytest.raises(TransportError, match=unknown):
        remove(home / "theirs", trusting="no-such-user")


@pytest.mark.parametrize("path", ["relative/file", "/etc/../etc/passwd", "/tmp/./x", "/"])
def test_it_refuses_paths_that_are_not_plain_absolute_files(path):
    with pytest.raises(TransportError, match="must be absolute|it is the root folder"):
        remove(path)


# --- the plain-SSH fallback's script ----------------------------------------------------------


def sh(folder: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-c", REMOVE_FILE_SCRIPT, "panel", str(folder), str(path)],
        capture_output=True,
        check=False,
    )


def test_it_removes_without_python3_where_only_root_can_change_names(root_dir):
    folder = root_dir / "etc"
    folder.mkdir(mode=0o755)
    (folder / "app.conf").write_text("x")
    (folder / "link.conf").symlink_to(root_dir / "decoy" / "secret")
    for name in ("app.conf", "link.conf"):
        done = sh(folder, folder / name)
        assert (done.returncode, done.stdout) == (0, b"removed\n"), done.stderr
    assert os.listdir(folder) == []
    assert _decoy_intact(root_dir)
    again = sh(folder, folder / "app.conf")  # nothing there: not an error, nothing said
    gone = sh(root_dir / "gone", root_dir / "gone" / "app.conf")
    for result in (again, gone):
        assert (result.returncode, result.stdout) == (0, b""), result.stderr


@pytest.mark.parametrize(
    "setup, reason",
    [
        ("user", "the node has no python3: cannot safely write into a folder owned by nobody"),
        ("link", "/target is a symbolic link"),
        ("writable", "which other users can write to"),
    ],
)
def test_it_refuses_to_remove_without_python3_where_a_user_could_race(root_dir, setup, reason):
    target = root_dir / "target"
    if setup == "link":
        target.symlink_to(root_dir / "decoy")
    else:
        target.mkdir(mode=0o755)
        (target / "secret").write_text("x")
        if setup == "user":
            os.chown(target, NOBODY.pw_uid, NOBODY.pw_gid)
        else:
            target.chmod(0o777)
    result = sh(target, target / "secret")
    assert result.returncode == 3
    assert f"refusing to remove {target}/secret: " in result.stderr.decode()
    assert reason in result.stderr.decode()
    assert _decoy_intact(root_dir)
    assert (target / "secret").exists()


def test_it_refuses_to_remove_a_folder_without_python3(root_dir):
    result = sh(root_dir, root_dir / "decoy")
    assert result.returncode == 3
    assert b"it is a folder" in result.stderr
    assert _decoy_intact(root_dir)
    assert stat.S_ISDIR((root_dir / "decoy").lstat().st_mode)

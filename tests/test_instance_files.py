"""The data folder is the panel's owner's alone: no other local user may read the database (its
sessions and password hashes), the logs, the keys or the admin password.

The panel's own processes run here as an admin starts them, with the usual umask 022, in a fresh
data folder inside a folder every user may enter, and the user ``nobody`` then tries to read
what they wrote.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import ROOT

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root"),
    pytest.mark.cluster,
]

ADMIN_UMASK = 0o022
OTHER_USER = "nobody"

LOG_AND_ROTATE = """
import logging
log = logging.getLogger("nodes")
log.warning("before the rotation")
for handler in log.handlers:
    if hasattr(handler, "doRollover"):
        handler.doRollover()
log.warning("after the rotation")
"""

HOLD_THE_DATABASE = """
import sys
from django.core.cache import cache
cache.set("held", "open")
print("holding", flush=True)
sys.stdin.readline()
"""

EXPECTED_FILES = {
    "panel.sqlite3",
    "secret_key",
    "admin-password.txt",
    "ssh/id_ed25519",
    "log/panel.log",
    "log/panel.log.1",
}


def panel_env(data_dir: Path) -> dict[str, str]:
    """The panel on its default SQLite database in ``data_dir``, with its own secret key file."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SECRET_KEY"}}
    env.update(PANEL_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return env


def manage(data_dir: Path, *args: str, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=panel_env(data_dir),
        umask=ADMIN_UMASK,
        text=True,
        **options,
    )


def run_manage(data_dir: Path, *args: str) -> str:
    proc = manage(data_dir, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"manage.py {' '.join(args)} failed:\n{err}"
    return out


def run_cluster_briefly(data_dir: Path) -> None:
    """Start ``manage.py qcluster``, wait until its log says it runs, then stop it."""
    log = data_dir / "log" / "panel.log"
    proc = manage(
        data_dir,
        "qcluster",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "running" not in log.read_text():
            assert proc.poll() is None, "the cluster exited"
            assert time.monotonic() < deadline, "the cluster did not say it runs"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def database_held_open(data_dir: Path) -> Iterator[None]:
    """A panel process with the database open after a write: the -wal and -shm files exist."""
    proc = manage(
        data_dir,
        "shell",
        "--no-imports",
        "-c",
        HOLD_THE_DATABASE,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        for line in proc.stdout:
            if line.strip() == "holding":
                break
        else:
            pytest.fail("the shell holding the database open exited")
        yield
    finally:
        proc.communicate("\n", timeout=30)


def everything_in(data_dir: Path) -> dict[str, int]:
    """The ``st_mode`` of the data folder ("") and of every folder and file in it."""
    modes = {"": data_dir.stat().st_mode}
    for path in data_dir.rglob("*"):
        modes[str(path.relative_to(data_dir))] = path.lstat().st_mode
    return modes


def permissions(modes: dict[str, int], kind) -> dict[str, str]:
    """The permission bits, in octal, of the entries of one kind (``stat.S_ISDIR``, ...)."""
    return {name: oct(stat.S_IMODE(mode)) for name, mode in modes.items() if kind(mode)}


def as_other_user(*argv: str) -> subprocess.CompletedProcess:
    """Run ``argv`` as ``nobody`` with nobody's groups only (not root's supplementary groups)."""
    user = pwd.getpwnam(OTHER_USER)
    return subprocess.run(
        argv,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        timeout=30,
    )


def readable_by_other_user(data_dir: Path) -> list[str]:
    """What ``nobody`` could read (files) or list (folders) in the data folder."""
    readable = []
    for name, mode in everything_in(data_dir).items():
        path = str(data_dir / name)
        argv = ("ls", "-a", path) if stat.S_ISDIR(mode) else ("cat", path)
        if as_other_user(*argv).returncode == 0:
            readable.append(name or ".")
    return readable


@dataclass
class Instance:
    data_dir: Path
    modes_while_open: dict[str, int] = field(default_factory=dict)
    readable_while_open: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def instance() -> Iterator[Instance]:
    """A fresh instance as `make run` sets it up, plus its SSH key, a rotated log, its cluster."""
    parent = Path(tempfile.mkdtemp(prefix="panel-instance-"))
    parent.chmod(0o755)  # any user may enter: only the data folder's own modes protect it
    data_dir = parent / "var"
    try:
        run_manage(data_dir, "migrate", "--no-input")
        run_manage(data_dir, "bootstrap")
        run_manage(data_dir, "panelkey")  # prints the panel's public key, made on first use
        run_manage(data_dir, "shell", "--no-imports", "-c", LOG_AND_ROTATE)
        run_cluster_briefly(data_dir)
        found = Instance(data_dir)
        with database_held_open(data_dir):
            found.modes_while_open = everything_in(data_dir)
            found.readable_while_open = readable_by_other_user(data_dir)
        yield found
    finally:
        shutil.rmtree(parent)


def test_it_writes_the_files_this_test_is_about(instance):
    written = set(instance.modes_while_open)

    assert EXPECTED_FILES <= written
    assert {"panel.sqlite3-wal", "panel.sqlite3-shm"} <= written


def test_it_makes_every_folder_owner_only(instance):
    folders = permissions(everything_in(instance.data_dir), stat.S_ISDIR)

    assert {"", "log", "ssh"} <= set(folders)
    assert set(folders.values()) == {oct(0o700)}, folders


def test_it_makes_every_file_owner_only_also_while_the_database_is_open(instance):
    files = {
        **permissions(instance.modes_while_open, stat.S_ISREG),
        **permissions(everything_in(instance.data_dir), stat.S_ISREG),
    }

    assert EXPECTED_FILES <= set(files)
    assert {name: mode for name, mode in files.items() if mode != oct(0o600)} == {}


def test_it_lets_another_user_read_nothing_while_the_database_is_open(instance):
    assert instance.readable_while_open == []


def test_it_lets_another_user_read_nothing_afterwards(instance):
    assert readable_by_other_user(instance.data_dir) == []


def test_it_can_tell_when_another_user_could_read_a_file():
    """The check above is not vacuous: a world-readable file next to the data folder is read."""
    parent = Path(tempfile.mkdtemp(prefix="panel-control-"))
    try:
        parent.chmod(0o755)
        public = parent / "public.txt"
        public.write_text("anyone\n")
        public.chmod(0o644)

        assert as_other_user("cat", str(public)).stdout == b"anyone\n"
    finally:
        shutil.rmtree(parent)


def test_it_tightens_the_loose_data_folder_of_an_earlier_version():
    parent = Path(tempfile.mkdtemp(prefix="panel-upgrade-"))
    parent.chmod(0o755)
    data_dir = parent / "var"
    (data_dir / "log").mkdir(parents=True, mode=0o755)
    data_dir.chmod(0o755)
    old_log = data_dir / "log" / "panel.log"
    old_log.write_text("an old line\n")
    old_log.chmod(0o644)
    try:
        run_manage(data_dir, "migrate", "--no-input")
        run_manage(data_dir, "shell", "--no-imports", "-c", LOG_AND_ROTATE)

        modes = everything_in(data_dir)
        folders = permissions(modes, stat.S_ISDIR)
        files = permissions(modes, stat.S_ISREG)
        assert folders[""] == folders["log"] == oct(0o700)
        assert files["panel.sqlite3"] == oct(0o600)
        assert files["log/panel.log.1"] == oct(0o600)  # the old log, rotated
    finally:
        shutil.rmtree(parent)


@pytest.mark.django_db
def test_it_makes_the_test_suites_own_database_owner_only():
    name = Path(connection.settings_dict["NAME"])
    if connection.vendor != "sqlite":
        pytest.skip("only SQLite keeps the database in the data folder")

    assert oct(stat.S_IMODE(name.stat().st_mode)) == oct(0o600)

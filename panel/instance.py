"""Keep the instance's data folder to the user the panel runs as.

The data folder holds what lets a local user take over the panel, and through its SSH key the
fleet: the database (sessions, password hashes), the secret key, the panel's private key, the
admin password file and the logs. So every folder the panel makes there is 0700 and every file
0600, whatever the umask of the process that started it.

The modes are set explicitly on each path rather than by lowering the process's umask: the umask
is process-wide and inherited, and the local transport runs commands on the panel's own server
whose files must keep their usual modes.

Nothing here imports Django's settings: ``panel.settings`` itself uses these helpers.
"""

from __future__ import annotations

import os
import stat
import time
from contextlib import suppress
from logging.handlers import RotatingFileHandler
from pathlib import Path

from panel.secretkey import new_secret_key

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# The files SQLite keeps beside a database; it creates them with the database file's mode.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def tighten(path: str | os.PathLike, mode: int) -> None:
    """Clear the permission bits outside ``mode`` of an existing path the panel's user owns.

    Files and folders of an earlier version (made with the umask's modes) get private on the
    next start. Paths owned by someone else are left alone: their owner chose the modes.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    current = stat.S_IMODE(st.st_mode)
    if st.st_uid == os.geteuid() and current & ~mode:
        os.chmod(path, current & mode)


def private_dir(path: str | os.PathLike) -> Path:
    """Make ``path`` (and its missing parents) a folder only its owner may enter; return it.

    ``Path.mkdir(parents=True)`` would make the parents with the umask's modes, hence one level
    at a time, and a chmod because an odd umask could also clear the owner's own bits.
    """
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # another process made it at the same time
        os.chmod(folder, PRIVATE_DIR_MODE)
    tighten(path, PRIVATE_DIR_MODE)
    return path


def private_opener(path: str | os.PathLike, flags: int) -> int:
    """An ``opener`` for ``open()``: a file it creates is 0600 from the start, an old one too."""
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~PRIVATE_FILE_MODE:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_sqlite_file(path: str | os.PathLike) -> None:
    """Create the SQLite database file 0600 before SQLite opens it, and tighten its side files.

    SQLite would create the file with the umask's mode (0644) and give its -wal, -shm and
    -journal files that same mode, so a database created private keeps them private too.
    Nothing is created when the folder is missing: SQLite then reports its own error.
    """
    path = Path(path)
    if path.exists():
        # Never open (and close) a database this process may already have open: closing any
        # descriptor of the file drops every POSIX lock the process holds on it, SQLite's
        # included, and another process then checkpoints and removes the WAL under this
        # one's connections, which go on reading a stale copy (or corrupt the database).
        tighten(path, PRIVATE_FILE_MODE)
    elif path.parent.is_dir():
        with suppress(FileExistsError):  # made by another process meanwhile
            os.close(private_opener(path, os.O_RDWR | os.O_CREAT | os.O_EXCL))
    for suffix in SQLITE_SIDE_FILES:
        tighten(path.with_name(path.name + suffix), PRIVATE_FILE_MODE)


def prepare_data_dir(data_dir: str | os.PathLike) -> None:
    """At start-up: the data folder and its folders exist and are private.

    The data folder's own 0700 already keeps other users out of everything in it, also files an
    earlier version left with loose modes; those get 0600 when the panel next opens them.
    """
    data_dir = private_dir(data_dir)
    for name in ("log", "ssh"):
        if (data_dir / name).is_dir():
            private_dir(data_dir / name)


SECRET_KEY_FILE = "secret_key"


def read_secret_key(data_dir: str | os.PathLike) -> str:
    """The instance's secret key from its file, or "" before the first start made one."""
    try:
        return (Path(data_dir) / SECRET_KEY_FILE).read_text().strip()
    except FileNotFoundError:
        return ""


def ensure_secret_key(data_dir: str | os.PathLike) -> str:
    """Make the instance's secret key file (0600) once, whichever process starts first."""
    path = private_dir(data_dir) / SECRET_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        for _ in range(50):  # another process is writing it right now
            if key := read_secret_key(data_dir):
                return key
            time.sleep(0.1)
        raise
    with os.fdopen(fd, "w") as f:
        f.write(new_secret_key())
    return read_secret_key(data_dir)


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A ``RotatingFileHandler`` whose log file, its folder and its rotated copies are private.

    A rotated copy is the log file renamed, so it keeps the log file's 0600; copies an earlier
    version left behind are tightened at the first rotation.
    """

    def _open(self):
        private_dir(Path(self.baseFilename).parent)
        return open(
            self.baseFilename,
            self.mode,
            encoding=self.encoding,
            errors=self.errors,
            opener=private_opener,
        )

    def doRollover(self) -> None:
        super().doRollover()
        for n in range(1, self.backupCount + 1):
            tighten(self.rotation_filename(f"{self.baseFilename}.{n}"), PRIVATE_FILE_MODE)

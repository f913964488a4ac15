"""A second connection to the SQLite database must not blind the first to other processes.

``panel.sqlite`` makes the database file private before SQLite opens it. It used to open and
close the file for that every time, also when this process already had it open: closing any
descriptor of a file drops every POSIX lock the process holds on it, SQLite's included. The
next process to close its connection then believed it was the last one, checkpointed and
removed the WAL, and this process's connections went on reading a stale copy: a cluster's
heartbeats (written by another process) were never seen by the web server (shown by
tests/e2e/test_cluster_banner_browser.py on SQLite, which failed before). An existing file is
now only tightened with chmod, never opened here.
"""

from __future__ import annotations

from panel.instance import private_sqlite_file


def test_a_new_database_file_is_private(tmp_path):
    path = tmp_path / "panel.sqlite3"
    private_sqlite_file(path)
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    private_sqlite_file(path)  # an old one, made with the umask's mode, is tightened
    assert path.stat().st_mode & 0o777 == 0o600

"""What the benchmarks share: a fresh instance of the panel to measure, and a cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
MARIADB_URL = "mysql://root@127.0.0.1:3306/panel_bench"


def setup_django(database_url: str | None) -> None:
    """A new data folder and an empty, migrated database for this run."""
    data = BENCH_DIR / "data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    os.environ["PANEL_DATA_DIR"] = str(data)
    os.environ["PANEL_SYNCHRONIZER_MODULES"] = "bench.bench_types"
    os.environ["PANEL_Q_SAVE_LIMIT"] = "0"  # keep every result: the benchmarks count them
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "mysql":
        name = connection.settings_dict["NAME"]
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        connection.close()
    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)


def database_name() -> str:
    from django.db import connection

    return "MariaDB" if connection.vendor == "mysql" else connection.vendor


def start_cluster(workers: int = 2) -> subprocess.Popen:
    env = dict(os.environ, PANEL_Q_WORKERS=str(workers))
    # BENCH_CLUSTER_LOG=FILE keeps the cluster's log, to see where a run's time went.
    log_path = os.environ.get("BENCH_CLUSTER_LOG")
    output = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    time.sleep(4)  # the cluster's processes are up and polling
    return proc


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the leader (django-q stops its own workers in order), then kill what is left."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@contextmanager
def counted() -> Iterator[dict[str, int]]:
    """Count the queries and commits of this process's connection meanwhile."""
    from django.db import connection

    counts = {"queries": 0, "commits": 0}

    def query(execute, sql, params, many, context):
        counts["queries"] += 1
        return execute(sql, params, many, context)

    connection.ensure_connection()
    commit = connection.connection.commit

    def counted_commit():
        counts["commits"] += 1
        return commit()

    connection.connection.commit = counted_commit
    try:
        with connection.execute_wrapper(query):
            yield counts
    finally:
        connection.connection.commit = commit

"""``migrate`` prepares everything: a cluster started after it alone does work and logs no error.

Not the test database pytest-django makes (it runs ``createcachetable`` itself): an empty
database of its own, SQLite in a fresh data folder or a new MariaDB database, set up by
``manage.py migrate`` and nothing else, as an admin would.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import manage_ok
from tests.integration.conftest import RUNNING_LINE, QCluster

pytestmark = pytest.mark.cluster


@pytest.fixture
def empty_database(db, tmp_path) -> Iterator[dict[str, str]]:
    """The environment of a panel on an empty database of the suite's kind."""
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(PANEL_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    name = None
    if connection.vendor == "mysql":
        name = f"panel_migrate_{uuid.uuid4().hex[:8]}"
        s = connection.settings_dict
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        user = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
        env["DATABASE_URL"] = (
            f"mysql://{user}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 3306}/{name}"
        )
    try:
        yield env
    finally:
        if name:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def run(env: dict[str, str], *args: str) -> str:
    return manage_ok(*args, env=env)


def test_a_cluster_after_migrate_alone_works_and_logs_no_error(empty_database, tmp_path):
    env = empty_database
    run(env, "migrate", "--no-input")
    cluster = QCluster(tmp_path / "qcluster.log", env)
    try:
        run(env, "addnode", "n1", "--local")
        deadline = time.monotonic() + 90
        while True:
            (node,) = json.loads(run(env, "nodes", "--json"))
            if node["status"] == "ready" and node["pending"] == 0:
                break
            assert cluster.alive, "the cluster exited"
            assert time.monotonic() < deadline, f"the node did not converge: {node}"
            time.sleep(1)
        time.sleep(3)  # the cluster's monitor writes its status to the cache meanwhile
    finally:
        cluster.stop()
    log = Path(env["PANEL_DATA_DIR"], "log", "panel.log").read_text()
    for text in (cluster.output, log):
        assert "ERROR" not in text and "Traceback" not in text and "doesn't exist" not in text, text
        # The cluster says it runs; django-q's lines per task are kept out.
        assert RUNNING_LINE.search(text), text
        assert "processing" not in text and "Processed" not in text, text

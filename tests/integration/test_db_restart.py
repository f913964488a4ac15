"""MariaDB restarts while the cluster works: the cluster goes on once it is back, nothing is
lost, no run is left processing."""

import shutil
import subprocess
import time
from collections import defaultdict

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from nodes.choices import NodeStatus, Transport
from nodes.models import Node
from sync.engine import register_desync, sweep
from sync.models import Node2Sync, Outcome, SyncRun
from tests.integration.conftest import CLUSTER_ENV, wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif("connection.vendor != 'mysql'", reason="restarts the MariaDB server"),
]


def _ping() -> bool:
    return (
        subprocess.run(
            ["mysqladmin", "-h127.0.0.1", "-uroot", "ping"], capture_output=True
        ).returncode
        == 0
    )


def restart_mariadb(down_seconds: float = 2.0) -> None:
    """Shut the server down and start it again the way .ci/run starts it."""
    subprocess.run(["mysqladmin", "-h127.0.0.1", "-uroot", "shutdown"], check=True)
    wait_for(lambda: not _ping(), timeout=60)
    time.sleep(down_seconds)
    start_mariadb()


def start_mariadb() -> None:
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    subprocess.run(["install", "-d", "-o", "mysql", "-g", "mysql", "/run/mysqld"], check=True)
    subprocess.Popen(
        [mariadbd, "--user=mysql"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(_ping, timeout=120)


def retrying(fn):
    """Call ``fn`` from the test process, reconnecting while the server comes back."""
    for _ in range(120):
        try:
            return fn()
        except OperationalError:
            connection.close()
            time.sleep(0.5)
    return fn()


def test_it_goes_on_after_the_database_restarts(cluster_types, start_qcluster):
    nodes = [
        Node.objects.create(name=f"db{i}", transport=Transport.LOCAL, host="localhost")
        for i in range(12)
    ]
    types = [cluster_types[n] for n in ("stress-slow", "stress-a", "stress-b")]
    start_qcluster(**CLUSTER_ENV, PANEL_Q_WORKERS="2", PANEL_LEASE_SECONDS="5")
    registered = defaultdict(list)
    for node in nodes:
        registered[node.pk].append(timezone.now())
    register_desync(nodes, types)

    def runs_in_progress():
        """runs to be in progress"""
        return SyncRun.objects.filter(outcome=Outcome.RUNNING).exists()

    wait_for(runs_in_progress, timeout=30, interval=0.05)
    try:
        restart_mariadb()
    finally:
        if not _ping():
            start_mariadb()
        connection.close()

    def converged():
        """every node to be ready with nothing left to do"""
        sweep()  # what the cluster's Schedule does every minute, called here at once
        return (
            not Node2Sync.objects.exists()
            and not Node.objects.exclude(status=NodeStatus.READY).exists()
        )

    wait_for(lambda: retrying(converged), timeout=180, interval=1)
    assert not SyncRun.objects.filter(outcome=Outcome.RUNNING).exists()
    assert not Node.objects.exclude(lease_owner="").exists()
    for node in nodes:
        for action in types:
            assert SyncRun.objects.filter(
                node=node,
                action=action,
                outcome=Outcome.SUCCESS,
                started_at__gte=registered[node.pk][0],
            ).exists(), (node.name, action.name)

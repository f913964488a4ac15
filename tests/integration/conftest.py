import importlib
import os
import signal
import subprocess
import sys
import time

import pytest

from sync.models import SyncAction
from sync.synchronizers import REGISTRY, unregister_type, update_syncactions
from tests.conftest import ROOT, process_env
from tests.integration.cluster_type_names import ALL_TYPES


def wait_for(predicate, timeout: float, interval: float = 0.2):
    """Poll until ``predicate()`` is truthy; return its value or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {predicate.__doc__ or predicate}")
        time.sleep(interval)


class QCluster:
    """A real django-q cluster process (``manage.py qcluster``) against the test database."""

    def __init__(self, log_path, **env: str) -> None:
        self.log_path = log_path
        self.log = open(log_path, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=process_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.seek(0)
        print(self.log.read()[-4000:])  # shown by pytest when the test failed
        self.log.close()


@pytest.fixture
def start_qcluster(transactional_db, tmp_path):
    """Start real django-q clusters: ``start_qcluster(**env)``; all are stopped at the end."""
    clusters: list[QCluster] = []

    def start(**env: str) -> QCluster:
        cluster = QCluster(tmp_path / f"qcluster{len(clusters)}.log", **env)
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def qcluster(start_qcluster):
    return start_qcluster()


CLUSTER_ENV = {"PANEL_SYNCHRONIZER_MODULES": "tests.integration.stress_types"}


@pytest.fixture
def cluster_types(transactional_db):
    """The test-only types, in this process's registry and in ``syncactions``."""
    import tests.integration.stress_types as module

    if any(name not in REGISTRY for name in ALL_TYPES):
        importlib.reload(module)  # imported before, then unregistered by a previous test
    update_syncactions()
    yield {a.name: a for a in SyncAction.objects.filter(name__in=ALL_TYPES)}
    for name in ALL_TYPES:
        unregister_type(name)


# --- Talking to a node directly --------------------------------------------------------------


async def with_transport(node, fn):
    """Open the node's transport, run ``fn(transport)``, close it; for ``asyncio.run``."""
    from nodes.transports import open_transport

    transport = await open_transport(node)
    try:
        return await fn(transport)
    finally:
        await transport.close()


def without_runner(monkeypatch) -> None:
    """As on a node without python3: every command goes as a plain SSH command."""
    from nodes.transports.ssh import _Runner

    async def unavailable(conn, *args, **kwargs):
        return None

    monkeypatch.setattr(_Runner, "start", unavailable)

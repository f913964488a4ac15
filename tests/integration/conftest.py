import importlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path

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


# What django-q's cluster logs once its workers are up and it takes tasks.
RUNNING_LINE = re.compile(r"INFO django-q \d+ Q Cluster \S+ \[[^\]]+\] running\.")


class QCluster:
    """A real django-q cluster (``manage.py qcluster``) in a process group of its own, its
    output in ``log_path``; ``command`` wraps the argv (to run it on a test machine)."""

    def __init__(
        self,
        log_path: Path,
        env: dict[str, str],
        command: Callable[[list[str]], list[str]] = list,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            command([sys.executable, str(ROOT / "manage.py"), "qcluster"]),
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def running(self) -> bool:
        """Whether the cluster has said it runs (its workers are up and it takes tasks)."""
        return RUNNING_LINE.search(self.output) is not None

    def kill(self) -> None:
        """The machine dies: SIGKILL to every process of the cluster at once."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> None:
        """Ask the cluster to stop, as Ctrl-C would: SIGTERM to its main process only.

        Not to the whole group: django-q's main process stops its workers itself, and one
        whose workers got the signal too can wait for them for ever.
        """
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Terminate, then KILL whatever of the process group is left after a while; the
        log's tail is printed (pytest shows it when the test failed)."""
        self.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()
        print(f"--- {self.log_path.stem} ---\n{self.output[-4000:]}")


@pytest.fixture
def start_qcluster(transactional_db, tmp_path):
    """Start real django-q clusters: ``start_qcluster(**env)``; all are stopped at the end."""
    clusters: list[QCluster] = []

    def start(**env: str) -> QCluster:
        cluster = QCluster(tmp_path / f"qcluster{len(clusters)}.log", process_env(**env))
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


# --- Services a test needs from the machine -------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip for want of something the machine lacks (root, namespaces, Redis).

    With PANEL_TEST_REQUIRE_SERVICES=1 (set by .ci/run) it fails instead: there the service
    is provided, so a skip would hide that the test never ran.
    """
    if os.environ.get("PANEL_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (PANEL_TEST_REQUIRE_SERVICES=1: not skipping)")
    pytest.skip(reason)


REDIS_ADDRESS = ("127.0.0.1", 6379)


@pytest.fixture
def redis_db():
    """``redis_db(N)``: the URL of Redis database N on 127.0.0.1:6379, empty, for this test.

    Each test picks a number no other test uses; a lock keeps a second run of the suite on
    this machine from sharing it meanwhile, and only that database is flushed, before and
    after. Skips when no Redis answers (.ci/run starts one).
    """
    import redis

    from tests.integration.netns import machine_lock

    taken: list[tuple[redis.Redis, ExitStack]] = []

    def use(number: int) -> str:
        url = f"redis://{REDIS_ADDRESS[0]}:{REDIS_ADDRESS[1]}/{number}"
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        try:
            client.ping()
        except redis.RedisError as e:
            unavailable(f"no Redis answers on {REDIS_ADDRESS[0]}:{REDIS_ADDRESS[1]} ({e})")
        stack = ExitStack()
        stack.enter_context(machine_lock(f"redis-db-{number}"))
        taken.append((client, stack))
        client.flushdb()
        return url

    yield use
    for client, stack in taken:
        try:
            client.flushdb()
        finally:
            stack.close()
            client.close()

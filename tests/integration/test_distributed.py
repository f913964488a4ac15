"""Run it the way admins run servers: the queue on Redis when PANEL_REDIS_URL says so, and
several machines, each with its own django-q cluster, sharing one MariaDB (and one Redis),
one of which dies in the middle of its work.

The machines are Linux network namespaces on a bridge (``tests/integration/netns.py``): each
has its own address and host name, reaches the database and Redis only over the bridge, and
reaches the sshd test nodes there too.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ, Schedule, Success

from nodes.choices import NodeStatus, Transport
from nodes.models import Node
from panel.secretkey import new_secret_key
from sync.clock import read_db_now
from sync.models import Node2Sync, Outcome, SyncRun
from sync.schedule import SWEEP_SCHEDULE_NAME, ensure_sweep_schedule
from sync.synchronizers import REGISTRY, unregister_type, update_syncactions
from tests.conftest import manage_ok, process_env, run_manage
from tests.integration.conftest import REDIS_ADDRESS, QCluster, unavailable, wait_for
from tests.integration.distributed_type_names import (
    DIST_NOTE,
    DIST_TYPES,
    DIST_WORK,
    WORK_SECONDS,
)
from tests.integration.netns import (
    BRIDGE_ADDRESS,
    BridgeSSHServer,
    Network,
    TcpRelay,
    machine_lock,
)

pytestmark = pytest.mark.cluster

# Redis database numbers that only these tests use (flushed before and after).
REDIS_DB_ONE_CLUSTER = 13
REDIS_DB_MACHINES = 14

MACHINES = 3
# Every registration is one task per node (REGISTERING_WORKERS), and 12 tasks are more than
# two clusters can hold at once: a cluster takes tasks while it has room, 5 here (2 running,
# 2 in its queue, 1 in its pusher's hand). So whichever machine dies, both others take work.
NODES = 12
REGISTERING_WORKERS = NODES // MACHINES
# Short leases so a dead machine's nodes are free again within seconds; renewed every 2 s.
LEASE_SECONDS = 6
# A machine is killed while every run it has going started less than this long ago: well
# before a run's command can have written its line on the node, so no run is caught between
# that line and the write of its success.
YOUNG_RUN = timedelta(seconds=WORK_SECONDS - 1.5)


def _without_redis_url(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"PANEL_REDIS_URL", "PANEL_REDIS_INSECURE"}
    }
    env.update(extra)
    return env


# --- Choosing the broker --------------------------------------------------------------------

_PRINT_Q_CLUSTER = (
    "import json; from django.conf import settings; print(json.dumps(settings.Q_CLUSTER))"
)


def test_panel_redis_url_makes_redis_the_queue_and_the_database_is_the_default():
    url = "redis://:s3cret@cache.example:6380/4"
    on_redis = run_manage(
        "shell", "-c", _PRINT_Q_CLUSTER, env=_without_redis_url(PANEL_REDIS_URL=url)
    )
    assert on_redis.returncode == 0, on_redis.stderr
    q_cluster = json.loads(on_redis.stdout.strip().splitlines()[-1])
    assert q_cluster["redis"] == url
    assert "orm" not in q_cluster  # django-q would take the ORM broker whenever "orm" is set

    default = run_manage("shell", "-c", _PRINT_Q_CLUSTER, env=_without_redis_url())
    assert default.returncode == 0, default.stderr
    q_cluster = json.loads(default.stdout.strip().splitlines()[-1])
    assert q_cluster["orm"] == "default" and "redis" not in q_cluster


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://cache.example:6379/0", "the scheme is http"),
        # redis-py itself would read this as database 0, another panel's queue perhaps.
        ("redis://:s3cret@cache.example:6379/queue", "the database must be a number"),
        ("redis://cache.example:99999/0", "the address or port cannot be read"),
        ("redis:///0", "the host is missing"),
    ],
)
def test_a_bad_panel_redis_url_stops_the_start_with_one_line_naming_it(url, problem):
    checked = run_manage("check", env=_without_redis_url(PANEL_REDIS_URL=url))
    assert checked.returncode == 2
    assert checked.stderr.count("\n") == 1  # one line, no traceback
    assert checked.stderr.startswith("error: PANEL_REDIS_URL is not a Redis URL")
    assert problem in checked.stderr
    assert "s3cret" not in checked.stderr  # the URL, which may hold a password, is not shown


def test_a_cluster_on_redis_synchronizes_an_added_node(redis_db, start_qcluster, tmp_path):
    """What test_cluster.py does on the database queue, with PANEL_REDIS_URL set for the
    cluster and for the admin's ``addnode``: every type runs once and the node is Ready."""
    env = {
        "PANEL_REDIS_URL": redis_db(REDIS_DB_ONE_CLUSTER),
        # The test's Redis has no password: only this machine's users reach it.
        "PANEL_REDIS_INSECURE": "1",
        "PANEL_NODE_STATE_DIR": str(tmp_path / "state"),
        "PANEL_NODE_RUN_DIR": str(tmp_path / "run"),
    }
    start_qcluster(**env)
    added = run_manage("addnode", "n1", "--local", env=process_env(**env))
    assert added.returncode == 0, added.stdout + added.stderr

    def node_is_ready():
        """node n1 to become ready with every desynchronization done"""
        return (
            Node.objects.filter(name="n1", status=NodeStatus.READY).exists()
            and not Node2Sync.objects.exists()
        )

    wait_for(node_is_ready, timeout=60)
    runs = SyncRun.objects.filter(node__name="n1")
    assert sorted(runs.values_list("action__name", flat=True)) == sorted(REGISTRY)
    assert set(runs.values_list("outcome", flat=True)) == {Outcome.SUCCESS}
    # The tasks went through Redis: the database queue stayed empty, the results were saved.
    assert not OrmQ.objects.exists()

    def results_saved():
        """the cluster to save the node session's task result in the database"""
        return Success.objects.filter(func="sync.tasks.run_node_sessions").exists()

    wait_for(results_saved, timeout=10)


# --- Several panels, one Redis --------------------------------------------------------------


def _sqlite_node_done(path: Path, name: str) -> bool:
    """Whether node ``name`` of the SQLite panel at ``path`` is Ready with nothing left."""
    with sqlite3.connect(path, timeout=20) as db:
        status = db.execute("SELECT status FROM node WHERE name = ?", (name,)).fetchone()
        left = db.execute("SELECT COUNT(*) FROM node2sync").fetchone()[0]
    return bool(status) and status[0] == NodeStatus.READY and left == 0


def test_two_panels_on_one_redis_never_take_each_others_tasks(redis_db, start_qcluster, tmp_path):
    """Two panels (two databases, two secret keys, default queue names) share one Redis
    database. The second panel's cluster runs alone while the first panel registers its node,
    so a shared queue would hand it the first panel's task, which it would drop as badly
    signed. Each panel's cluster converges its own node, promptly (not by the sweep), and
    neither logs a task it could not read."""
    url = redis_db(REDIS_DB_ONE_CLUSTER)
    common = {"PANEL_REDIS_URL": url, "PANEL_REDIS_INSECURE": "1"}  # the test Redis: no password
    first = process_env(
        **common,
        PANEL_NODE_STATE_DIR=str(tmp_path / "state1"),
        PANEL_NODE_RUN_DIR=str(tmp_path / "run1"),
    )
    data = tmp_path / "second"
    second = process_env(
        **common,
        PANEL_DATA_DIR=str(data),
        DATABASE_URL=f"sqlite:///{data / 'panel.sqlite3'}",
        DJANGO_SECRET_KEY=new_secret_key(),
        PANEL_NODE_STATE_DIR=str(tmp_path / "state2"),
        PANEL_NODE_RUN_DIR=str(tmp_path / "run2"),
    )
    second.pop("PANEL_INSTANCE_NAME", None)  # each panel derives its own from its database
    manage_ok("migrate", env=second)

    second_cluster = QCluster(tmp_path / "second-panel.log", second)
    first_cluster = None
    try:
        wait_for(lambda: second_cluster.running, timeout=60)
        added = run_manage("addnode", "a1", "--local", env=first)
        assert added.returncode == 0, added.stdout + added.stderr
        added = run_manage("addnode", "b1", "--local", env=second)
        assert added.returncode == 0, added.stdout + added.stderr

        def second_panel_done():
            """the second panel's node b1 to be Ready with nothing left to do"""
            return _sqlite_node_done(data / "panel.sqlite3", "b1")

        wait_for(second_panel_done, timeout=60)
        first_cluster = start_qcluster(**first)
        wait_for(lambda: first_cluster.running, timeout=60)
        started = time.monotonic()

        def first_panel_done():
            """the first panel's node a1 to be Ready with nothing left to do"""
            return (
                Node.objects.filter(name="a1", status=NodeStatus.READY).exists()
                and not Node2Sync.objects.exists()
            )

        wait_for(first_panel_done, timeout=60)
        # Its own task was waiting for it, not the sweep (about 30 s after a cluster starts).
        assert time.monotonic() - started < 20
    finally:
        second_cluster.stop()
    logs = {"first": first_cluster.output if first_cluster else "", "second": second_cluster.output}
    for panel, output in logs.items():
        assert "Failed to push task to queue" not in output, (panel, output[-3000:])
        assert "BadSignature" not in output, panel
    assert not SyncRun.objects.exclude(outcome=Outcome.SUCCESS).exists()


# --- Several machines -----------------------------------------------------------------------


@pytest.fixture
def network():
    """Three machines on a bridge, removed afterwards (and first, if a crashed run left them)."""
    net = Network(MACHINES)
    if reason := Network.unavailable():
        unavailable(reason)
    with machine_lock("netns"):
        try:
            net.create()
        except RuntimeError as e:
            net.destroy()
            unavailable(f"cannot make network namespaces here: {e}")
        try:
            yield net
        finally:
            net.destroy()


@pytest.fixture
def relays():
    """``relay(target)``: a TcpRelay from the bridge address to ``target``, stopped after."""
    started: list[TcpRelay] = []

    def start(target: tuple[str, int]) -> TcpRelay:
        relay = TcpRelay(BRIDGE_ADDRESS, target).start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def bridge_sshd(sshd):
    """``bridge_sshd()``: a started sshd test node listening on the bridge address."""
    return lambda: sshd(server_class=BridgeSSHServer, address=BRIDGE_ADDRESS)


@pytest.fixture
def dist_types(transactional_db):
    """The test-only types, in this process's registry and in ``syncactions``."""
    import tests.integration.distributed_types as module

    if any(name not in REGISTRY for name in DIST_TYPES):
        importlib.reload(module)  # imported before, then unregistered by a previous test
    update_syncactions()
    yield
    for name in DIST_TYPES:
        unregister_type(name)


def machine_of(worker: str) -> str:
    """The host name in a worker id (``role@HOST:PID:TOKEN``): the machine that ran it."""
    return worker.split("@", 1)[1].split(":", 1)[0]


def _database_over(relay: TcpRelay) -> str:
    s = connection.settings_dict
    user = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"mysql://{user}@{BRIDGE_ADDRESS}:{relay.port}/{s['NAME']}"


def _stop_all(clusters: list[QCluster]) -> None:
    for cluster in clusters:  # all at once: each takes a few seconds to wind down
        cluster.terminate()
    for cluster in clusters:
        cluster.stop()


@pytest.mark.skipif(
    "connection.vendor != 'mysql'",
    reason="several machines share one database server: MariaDB (SQLite is one file on one "
    "machine); run with DATABASE_URL=mysql://...",
)
@pytest.mark.parametrize("broker", ["database", "redis"])
def test_work_goes_on_when_a_machine_dies(
    broker, redis_db, network, relays, bridge_sshd, dist_types, tmp_path
):
    """Three machines, each with a cluster, one database (and one Redis) over the network,
    twelve SSH nodes; the machine that is in the middle of runs is killed (SIGKILL, every
    process of its cluster). Every node converges, every registered run succeeds exactly once
    (in the database and on the node), and the dead machine's runs are recorded as lost and
    finished by the others."""
    db = connection.settings_dict
    db_relay = relays((db["HOST"] or "127.0.0.1", int(db["PORT"] or 3306)))
    env = process_env(
        DATABASE_URL=_database_over(db_relay),
        PANEL_SYNCHRONIZER_MODULES="tests.integration.distributed_types",
        PANEL_LEASE_SECONDS=str(LEASE_SECONDS),
        PANEL_Q_WORKERS="2",
        PANEL_NODE_STATE_DIR=str(tmp_path / "state"),
        PANEL_NODE_RUN_DIR=str(tmp_path / "run"),
    )
    env.pop("PANEL_REDIS_URL", None)
    redis_relay = None
    if broker == "redis":
        redis_db(REDIS_DB_MACHINES)
        redis_relay = relays(REDIS_ADDRESS)
        env["PANEL_REDIS_URL"] = f"redis://{BRIDGE_ADDRESS}:{redis_relay.port}/{REDIS_DB_MACHINES}"
        env["PANEL_REDIS_INSECURE"] = "1"  # the test's Redis has no password
    machines = network.machines
    by_name = {m.name: m for m in machines}

    # A machine's 127.0.0.1 is its own: the database is only reachable over the bridge.
    port = int(db["PORT"] or 3306)
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    probe = subprocess.run(
        machines[0].command([sys.executable, "-c", connect]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode != 0 and "Connection refused" in probe.stderr, probe.stderr

    markers = tmp_path / "markers"
    markers.mkdir()
    nodes = []
    for i in range(NODES):
        server = bridge_sshd()
        nodes.append(
            Node.objects.create(
                name=f"node{i}",
                transport=Transport.SSH,
                host=BRIDGE_ADDRESS,
                port=server.port,
                username="root",
                host_key=server.host_key,
                facts={"marker": str(markers / f"node{i}")},
            )
        )
    # The sweep (recovery of expired leases) is due: each cluster's scheduler takes it about
    # 30 s after the cluster starts, and on MariaDB exactly one cluster gets it.
    ensure_sweep_schedule()
    Schedule.objects.filter(name=SWEEP_SCHEDULE_NAME).update(next_run=timezone.now())

    began = time.monotonic()
    print(f"clusters start at {time.strftime('%H:%M:%S')}")
    clusters = {m.name: QCluster(tmp_path / f"{m.name}.log", env, m.command) for m in machines}
    try:

        def every_cluster_running():
            """every machine's cluster to say it runs, so each can take work from the start"""
            assert all(c.alive for c in clusters.values()), "a cluster exited"
            return all(c.running for c in clusters.values())

        wait_for(every_cluster_running, timeout=120, interval=0.2)
        print(f"{time.monotonic() - began:.1f} s: every cluster runs")
        # An admin on each machine registers the work for a third of the nodes, all at once.
        # The registering processes count on more workers than the clusters have: their
        # kick makes one task per node.
        admin_env = {**env, "PANEL_Q_WORKERS": str(REGISTERING_WORKERS)}
        commands = [
            machine.manage(
                "desync",
                *(n.name for n in nodes[i::MACHINES]),
                *("--action", DIST_WORK, "--action", DIST_NOTE),
                env=admin_env,
            )
            for i, machine in enumerate(machines)
        ]

        def a_machine_in_the_middle_of_runs():
            """a machine to be running dist-work runs that all started moments ago"""
            now = read_db_now()
            running: dict[str, list[tuple[int, str, timedelta]]] = {}
            for run_id, worker, action, started in SyncRun.objects.filter(
                outcome=Outcome.RUNNING
            ).values_list("pk", "worker", "action__name", "started_at"):
                running.setdefault(machine_of(worker), []).append((run_id, action, now - started))
            young = {
                machine: runs
                for machine, runs in running.items()
                if all(action == DIST_WORK and age < YOUNG_RUN for _, action, age in runs)
            }
            if not young:
                return None
            machine = max(young, key=lambda m: len(young[m]))
            return machine, [run_id for run_id, _, _ in young[machine]]

        # Watched while the commands still run: the first runs start as soon as a command
        # has committed, and the window to kill a machine in the middle of them is short.
        victim, interrupted = wait_for(a_machine_in_the_middle_of_runs, timeout=90, interval=0.05)
        held = set(
            Node.objects.filter(lease_owner__contains=f"@{victim}:").values_list("pk", flat=True)
        )
        clusters[victim].kill()
        print(f"{time.monotonic() - began:.1f} s: killed {victim}, which held {len(held)} nodes")
        assert held, "the machine killed held no node lease"
        for command in commands:
            out, _ = command.communicate(timeout=120)
            assert command.returncode == 0, out

        def converged():
            """every node to be Ready with nothing left to do and no run in progress"""
            return (
                not Node2Sync.objects.exists()
                and not Node.objects.exclude(status=NodeStatus.READY).exists()
                and not SyncRun.objects.filter(outcome=Outcome.RUNNING).exists()
            )

        wait_for(converged, timeout=120, interval=0.5)
        print(f"{time.monotonic() - began:.1f} s: every node converged")
        survivors = [c for name, c in clusters.items() if name != victim]
        assert all(c.alive for c in survivors)
    finally:
        _stop_all(list(clusters.values()))
        print(f"{time.monotonic() - began:.1f} s: every cluster stopped")

    assert not Node.objects.exclude(lease_owner="").exists()
    runs = list(
        SyncRun.objects.filter(action__name__in=DIST_TYPES)
        .order_by("started_at", "pk")
        .values("pk", "node_id", "action__name", "worker", "outcome", "started_at", "log")
    )
    assert {r["outcome"] for r in runs} <= {Outcome.SUCCESS, Outcome.LOST}

    # Each registration ran to success exactly once, in the database and on the node.
    successes = Counter(
        (r["node_id"], r["action__name"]) for r in runs if r["outcome"] == Outcome.SUCCESS
    )
    assert successes == {(n.pk, t): 1 for n in nodes for t in DIST_TYPES}
    for node in nodes:
        lines = Path(node.facts["marker"]).read_text().splitlines()
        assert lines == [DIST_WORK, DIST_NOTE], (node.name, lines)

    # The runs the dead machine had going were recorded as lost, recovered by another
    # machine, and done again there.
    lost = [r for r in runs if r["outcome"] == Outcome.LOST]
    assert lost and set(interrupted) <= {r["pk"] for r in lost}
    for run in lost:
        assert machine_of(run["worker"]) == victim
        assert run["node_id"] in held
        recovered_by = re.search(r"expired at .*; recovered by (\S+),", run["log"])
        assert recovered_by, run["log"]
        assert machine_of(recovered_by.group(1)) in by_name.keys() - {victim}
        [done] = [
            r
            for r in runs
            if r["node_id"] == run["node_id"]
            and r["action__name"] == run["action__name"]
            and r["outcome"] == Outcome.SUCCESS
        ]
        assert machine_of(done["worker"]) != victim
        assert done["started_at"] > run["started_at"]
    assert len({machine_of(r["worker"]) for r in runs if r["outcome"] == Outcome.SUCCESS}) >= 2

    # Every machine reached the database (and Redis) through the bridge, from its own address.
    addresses = {m.address for m in machines}
    assert db_relay.peers == addresses
    if redis_relay:
        assert redis_relay.peers == addresses

"""scale: a simulated fleet of 10,000 nodes converged from registration to all Ready through the
running cluster, every built-in type, real role data.

    .venv/bin/python -m bench.scale                       # MariaDB (panel_bench), 10,000 nodes
    .venv/bin/python -m bench.scale --nodes 1000 --rtt-ms 20 --command-ms 2

The nodes are simulated (``nodes/transports/sim.py``, selected by ``PANEL_SIM_TRANSPORT``):
each command costs a round trip and a per-command time, and each node keeps its packages,
users, services and files on disk, so the synchronizers do their real work against it. Four
roles, each with two packages, two files (one of them a service's), one user with an SSH key
and one service; each node has one role. Printed: the time from registration to every node
Ready with nothing left to do, runs per second, the engine's queries per run (counted in this
process on a sample of the same nodes), one sweep over the converged fleet and the node list
page (``/nodes/``, median of 5) at that size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

from bench.common import (
    BENCH_DIR,
    MARIADB_URL,
    counted,
    database_name,
    setup_django,
    start_cluster,
    stop_process_group,
)

ROLES = {
    "web": (["nginx", "curl"], "nginx"),
    "db": (["mariadb-server", "rsync"], "mariadb"),
    "mail": (["postfix", "dovecot-imapd"], "postfix"),
    "dns": (["bind9", "dnsutils"], "named"),
}
def wait_until(predicate, timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("gave up waiting")
        time.sleep(every)


def role_data() -> None:
    """Each role's packages, files, user and service, as an admin would enter them."""
    import asyncssh

    from nodes.models import Role
    from sync.synchronizers.files import ManagedFile
    from sync.synchronizers.services import Service
    from sync.synchronizers.software import Package
    from sync.synchronizers.users import ManagedUser

    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    for name, (packages, service) in ROLES.items():
        role = Role.objects.create(name=name)
        for package in packages:
            Package.objects.create(name=package).roles.add(role)
        conf = ManagedFile.objects.create(path=f"/etc/{service}/panel.conf", content=f"{name}\n")
        motd = ManagedFile.objects.create(path=f"/etc/motd.d/{name}", content=f"a {name} node\n")
        for managed in (conf, motd):
            managed.roles.add(role)
        ManagedUser.objects.create(name=f"{name}admin", authorized_keys=key).roles.add(role)
        service_row = Service.objects.create(name=service)
        service_row.roles.add(role)
        service_row.files.add(conf)


def make_nodes(count: int, prefix: str = "sim") -> list[int]:
    from nodes.choices import Transport
    from nodes.models import Node, Role

    Node.objects.bulk_create(
        (
            Node(name=f"{prefix}{i:05d}", transport=Transport.SSH, host=f"{prefix}{i:05d}.test")
            for i in range(count)
        ),
        batch_size=1000,
    )
    ids = list(Node.objects.filter(name__startswith=prefix).values_list("pk", flat=True))
    roles = list(Role.objects.order_by("pk"))
    through = Node.roles.through
    links = (through(node_id=n, role_id=roles[i % len(roles)].pk) for i, n in enumerate(ids))
    through.objects.bulk_create(links, batch_size=2000)
    return ids


def queries_per_run(action_ids: list[int]) -> tuple[float, float]:
    """Queries and commits per run of the engine, on 25 nodes converged in this process."""
    from sync.engine import register_desync, run_nodes
    from sync.models import SyncRun

    sample = make_nodes(25, prefix="sample")
    register_desync(sample, action_ids)
    before = SyncRun.objects.count()
    with counted() as counts:
        run_nodes(sample)
    runs = SyncRun.objects.count() - before
    return counts["queries"] / runs, counts["commits"] / runs


def list_page_ms() -> float:
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.create_superuser("bench", password="bench-password"))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        response = client.get("/nodes/")
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=MARIADB_URL)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rtt-ms", type=float, default=20, help="each round trip")
    parser.add_argument("--command-ms", type=float, default=2, help="each command, on top")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="node sessions per worker (PANEL_BATCH_SIZE)"
    )
    args = parser.parse_args()
    if args.batch_size:
        os.environ["PANEL_BATCH_SIZE"] = str(args.batch_size)
    sim_dir = BENCH_DIR / "sim"
    shutil.rmtree(sim_dir, ignore_errors=True)
    os.environ["PANEL_SIM_TRANSPORT"] = (
        f"dir={sim_dir},rtt_ms={args.rtt_ms:g},command_ms={args.command_ms:g}"
    )
    os.environ["PANEL_PROBE_SECONDS"] = "86400"  # no health probes meanwhile
    setup_django(args.database_url)
    from django.db import connection

    from nodes.choices import NodeStatus
    from nodes.models import Node
    from sync.engine import register_desync, sweep
    from sync.models import Node2Sync, Outcome, SyncAction, SyncRun
    from sync.synchronizers import REGISTRY

    role_data()
    types = [name for name in REGISTRY if not name.startswith("bench-")]
    actions = list(SyncAction.objects.filter(name__in=types).values_list("pk", flat=True))
    per_run, commits_per_run = queries_per_run(actions)
    Node.objects.all().delete()
    ids = make_nodes(args.nodes)
    runs = len(ids) * len(actions)
    connection.close()
    cluster = start_cluster(args.workers)
    try:
        started = time.monotonic()
        register_desync(ids, actions)
        wait_until(lambda: not Node2Sync.objects.exists(), args.timeout)
        converged = time.monotonic() - started
    finally:
        stop_process_group(cluster)
    ok = SyncRun.objects.filter(outcome=Outcome.SUCCESS).count()
    not_ready = Node.objects.exclude(status=NodeStatus.READY).count()
    failed = SyncRun.objects.exclude(outcome=Outcome.SUCCESS).count()
    with counted() as sweep_counts:
        swept = time.perf_counter()
        sweep()
        sweep_ms = (time.perf_counter() - swept) * 1000
    page_ms = list_page_ms()
    print(
        f"scale: database {database_name()}, {args.workers} django-q workers, {len(ids)} "
        f"simulated nodes x {len(actions)} types ({', '.join(sorted(types))}), round trip "
        f"{args.rtt_ms:g} ms, command {args.command_ms:g} ms, "
        f"{os.environ.get('PANEL_BATCH_SIZE', 25)} node sessions per worker"
    )
    print("| what | value |")
    print("|---|---|")
    print(f"| registration to all Ready | {converged:.1f} s |")
    print(f"| runs (successful / failed) | {ok} / {failed} (expected {runs}) |")
    print(f"| runs per second | {runs / converged:.0f} |")
    print(f"| engine queries per run (25-node sample) | {per_run:.1f} |")
    print(f"| engine commits per run (25-node sample) | {commits_per_run:.2f} |")
    print(f"| nodes not Ready at the end | {not_ready} |")
    swept_queries = sweep_counts["queries"]
    print(f"| sweep of the converged fleet | {sweep_ms:.0f} ms, {swept_queries} queries |")
    print(f"| `/nodes/` at {len(ids)} nodes (median of 5) | {page_ms:.0f} ms |")


if __name__ == "__main__":
    main()

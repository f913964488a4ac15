"""dispatch: synchronizer runs per second with no-op types, beside raw django-q2 no-op tasks on
the same broker and workers, and beside the database's own ceiling, in the same run.

    .venv/bin/python -m bench.dispatch     # MariaDB (panel_bench), 2 workers

Six types per node (``bench.bench_types.DISPATCH_TYPES``, one of them not Ready-state), so a
node session runs six types in order as a real node does. The database's ceiling is measured
first: single-row commits per second from as many processes as the cluster has workers; the
engine's rate is given as a share of it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from bench.common import (
    MARIADB_URL,
    counted,
    database_name,
    setup_django,
    start_cluster,
    stop_process_group,
)


def wait_until(predicate, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("gave up waiting")
        time.sleep(0.02)


def _commit_loop(row: int, seconds: float, counts) -> None:
    """One process: single-row UPDATEs, each its own transaction (autocommit), for a while."""
    from django.db import connection

    connection.close()  # a connection of this process's own, not the parent's
    done = 0
    with connection.cursor() as cursor:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            cursor.execute("UPDATE bench_ceiling SET v = v + 1 WHERE id = %s", [row])
            done += 1
    counts[row] = done
    connection.close()


def database_ceiling(processes: int, seconds: float = 5.0) -> float:
    """Single-row commits per second the database takes from ``processes`` processes."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_ceiling")
        cursor.execute("CREATE TABLE bench_ceiling (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        for i in range(processes):
            cursor.execute("INSERT INTO bench_ceiling (id, v) VALUES (%s, 0)", [i])
    connection.close()
    counts = multiprocessing.Manager().dict()
    workers = [
        multiprocessing.Process(target=_commit_loop, args=(i, seconds, counts))
        for i in range(processes)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_ceiling")
    return sum(counts.values()) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=MARIADB_URL)
    parser.add_argument("--count", type=int, default=1000, help="nodes (six runs each)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # No health probes meanwhile: the sweep would register one for every quiet node.
    os.environ["PANEL_PROBE_SECONDS"] = "86400"
    setup_django(args.database_url)
    from django.db import connection
    from django_q.models import Task
    from django_q.tasks import async_task

    from bench.bench_types import DISPATCH_TYPES
    from nodes.choices import Transport
    from nodes.models import Node
    from sync.engine import register_desync, run_nodes
    from sync.models import Node2Sync, Outcome, SyncAction, SyncRun

    ceiling = database_ceiling(args.workers)
    n = args.count
    Node.objects.bulk_create(
        (Node(name=f"noop{i:05d}", transport=Transport.LOCAL) for i in range(n)), batch_size=1000
    )
    nodes = list(Node.objects.values_list("pk", flat=True))
    actions = list(SyncAction.objects.filter(name__in=DISPATCH_TYPES))
    assert len(actions) == len(DISPATCH_TYPES)
    runs = n * len(actions)
    connection.close()
    cluster = start_cluster(args.workers)
    try:
        started = time.monotonic()
        for _ in range(runs):
            async_task("bench.bench_types.noop_task")
        wait_until(lambda: Task.objects.filter(func="bench.bench_types.noop_task").count() >= runs)
        raw = runs / (time.monotonic() - started)

        started = time.monotonic()
        register_desync(nodes, actions)
        wait_until(lambda: not Node2Sync.objects.exists())
        syncs = runs / (time.monotonic() - started)
        ran = SyncRun.objects.filter(action__in=actions, outcome=Outcome.SUCCESS).count()
        assert ran == runs, (ran, runs)
    finally:
        stop_process_group(cluster)
    # What a run costs the database, counted in this process on 25 more nodes.
    Node.objects.bulk_create(
        Node(name=f"sample{i:02d}", transport=Transport.LOCAL) for i in range(25)
    )
    sample = list(Node.objects.filter(name__startswith="sample").values_list("pk", flat=True))
    register_desync(sample, actions)
    with counted() as counts:
        run_nodes(sample)
    sampled = len(sample) * len(actions)
    assert not Node2Sync.objects.exists()
    print(
        f"dispatch: database {database_name()}, {args.workers} django-q workers, {n} nodes x "
        f"{len(actions)} types = {runs} runs, as many raw tasks"
    )
    print("| what | per second | / raw tasks | / database ceiling |")
    print("|---|---|---|---|")
    print(f"| database ceiling: single-row commits, {args.workers} processes | {ceiling:.0f} | "
          f"{ceiling / raw:.2f} | 1 |")  # fmt: skip
    print(f"| raw django-q2 no-op tasks (`async_task`) | {raw:.0f} | 1 | {raw / ceiling:.3f} |")
    print(
        f"| no-op synchronizer runs ({len(actions)} types x {n} nodes) | {syncs:.0f} | "
        f"{syncs / raw:.2f} | {syncs / ceiling:.3f} |"
    )
    print(
        f"\nEngine queries per run: {counts['queries'] / sampled:.1f}, commits per run: "
        f"{counts['commits'] / sampled:.2f} (25 nodes x {len(actions)} types, one `run_nodes`)"
    )


if __name__ == "__main__":
    main()

"""dispatch: synchronizers per second with a no-op type, beside raw django-q2 no-op tasks on
the same broker and workers, in the same run.

    .venv/bin/python -m bench.dispatch     # MariaDB (panel_bench), 2 workers

Goal: at least 0.8 times the raw tasks' rate.
"""

from __future__ import annotations

import argparse
import time

from bench.common import MARIADB_URL, database_name, setup_django, start_cluster, stop_process_group


def wait_until(predicate, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("gave up waiting")
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=MARIADB_URL)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    setup_django(args.database_url)
    from django_q.models import Task
    from django_q.tasks import async_task

    from nodes.choices import Transport
    from nodes.models import Node
    from sync.engine import register_desync
    from sync.models import Node2Sync, SyncAction, SyncRun

    n = args.count
    Node.objects.bulk_create(
        (Node(name=f"noop{i:05d}", transport=Transport.LOCAL) for i in range(n)), batch_size=1000
    )
    nodes = list(Node.objects.values_list("pk", flat=True))
    action = SyncAction.objects.get(name="bench-noop")
    cluster = start_cluster(args.workers)
    try:
        started = time.monotonic()
        for _ in range(n):
            async_task("bench.bench_types.noop_task")
        wait_until(lambda: Task.objects.filter(func="bench.bench_types.noop_task").count() >= n)
        raw = n / (time.monotonic() - started)

        started = time.monotonic()
        register_desync(nodes, [action])
        wait_until(lambda: not Node2Sync.objects.exists())
        syncs = n / (time.monotonic() - started)
        assert SyncRun.objects.filter(outcome="success").count() == n
    finally:
        stop_process_group(cluster)
    print(f"dispatch: database {database_name()}, {args.workers} django-q workers, {n} each")
    print("| what | per second | ratio |")
    print("|---|---|---|")
    print(f"| raw django-q2 no-op tasks (`async_task`) | {raw:.0f} | 1 |")
    print(f"| no-op synchronizers (registered for {n} nodes) | {syncs:.0f} | {syncs / raw:.2f} |")


if __name__ == "__main__":
    main()

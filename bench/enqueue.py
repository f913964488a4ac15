"""enqueue: putting N tasks on django-q's ORM broker, one ``async_task`` each or in one INSERT.

    .venv/bin/python -m bench.enqueue                                  # MariaDB (panel_bench)
    .venv/bin/python -m bench.enqueue --sqlite                         # SQLite (var/bench/)

The sweep of a large fleet enqueues one task per batch of nodes (400 tasks for 10,000 nodes,
25 nodes a batch) in autocommit mode, as the Schedule's task runs it; so does the commit of a
registration for many nodes. Both ways are timed in the same run, on the same database, with
the same payloads: django-q2's ``async_task`` once per task (one INSERT and one commit each),
and ``sync.queue.enqueue_calls`` (the packages ``async_task`` builds, written in one INSERT).
No cluster runs: only the enqueueing is measured, median of ``--rounds``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from bench.common import MARIADB_URL, database_name, setup_django

FUNC = "sync.tasks.run_node_sessions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=MARIADB_URL)
    parser.add_argument("--sqlite", action="store_true", help="the panel's SQLite instead")
    parser.add_argument("--count", type=int, action="append", help="tasks (50, 500, 2000)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    setup_django(None if args.sqlite else args.database_url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from sync.queue import enqueue_calls

    def one_by_one(arg_lists: list[tuple]) -> None:
        for call_args in arg_lists:
            async_task(FUNC, *call_args, task_name="sync")

    def in_bulk(arg_lists: list[tuple]) -> None:
        enqueue_calls(FUNC, arg_lists)

    def measure(way: Callable[[list[tuple]], None], count: int) -> tuple[float, int]:
        arg_lists = [(list(range(i * 25, i * 25 + 25)),) for i in range(count)]
        times, queries = [], 0
        for _ in range(args.rounds):
            OrmQ.objects.all().delete()
            connection.queries_log.clear()
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                way(arg_lists)
                times.append((time.perf_counter() - started) * 1000)
            queries = len(captured)
            assert OrmQ.objects.count() == count
        OrmQ.objects.all().delete()
        return statistics.median(times), queries

    print(f"enqueue: database {database_name()}, autocommit, median of {args.rounds} rounds")
    print("| tasks | async_task ms | queries | one INSERT ms | queries | async_task / INSERT |")
    print("|---|---|---|---|---|---|")
    for count in args.count or [50, 500, 2000]:
        each_ms, each_q = measure(one_by_one, count)
        bulk_ms, bulk_q = measure(in_bulk, count)
        print(
            f"| {count} | {each_ms:.0f} | {each_q} | {bulk_ms:.0f} | {bulk_q} "
            f"| {each_ms / bulk_ms:.1f} |"
        )


if __name__ == "__main__":
    main()

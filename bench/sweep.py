"""sweep: the safety net's cost with 10 and 10,000 nodes that all have due work.

    .venv/bin/python -m bench.sweep        # MariaDB (panel_bench)

Goal: a fixed number of queries, not one per node.
"""

from __future__ import annotations

import argparse
import time

from bench.common import MARIADB_URL, database_name, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=MARIADB_URL)
    args = parser.parse_args()
    setup_django(args.database_url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_q.models import OrmQ

    from nodes.choices import Transport
    from nodes.models import Node
    from sync.engine import register_desync, sweep
    from sync.models import SyncAction

    action = SyncAction.objects.get(name="bench-noop")
    print(f"sweep: database {database_name()}, every node has due work and no lease")
    print("| nodes | sweep ms | queries | tasks enqueued |")
    print("|---|---|---|---|")
    for count in (10, 10_000):
        Node.objects.all().delete()
        Node.objects.bulk_create(
            (Node(name=f"sweep{i:05d}", transport=Transport.LOCAL) for i in range(count)),
            batch_size=1000,
        )
        register_desync(list(Node.objects.values_list("pk", flat=True)), [action])
        OrmQ.objects.all().delete()
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            result = sweep()
            elapsed = (time.perf_counter() - started) * 1000
        assert result["enqueued"] == count
        print(f"| {count} | {elapsed:.0f} | {len(queries)} | {OrmQ.objects.count()} |")


if __name__ == "__main__":
    main()

"""dashboard: the Cluster nodes page with 10,000 nodes and 100,000 desynchronizations.

Server time (the Django test client, whole middleware stack) and SQL query count of
``/nodes/`` and of its live poll ``/nodes/live/``, beside two minimal logged-in Django views in
the same run (one answering ``ok``, one listing the same 50 nodes in a bare template), and the
query count for 10 nodes.

    .venv/bin/python -m bench.dashboard            # MariaDB (panel_bench), as the goal says

Goals: the same query count as for 10 nodes; under 5 times the minimal view (see
docs/PERFORMANCE.md for which yardstick that can mean).
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import MARIADB_URL, database_name, setup_django

REPEATS = 15


def fill(nodes: int, types: int) -> None:
    from nodes.choices import NodeStatus, Transport
    from nodes.models import Node
    from sync.engine import register_desync
    from sync.models import SyncAction

    Node.objects.all().delete()
    SyncAction.objects.filter(name__startswith="bench-dash-").delete()
    actions = SyncAction.objects.bulk_create(
        SyncAction(
            name=f"bench-dash-{i}",
            title=f"Dash {i}",
            priority=2000 + i,
            node_status=NodeStatus.SYNCHRONIZING if i % 2 else NodeStatus.READY,
            timeout=60,
        )
        for i in range(types)
    )
    actions = list(SyncAction.objects.filter(name__startswith="bench-dash-"))
    Node.objects.bulk_create(
        (
            Node(
                name=f"dash{i:05d}",
                transport=Transport.SSH,
                host=f"10.0.{i // 250}.{i % 250}",
                last_error="Files: command `x` exited with 1" if i % 7 == 0 else "",
            )
            for i in range(nodes)
        ),
        batch_size=1000,
    )
    ids = list(Node.objects.values_list("pk", flat=True))
    for i in range(0, len(ids), 2000):
        register_desync(ids[i : i + 2000], actions)


def measure(client, url: str) -> tuple[float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times = []
    queries = 0
    for _ in range(REPEATS):
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
        assert response.status_code in (200, 204, 286), (url, response.status_code)
        queries = len(ctx.captured_queries)
    return statistics.median(times) * 1000, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=MARIADB_URL)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--types", type=int, default=10)
    args = parser.parse_args()
    setup_django(args.database_url)
    from django.contrib.auth.models import User
    from django.test import Client, override_settings

    from sync.models import Node2Sync

    user = User.objects.create_superuser("bench", password="bench-password")
    client = Client()
    client.force_login(user)
    print(f"dashboard: database {database_name()}, median of {REPEATS} requests, test client")
    print("| nodes | desyncs | URL | ms | queries | / minimal view | / minimal list |")
    print("|---|---|---|---|---|---|---|")
    with override_settings(ROOT_URLCONF="bench.urls"):
        for nodes in (10, args.nodes):
            started = time.perf_counter()
            fill(nodes, args.types)
            filled = time.perf_counter() - started
            desyncs = Node2Sync.objects.count()
            empty_ms, empty_q = measure(client, "/bench/minimal/")
            list_ms, list_q = measure(client, "/bench/minimal-list/")
            rows = [
                ("minimal view (`ok`)", empty_ms, empty_q),
                ("minimal list of 50 nodes", list_ms, list_q),
            ]
            for url in ("/nodes/", "/nodes/live/", "/nodes/?status=synchronizing&sort=-pending"):
                ms, queries = measure(client, url)
                rows.append((f"`{url}`", ms, queries))
            for label, ms, queries in rows:
                print(
                    f"| {nodes} | {desyncs} | {label} | {ms:.1f} | {queries} | "
                    f"{ms / empty_ms:.1f} | {ms / list_ms:.2f} |",
                    flush=True,
                )
            print(f"(registering {desyncs} desynchronizations took {filled:.1f} s)")


if __name__ == "__main__":
    main()

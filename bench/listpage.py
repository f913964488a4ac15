"""listpage: the Cluster nodes list at 10,000 nodes against a bare 50-row list of the same nodes.

A fresh database gets 10,000 nodes with their facts columns, roles, some errors and
conditions, and desynchronizations registered through the engine (so each node's stored
count is the engine's own): between 0 and ``--types`` per node. Then, in the same run, the
server time (the Django test client: the whole middleware stack, no network) and the query
count of the list's first page with its default sort, sorted by pending count, sorted by a
fact, and filtered, each beside a bare list of the same 50 nodes in a one-line template.

    .venv/bin/python -m bench.listpage                 # MariaDB (panel_bench)
    .venv/bin/python -m bench.listpage --database-url sqlite:///var/bench/list.sqlite3

Goal: every list URL within 3 times the bare list. The rows a page shows are cached per
process under the values they show (web/rows.py); each URL is measured as a person viewing a
page sees it (rows seen before) and with the rows' cache emptied before every request (as if
every row had changed), each request in turn with one of the bare list, so that both meet
the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import MARIADB_URL, database_name, setup_django

REPEATS = 21
GOAL = 3.0
BARE = "/bench/minimal-list/"

URLS = [
    ("first page, default sort", "/nodes/"),
    ("sorted by pending count", "/nodes/?sort=-pending"),
    ("sorted by memory", "/nodes/?sort=-memory"),
    ("filtered by status, by pending", "/nodes/?status=synchronizing&sort=-pending"),
    ("filtered by role and error", "/nodes/?role=web&has_error=true"),
    ("searched", "/nodes/?q=node-07"),
    ("live poll (nothing changed)", None),
]


def fill(nodes: int, types: int) -> float:
    """The fleet; returns the seconds registering the desynchronizations took."""
    from django.utils import timezone

    from nodes.choices import NodeStatus, Transport
    from nodes.models import Node, Role
    from sync.engine import register_desync
    from sync.models import SyncAction

    actions = list(
        SyncAction.objects.bulk_create(
            SyncAction(
                name=f"bench-list-{i}",
                title=f"List {i}",
                priority=2000 + i,
                node_status=NodeStatus.SYNCHRONIZING if i % 2 else NodeStatus.READY,
                timeout=60,
            )
            for i in range(types)
        )
    )
    actions = list(SyncAction.objects.filter(name__startswith="bench-list-").order_by("priority"))
    roles = [Role.objects.create(name=n) for n in ("web", "db", "mail", "dns")]
    now = timezone.now()
    oses = ["Debian GNU/Linux 12 (bookworm)", "Ubuntu 24.04.1 LTS", "AlmaLinux 9.5 (Teal Serval)"]
    made = Node.objects.bulk_create(
        (
            Node(
                name=f"node-{i:05d}",
                transport=Transport.SSH,
                host=f"10.{i // 62500}.{i // 250 % 250}.{i % 250}",
                last_error="Files: command `install` exited with 1" if i % 7 == 0 else "",
                os_name=oses[i % 3],
                kernel=f"6.1.0-{i % 30}-amd64",
                cpus=2 ** (i % 6),
                memory_mb=1024 * (1 + i % 128),
                disk_free_mb=97 * (i % 5000),
                booted_at=now - timezone.timedelta(hours=i % 2000),
                facts_at=now,
            )
            for i in range(nodes)
        ),
        batch_size=1000,
    )
    through = Node.roles.through
    through.objects.bulk_create(
        (through(node_id=n.pk, role_id=roles[i % 4].pk) for i, n in enumerate(made)),
        batch_size=5000,
    )
    ids = list(Node.objects.order_by("pk").values_list("pk", flat=True))
    started = time.perf_counter()
    # Node i gets i % (types + 1) types: every count from 0 to ``types``.
    for k in range(1, types + 1):
        chosen = [pk for i, pk in enumerate(ids) if i % (types + 1) >= k]
        for j in range(0, len(chosen), 2000):
            register_desync(chosen[j : j + 2000], [actions[k - 1]])
    return time.perf_counter() - started


def measure(client, url: str, cold: bool = False, **headers) -> tuple[float, float, int]:
    """Median server time (ms) of ``url`` and of the bare list, requested in turn so that both
    meet the same load, and the query count of ``url``. ``cold`` empties the rows' cache
    before each request (every row rendered, as after every row changed)."""
    from django.core.cache import caches
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url, headers=headers)  # warm: template loading, the session
    times, bare_times = [], []
    queries = 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        client.get(BARE)
        bare_times.append(time.perf_counter() - started)
        if cold:
            caches["rows"].clear()
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            response = client.get(url, headers=headers)
            times.append(time.perf_counter() - started)
        assert response.status_code in (200, 204, 286), (url, response.status_code)
        queries = len(ctx.captured_queries)
    return statistics.median(times) * 1000, statistics.median(bare_times) * 1000, queries


def live_url(client) -> str:
    """The page's own poll URL, with the fingerprint of what it shows (answered with 204)."""
    import html
    import re

    page = client.get("/nodes/").content.decode()
    return html.unescape(re.search(r'id="live-poll"[^>]*hx-get="([^"]+)"', page).group(1))


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

    filled = fill(args.nodes, args.types)
    desyncs = Node2Sync.objects.count()
    user = User.objects.create_superuser("bench", password="bench-password")
    client = Client()
    client.force_login(user)
    print(
        f"listpage: {database_name()}, {args.nodes} nodes, {desyncs} desynchronizations "
        f"(registered in {filled:.1f} s), median of {REPEATS} requests, test client"
    )
    print(
        "| page | URL | queries | ms | bare list ms | / bare list | goal (3x) "
        "| ms, no row cached | / bare list |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    worst = worst_cold = 0.0
    with override_settings(ROOT_URLCONF="bench.urls"):
        for label, url in URLS:
            headers = {}
            if url is None:
                url, headers = live_url(client), {"HX-Request": "true"}
            ms, bare_ms, queries = measure(client, url, **headers)
            cold_ms, cold_bare_ms, _ = measure(client, url, cold=True, **headers)
            ratio, cold_ratio = ms / bare_ms, cold_ms / cold_bare_ms
            worst, worst_cold = max(worst, ratio), max(worst_cold, cold_ratio)
            shown = url if len(url) < 60 else url.split("?")[0] + "?…"
            print(
                f"| {label} | `{shown}` | {queries} | {ms:.1f} | {bare_ms:.1f} | {ratio:.2f} | "
                f"{'met' if ratio <= GOAL else 'not met'} | {cold_ms:.1f} | {cold_ratio:.2f} |",
                flush=True,
            )
    print(
        f"worst ratio {worst:.2f} (goal {GOAL:.0f}: {'met' if worst <= GOAL else 'not met'}); "
        f"with no row cached {worst_cold:.2f}"
    )


if __name__ == "__main__":
    main()

"""probe: what the health probe costs for a fleet of N quiet nodes, once per probe interval.

N real sshd nodes on loopback. One health pass (``engine.check_health``: register the probe
for every node not heard from within ``PANEL_PROBE_SECONDS``) and the probe sessions it starts
(run here in this process, on one event loop, as one django-q task would), timed and measured
in CPU seconds of the panel process and of the sshd processes, plus the database rows written.

    .venv/bin/python -m bench.probe --nodes 50
    DATABASE_URL=mysql://root@127.0.0.1:3306/panel_bench .venv/bin/python -m bench.probe
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from bench.common import database_name, setup_django


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    setup_django(args.database_url)

    from nodes.keys import panel_public_key
    from nodes.models import Node
    from sync.engine import check_health, due_node_ids, run_nodes
    from sync.models import SyncRun
    from tools.sshd import SSHServer

    with tempfile.TemporaryDirectory(prefix="probe-bench-") as tmp:
        servers = [
            SSHServer(Path(tmp) / f"sshd{i}", panel_public_key()).start() for i in range(args.nodes)
        ]
        try:
            Node.objects.bulk_create(
                Node(
                    name=f"p{i}",
                    transport="ssh",
                    host="127.0.0.1",
                    port=s.port,
                    host_key=s.host_key,
                )
                for i, s in enumerate(servers)
            )
            for attempt in ("first pass", "second pass"):
                Node.objects.update(last_contact_at=None)
                runs_before = SyncRun.objects.count()
                cpu, children, started = _self_cpu(), _children_cpu(), time.monotonic()
                registered = check_health()["probed"]
                results = run_nodes(due_node_ids())
                wall = time.monotonic() - started
                cpu, children = _self_cpu() - cpu, _children_cpu() - children
                ok = sum(r.completed for r in results)
                print(
                    f"{database_name()}, {args.nodes} nodes, {attempt}: registered {registered}, "
                    f"{ok} probes succeeded in {wall:.2f} s wall, panel CPU {cpu:.2f} s "
                    f"({cpu / max(ok, 1) * 1000:.0f} ms per node), "
                    f"{SyncRun.objects.count() - runs_before} run rows"
                )
            print(
                f"At the default interval (60 s) the probe keeps about {cpu / 60 * 100:.1f} % "
                "of one panel core busy for this fleet; the history keeps the last "
                "SYNC['runs_kept_per_type'] runs of each node and type."
            )
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()

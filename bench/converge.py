"""converge: how fast a fleet of remote nodes gets the same five command steps.

N real sshd nodes on loopback, each behind a relay that delays every packet by 50 ms each way
(``bench/delay_proxy.py``), because real nodes are remote. Side by side, in one run and through
the same relays:

- the panel: a synchronizer type with the five steps, registered for every node, timed from the
  registration to every node ``ready`` through a running django-q cluster;
- ``ansible-playbook`` doing the same five steps (pipelining on, forks = N);
- a bare asyncssh script (one connection per node, all nodes at once): the floor.

    .venv/bin/python -m bench.converge --nodes 10 --nodes 50

Goals: at least 2.5 times faster than Ansible with pipelining, within 1.3 times the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    BENCH_DIR,
    ROOT,
    database_name,
    setup_django,
    start_cluster,
    stop_process_group,
)

ANSIBLE_VENV = BENCH_DIR / "ansible-venv"
STEPS = [
    ["uname", "-r"],
    ["cat", "/proc/loadavg"],
    ["test", "-d", "/tmp"],
    ["echo", "converged"],
    ["id", "-u"],
]


class Fleet:
    """N sshd nodes and their delaying relays."""

    def __init__(self, n: int, delay_ms: float, workdir: Path) -> None:
        from nodes.keys import panel_public_key
        from tools.sshd import SSHServer, free_port

        self.servers = [
            SSHServer(workdir / f"sshd{i}", panel_public_key()).start() for i in range(n)
        ]
        self.ports = [free_port() for _ in range(n)]
        pairs = [f"{p}:{s.port}" for p, s in zip(self.ports, self.servers, strict=True)]
        self.relay = subprocess.Popen(
            [sys.executable, "-m", "bench.delay_proxy", str(delay_ms), *pairs],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.relay.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.relay.terminate()
        self.relay.wait()
        for s in self.servers:
            s.stop()


# --- the panel ------------------------------------------------------------------------------


def run_panel(fleet: Fleet, workers: int) -> float:
    from nodes.choices import Transport
    from nodes.models import Node
    from sync.engine import register_desync
    from sync.models import Node2Sync, SyncAction

    Node.objects.all().delete()
    nodes = [
        Node.objects.create(
            name=f"bench{i}",
            transport=Transport.SSH,
            host="127.0.0.1",
            port=port,
            username="root",
            host_key=server.host_key,
        )
        for i, (port, server) in enumerate(zip(fleet.ports, fleet.servers, strict=True))
    ]
    action = SyncAction.objects.get(name="bench-steps")
    cluster = start_cluster(workers)
    try:
        started = time.monotonic()
        register_desync(nodes, [action])
        while Node2Sync.objects.exists():
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        stop_process_group(cluster)
    failed = Node.objects.exclude(last_error="").count()
    if failed:
        raise SystemExit(f"panel: {failed} nodes failed: {Node.objects.first().last_error}")
    return elapsed


# --- the asyncssh floor ---------------------------------------------------------------------


def run_floor(fleet: Fleet) -> float:
    import asyncssh

    from nodes.keys import load_panel_key

    key = load_panel_key()

    async def one(port: int, host_key: str) -> None:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="root",
            client_keys=[key],
            known_hosts=([asyncssh.import_public_key(host_key)], [], []),
            agent_path=None,
            config=None,
        ) as conn:
            for argv in STEPS:
                await conn.run(" ".join(argv), check=True)

    async def all_nodes() -> None:
        await asyncio.gather(
            *(one(p, s.host_key) for p, s in zip(fleet.ports, fleet.servers, strict=True))
        )

    started = time.monotonic()
    asyncio.run(all_nodes())
    return time.monotonic() - started


# --- Ansible --------------------------------------------------------------------------------


def ansible_playbook() -> Path:
    binary = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run(
            [str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core>=2.17,<2.20"],
            check=True,
        )
    return binary


def run_ansible(fleet: Fleet, workdir: Path) -> float:
    from nodes.keys import panel_key_path

    playbook = ansible_playbook()
    inventory = workdir / "inventory.ini"
    inventory.write_text(
        "[nodes]\n"
        + "".join(
            f"node{i} ansible_host=127.0.0.1 ansible_port={port} ansible_user=root "
            f"ansible_ssh_private_key_file={panel_key_path()} "
            "ansible_python_interpreter=/usr/bin/python3\n"
            for i, port in enumerate(fleet.ports)
        )
    )
    tasks = "".join(
        f"    - command:\n        argv: [{', '.join(repr(a) for a in argv)}]\n" for argv in STEPS
    )
    book = workdir / "playbook.yml"
    book.write_text(f"- hosts: nodes\n  gather_facts: false\n  tasks:\n{tasks}")
    control = Path(tempfile.mkdtemp(prefix="ansible-cp-"))
    env = dict(
        os.environ,
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_PIPELINING="True",
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(control),
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    started = time.monotonic()
    result = subprocess.run(
        [str(playbook), "-i", str(inventory), "-f", str(len(fleet.ports)), str(book)],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    shutil.rmtree(control, ignore_errors=True)
    if result.returncode != 0:
        raise SystemExit(
            f"ansible-playbook failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, action="append", help="fleet sizes (10 and 50)")
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--workers", type=int, default=2, help="django-q workers")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--skip-ansible", action="store_true")
    args = parser.parse_args()
    sizes = args.nodes or [10, 50]
    setup_django(args.database_url)
    print(
        f"converge: {len(STEPS)} command steps per node, {args.delay_ms:.0f} ms each way, "
        f"{args.workers} django-q workers, database {database_name()}"
    )
    print("| nodes | panel s | ansible s | asyncssh floor s | ansible / panel | panel / floor |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-converge-") as tmp:
            fleet = Fleet(n, args.delay_ms, Path(tmp))
            try:
                floor = run_floor(fleet)
                ansible = None if args.skip_ansible else run_ansible(fleet, Path(tmp))
                panel = run_panel(fleet, args.workers)
            finally:
                fleet.stop()
        ratio = f"{ansible / panel:.2f}" if ansible else "-"
        ansible_s = f"{ansible:.1f}" if ansible else "-"
        print(
            f"| {n} | {panel:.1f} | {ansible_s} | {floor:.1f} | {ratio} | {panel / floor:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

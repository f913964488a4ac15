"""converge: how fast a fleet of remote nodes is brought in sync, cold, warm and one at a time.

N real sshd nodes on loopback, each behind a relay that delays every chunk by 50 ms each way
(``bench/delay_proxy.py``), because real nodes are remote. In one run, on the same nodes and
relays:

- the panel, through a running django-q cluster (2 workers), every built-in type registered
  for every node in one call, timed from the registration to no desynchronization left:
  a **cold** round (the cluster just started: no connection open), a **warm** round (the same
  registration again, at least 30 s after the cold one ended: the workers' connections are
  warm), and a **one at a time** round (the nodes deleted and added again one by one, each
  in its own transaction, so each becomes a task of its own; new nodes, so cold);
- the sshd logs' "Accepted publickey" lines after the cold and after the warm round: logins;
- Ansible (``ansible -m setup``, pipelining, forks = N), cold and again at once with its
  ControlPersist connections warm;
- pyinfra (four facts per node, ``--parallel N``);
- a bare asyncssh script that connects to every node at once and runs one facts command:
  the cold floor.

    .venv/bin/python -m bench.converge --nodes 10 --nodes 50 \\
        --database-url mysql://root@127.0.0.1:3306/panel_bench

Ansible and pyinfra come from the ``bench`` extra of pyproject.toml, installed by this script
into a virtualenv of its own (``var/bench/tools-venv``), never beside the panel.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from bench.common import (
    BENCH_DIR,
    ROOT,
    database_name,
    setup_django,
    start_cluster,
    stop_process_group,
)

TOOLS_VENV = BENCH_DIR / "tools-venv"
# The five command steps of the ``bench-steps`` type (bench/bench_types.py).
STEPS = [
    ["uname", "-r"],
    ["cat", "/proc/loadavg"],
    ["test", "-d", "/tmp"],
    ["echo", "converged"],
    ["id", "-u"],
]
# What the floor runs on each node: the facts the panel's nodeinfo type reads, in one command.
FACTS = "hostname; uname -r; nproc; head -n 3 /proc/meminfo; df -P /; cat /proc/uptime"
PYINFRA_FACTS = ["server.Hostname", "server.Kernel", "server.Arch", "server.Os"]
WARM_AFTER = 30  # seconds between the cold round's end and the warm registration (at least)


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

    def logins(self) -> int:
        """ "Accepted publickey" lines in every node's sshd log: how many logins so far."""
        return sum(
            (s.dir / "sshd.log").read_text(errors="replace").count("Accepted publickey")
            for s in self.servers
        )

    def stop(self) -> None:
        self.relay.terminate()
        self.relay.wait()
        for s in self.servers:
            s.stop()


# --- the panel ------------------------------------------------------------------------------


def _builtin_types():
    from sync.models import SyncAction

    return list(SyncAction.objects.exclude(name__startswith="bench-"))


def _new_node(i: int, port: int, server):
    from nodes.choices import Transport
    from nodes.models import Node

    return Node(
        name=f"bench{i}",
        transport=Transport.SSH,
        host="127.0.0.1",
        port=port,
        username="root",
        host_key=server.host_key,
    )


def _until_done(started: float, limit: float = 600) -> float:
    from nodes.models import Node
    from sync.models import Node2Sync

    while Node2Sync.objects.exists():
        if time.monotonic() - started > limit:
            raise SystemExit(f"panel: not done after {limit} s")
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    failed = Node.objects.exclude(last_error="")
    if failed.exists():
        raise SystemExit(f"panel: {failed.count()} nodes failed: {failed.first().last_error}")
    return elapsed


def run_panel(fleet: Fleet, workers: int, warm_after: float = WARM_AFTER) -> dict[str, float]:
    """The three rounds and the logins after the first two."""
    from django.db import transaction

    from nodes.models import Node
    from sync.engine import register_desync

    Node.objects.all().delete()
    types = _builtin_types()
    pairs = list(zip(fleet.ports, fleet.servers, strict=True))
    nodes = Node.objects.bulk_create(
        [_new_node(i, port, server) for i, (port, server) in enumerate(pairs)]
    )
    figures: dict[str, float] = {}
    logins_before = fleet.logins()
    cluster = start_cluster(workers)
    try:
        started = time.monotonic()
        register_desync(nodes, types)  # what `desync --all` does: one call, every type
        figures["cold"] = _until_done(started)
        figures["logins_cold"] = fleet.logins() - logins_before
        cold_end = time.monotonic()

        time.sleep(max(0.0, warm_after - (time.monotonic() - cold_end)))
        started = time.monotonic()
        register_desync(nodes, types)
        figures["warm"] = _until_done(started)
        figures["logins_warm"] = fleet.logins() - logins_before

        Node.objects.all().delete()
        started = time.monotonic()
        for i, (port, server) in enumerate(pairs):  # added one by one: a task each
            with transaction.atomic():
                node = _new_node(i, port, server)
                node.save()
                register_desync([node], types)
        figures["one_by_one"] = _until_done(started)
    finally:
        stop_process_group(cluster)
    return figures


# --- the asyncssh floor ---------------------------------------------------------------------


def run_floor(fleet: Fleet) -> float:
    """Connect to every node at once (host key checked) and run one facts command."""
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
            await conn.run(FACTS, check=True)

    async def all_nodes() -> None:
        await asyncio.gather(
            *(one(p, s.host_key) for p, s in zip(fleet.ports, fleet.servers, strict=True))
        )

    started = time.monotonic()
    asyncio.run(all_nodes())
    return time.monotonic() - started


# --- Ansible and pyinfra ----------------------------------------------------------------------


def tools_venv() -> Path:
    """The virtualenv with the ``bench`` extra's tools, made on first use."""
    if (
        not (TOOLS_VENV / "bin" / "pyinfra").exists()
        or not (TOOLS_VENV / "bin" / "ansible").exists()
    ):
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        requirements = extras["optional-dependencies"]["bench"]
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
        pip = str(TOOLS_VENV / "bin" / "pip")
        subprocess.run([pip, "install", "-q", *requirements], check=True)
    return TOOLS_VENV / "bin"


def _processes_naming(text: str) -> list[int]:
    """Our own processes whose command line holds ``text`` (a folder this run made)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry))
    return found


def run_ansible(fleet: Fleet, workdir: Path) -> tuple[float, float]:
    """``ansible -m setup`` on every node, cold, then again at once over ControlPersist."""
    from nodes.keys import panel_key_path

    binary = tools_venv() / "ansible"
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
    control = Path(tempfile.mkdtemp(prefix="ansible-cp-"))
    env = dict(
        os.environ,
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_PIPELINING="True",
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(control),
        ANSIBLE_SSH_ARGS="-C -o ControlMaster=auto -o ControlPersist=120s",
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    times = []
    try:
        for _ in range(2):
            started = time.monotonic()
            result = subprocess.run(
                [str(binary), "nodes", "-i", str(inventory), "-m", "setup"]
                + ["-f", str(len(fleet.ports))],
                env=env,
                capture_output=True,
                text=True,
            )
            times.append(time.monotonic() - started)
            if result.returncode != 0:
                raise SystemExit(f"ansible failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    finally:
        for pid in _processes_naming(str(control)):  # the ControlPersist masters
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(control, ignore_errors=True)
    return times[0], times[1]


def run_pyinfra(fleet: Fleet, workdir: Path) -> float:
    from nodes.keys import panel_key_path

    binary = tools_venv() / "pyinfra"
    inventory = workdir / "pyinfra_inventory.py"
    hosts = ",\n".join(
        f"    ('node{i}', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}, "
        f"'ssh_user': 'root', 'ssh_key': '{panel_key_path()}', "
        "'ssh_known_hosts_file': '/dev/null', 'ssh_strict_host_key_checking': 'no'})"
        for i, port in enumerate(fleet.ports)
    )
    inventory.write_text(f"nodes = [\n{hosts},\n]\n")
    started = time.monotonic()
    result = subprocess.run(
        [str(binary), str(inventory), "fact", *PYINFRA_FACTS]
        + ["--parallel", str(len(fleet.ports)), "-y"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"pyinfra failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, action="append", help="fleet sizes (10 and 50)")
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--workers", type=int, default=2, help="django-q workers")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--skip-tools", action="store_true", help="no Ansible, no pyinfra")
    parser.add_argument("--warm-after", type=float, default=WARM_AFTER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.nodes or [10, 50]
    state = BENCH_DIR / "node-state"
    os.environ["PANEL_NODE_STATE_DIR"] = str(state / "lib")
    os.environ["PANEL_NODE_RUN_DIR"] = str(state / "run")
    os.environ["PANEL_PROBE_SECONDS"] = "86400"  # no health probes in the middle of a round
    setup_django(args.database_url)
    print(
        f"converge: every built-in type, {args.delay_ms:.0f} ms each way, "
        f"{args.workers} django-q workers, database {database_name()}"
    )
    print(
        "| nodes | cold s | warm s | one by one s | logins cold / +warm | ansible cold / warm s "
        "| pyinfra s | floor s | warm / floor | warm Ansible / warm | cold / floor "
        "| one by one / cold |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-converge-") as tmp:
            fleet = Fleet(n, args.delay_ms, Path(tmp))
            try:
                floor = run_floor(fleet)
                ansible = pyinfra = None
                if not args.skip_tools:
                    ansible = run_ansible(fleet, Path(tmp))
                    pyinfra = run_pyinfra(fleet, Path(tmp))
                panel = run_panel(fleet, args.workers, args.warm_after)
            finally:
                fleet.stop()
        logins = f"{panel['logins_cold']:.0f} / +{panel['logins_warm'] - panel['logins_cold']:.0f}"
        ansible_s = f"{ansible[0]:.1f} / {ansible[1]:.1f}" if ansible else "-"
        pyinfra_s = f"{pyinfra:.1f}" if pyinfra else "-"
        versus = f"{ansible[1] / panel['warm']:.1f}" if ansible else "-"
        print(
            f"| {n} | {panel['cold']:.1f} | {panel['warm']:.2f} | {panel['one_by_one']:.1f} "
            f"| {logins} | {ansible_s} | {pyinfra_s} | {floor:.1f} "
            f"| {panel['warm'] / floor:.2f} | {versus} | {panel['cold'] / floor:.2f} "
            f"| {panel['one_by_one'] / panel['cold']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

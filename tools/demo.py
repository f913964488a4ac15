"""A live fleet to look at: a few real sshd nodes on loopback, added to the panel, and the panel.

``make demo`` runs this after the usual set-up (migrate, collectstatic, bootstrap). Each node
is a real OpenSSH server on 127.0.0.1 that lets the panel's own key log in; they are added
like any node (pinned host key, a role with a small managed file), so within a minute the
Cluster nodes page shows them synchronize and turn Ready. Ctrl-C stops the panel, removes the
demo nodes from the panel and stops their servers. It needs root (the nodes log in as root)
and Debian's ``openssh-server`` (``make sysdeps`` installs it).

All demo nodes are this machine: the demo's data is one file under /tmp, nothing that
changes the system.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_FILE = "/tmp/cluster-panel-demo/motd"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4, help="how many nodes (1-20, default 4)")
    parser.add_argument(
        "--port", type=int, help="the panel's port (default: PANEL_BIND's, else 8000)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 20:
        parser.error(f"--nodes must be from 1 to 20, not {args.nodes}")
    if os.geteuid() != 0:
        print(
            "error: the demo nodes let the panel log in as root: run it as root.", file=sys.stderr
        )
        return 2

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")
    import django

    django.setup()
    from tools.sshd import SSHD, SSHServer

    if not Path(SSHD).exists():
        print("error: sshd is missing: run `make sysdeps` first.", file=sys.stderr)
        return 2

    from nodes.keys import panel_public_key

    workdir = Path(tempfile.mkdtemp(prefix="panel-demo-"))
    servers = [SSHServer(workdir / f"node{i}", panel_public_key()) for i in range(args.nodes)]
    names: list[str] = []
    panel = None
    try:
        for server in servers:
            server.start()
        names = add_demo_nodes(servers)
        print(f"Added {len(names)} demo nodes ({', '.join(names)}), each a real sshd on 127.0.0.1.")
        port = [] if args.port is None else ["--port", str(args.port)]
        panel = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runpanel", *port], cwd=ROOT
        )
        print("Log in as printed above; Ctrl-C stops the panel and removes the demo nodes.")
        panel.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if panel is not None and panel.poll() is None:
            panel.send_signal(signal.SIGINT)
            try:
                panel.wait(timeout=30)
            except subprocess.TimeoutExpired:
                panel.kill()
        remove_demo_nodes(names)
        for server in servers:
            server.stop()
        # The servers' folders hold their private host keys: nothing of them stays behind.
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(Path(DEMO_FILE).parent, ignore_errors=True)
        print(
            f"Removed the demo nodes ({len(names)}), stopped their servers and removed {workdir}."
        )
    return 0


def add_demo_nodes(servers: list) -> list[str]:
    from django.db import transaction

    from nodes.models import Node, Role
    from sync.actor import Actor
    from sync.inventory import add_node
    from sync.synchronizers.files import ManagedFile

    with transaction.atomic():
        role, _ = Role.objects.get_or_create(name="demo")
        motd, _ = ManagedFile.objects.get_or_create(
            path=DEMO_FILE, defaults={"content": "Synchronized by the cluster panel's demo.\n"}
        )
        motd.roles.add(role)
        names = []
        for i, server in enumerate(servers, 1):
            name = f"demo-{i}"
            Node.objects.filter(name=name).delete()  # left by a demo that was killed
            node = Node(name=name, host="127.0.0.1", port=server.port, host_key=server.host_key)
            add_node(node, [role], by=Actor.command("demo"))
            names.append(name)
    return names


def remove_demo_nodes(names: list[str]) -> None:
    from nodes.models import Node, Role
    from sync.synchronizers.files import ManagedFile

    Node.objects.filter(name__in=names).delete()
    Role.objects.filter(name="demo", nodes__isnull=True).delete()
    ManagedFile.objects.filter(path=DEMO_FILE, roles__isnull=True).delete()


if __name__ == "__main__":
    sys.exit(main())

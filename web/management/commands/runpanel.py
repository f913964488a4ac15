"""Run the whole panel in one command: the web server, the django-q cluster that does the work,
and the alerts process that watches the cluster and sends the alert digests (``manage.py
alerts``; outside the cluster, since a dead cluster cannot report itself).

The web server is gunicorn (``panel/gunicorn.conf.py``), a production WSGI server, with
whitenoise serving the static files; ``make run`` collects them first.

All run as child processes of this command, each in its own process group: Ctrl-C (or
SIGTERM) reaches only this command, which then stops them in order, and whatever a child leaves
behind (the cluster's worker processes) can be killed with its group when it does not stop in
time. When any child exits on its own, the others are stopped too: a panel without its cluster
would accept work that nothing runs, and one without its alerts would fail in silence.
"""

import os
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from web.serving import bind_address, host_for_url, panel_url, port_problem

# The port is checked before anything starts: a busy one is one line and this exit code.
PORT_BUSY = 2

STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.2
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def start_child(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=settings.BASE_DIR, env=os.environ.copy(), process_group=0)


def stop_children(
    children: Iterable[subprocess.Popen],
    timeout: float = STOP_TIMEOUT_SECONDS,
    hurry: Callable[[], bool] = lambda: False,
) -> None:
    """SIGTERM the children, wait up to ``timeout`` (or until ``hurry()``), then kill their groups.

    Killing the process group, not only the child, also ends the workers of a cluster whose
    main process did not stop in time, and any process a stopped child left behind.
    """
    children = list(children)
    for child in children:
        if child.poll() is None:
            with suppress(ProcessLookupError):
                child.terminate()
    deadline = time.monotonic() + timeout
    while (
        any(child.poll() is None for child in children)
        and time.monotonic() < deadline
        and not hurry()
    ):
        time.sleep(0.05)
    for child in children:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


class Command(BaseCommand):
    help = (
        "Run the panel: the web server (gunicorn), the django-q cluster (qcluster) and the "
        "alerts process (alerts) beside it. Ctrl-C stops them all."
    )
    # The children run the checks themselves.
    requires_system_checks = []

    def add_arguments(self, parser):
        try:
            addr, port = bind_address()  # PANEL_BIND, as gunicorn's settings read it
        except ValueError:
            addr, port = None, None  # said by handle() when --addr or --port is not given
        parser.add_argument(
            "--addr", default=addr, help=f"Address to listen on (default {addr}, PANEL_BIND's)."
        )
        parser.add_argument(
            "--port", type=int, default=port, help=f"Port to listen on (default {port})."
        )

    def handle(self, *args, addr: str | None, port: int | None, **options):
        if addr is None or port is None:
            try:
                bind_addr, bind_port = bind_address()
            except ValueError as e:
                raise CommandError(str(e), returncode=2) from None
            addr, port = addr or bind_addr, bind_port if port is None else port
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be between 1 and 65535, not {port}.", returncode=2)
        # Before anything starts: a busy port must not start a second cluster beside the
        # first one's, even for the seconds gunicorn takes to give up.
        problem = port_problem(addr, port)
        if problem:
            raise CommandError(
                f"the panel cannot start: {problem} (choose another with --port, or "
                "PORT=... for make run)",
                returncode=PORT_BUSY,
            )
        # The web server's settings are checked here, where a bad one is one line (manage.py).
        gunicorn_conf = Path(settings.BASE_DIR) / "panel" / "gunicorn.conf.py"
        runpy.run_path(str(gunicorn_conf))
        host = host_for_url(addr)
        url = panel_url(addr, port)
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        commands = {
            "django-q cluster": [*manage, "qcluster"],
            "web server": [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                str(gunicorn_conf),
                "--bind",
                f"{host}:{port}",
            ],
            "alerts process": [*manage, "alerts"],
        }

        received: list[int] = []

        def on_signal(signum, frame):
            received.append(signum)

        previous = {signum: signal.signal(signum, on_signal) for signum in HANDLED_SIGNALS}
        children: dict[str, subprocess.Popen] = {}
        exited: tuple[str, int] | None = None
        try:
            for name, argv in commands.items():
                children[name] = start_child(argv)
            self.stdout.write(
                f"The panel runs at {url} and its django-q cluster started "
                f"(pid {children['django-q cluster'].pid}) with its alerts process; Ctrl-C stops "
                "them all."
            )
            self.stdout.flush()
            while not received and exited is None:
                for name, child in children.items():
                    if child.poll() is not None:
                        exited = (name, child.returncode)
                        break
                else:
                    time.sleep(POLL_SECONDS)
        finally:
            if children:
                if received or exited:
                    self.stdout.write(
                        "Stopping the web server, the django-q cluster and the alerts process ..."
                    )
                # A second Ctrl-C while stopping kills at once.
                stop_children(children.values(), hurry=lambda: len(received) > 1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        if exited is not None:
            name, code = exited
            raise CommandError(f"The {name} exited (code {code}), so the panel stopped.")
        self.stdout.write("Stopped.")

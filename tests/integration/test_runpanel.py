"""What `make run` starts: the web server and the cluster, and the local node gets Ready alone."""

import re
import signal
import socket
import subprocess
import sys
import urllib.request
from contextlib import suppress
from pathlib import Path

import pytest

from nodes.choices import NodeStatus, Transport
from nodes.models import Node
from tests.conftest import ROOT, process_env
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_commands(pid: int) -> list[list[str]]:
    """The argument lists of a process's children (from /proc, this process tree only)."""
    children: list[list[str]] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with suppress(FileNotFoundError):
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                children.append([arg.decode() for arg in argv if arg])
    return children


def check_static_files(base: str) -> None:
    """Served by gunicorn and whitenoise: hashed names, compressed, cached for a year."""
    with urllib.request.urlopen(f"{base}/accounts/login/") as r:
        assert r.headers["Server"].startswith("gunicorn")
        page = r.read().decode()
    css = re.search(r'href="(/static/css/panel\.[0-9a-f]{12}\.css)"', page)
    assert css, "the stylesheet has no hashed name"
    request = urllib.request.Request(base + css.group(1), headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request) as r:
        assert r.status == 200
        assert r.headers["Content-Encoding"] == "gzip"
        assert "max-age=315360000" in r.headers["Cache-Control"]
        assert "immutable" in r.headers["Cache-Control"]


def test_runserver_serves_the_static_files_too(tmp_path):
    """Without collectstatic and without --insecure: the pages still get their CSS and htmx."""
    port = free_port()
    env = process_env(PANEL_DATA_DIR=str(tmp_path))
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def stylesheet():
            """the stylesheet from runserver"""
            try:
                url = f"http://127.0.0.1:{port}/static/css/panel.css"
                with urllib.request.urlopen(url) as r:
                    return r.status == 200 and r.headers["Content-Type"].startswith("text/css")
            except OSError:
                return False

        wait_for(stylesheet, timeout=30)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/static/django_htmx/htmx-2.min.js"
        ) as r:
            assert r.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_it_serves_the_login_page_and_brings_the_local_node_to_ready(transactional_db, tmp_path):
    # The port as `make run PORT=...` gives it: PANEL_BIND, for bootstrap and runpanel alike.
    port = free_port()
    env = process_env(PANEL_DATA_DIR=str(tmp_path), PANEL_BIND=f"127.0.0.1:{port}")
    manage = [sys.executable, str(ROOT / "manage.py")]
    boot = subprocess.run(
        [*manage, "bootstrap"], env=env, capture_output=True, text=True, timeout=60
    )
    assert boot.returncode == 0, boot.stderr
    assert "password" in boot.stdout.lower()
    assert f"Open http://127.0.0.1:{port}/ to log in." in boot.stdout
    collect = subprocess.run(
        [*manage, "collectstatic", "--noinput", "-v0"], env=env, capture_output=True, text=True
    )
    assert collect.returncode == 0, collect.stderr
    panel = subprocess.Popen(
        [*manage, "runpanel"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def login_page():
            """the login page on the panel's port"""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/") as r:
                    return r.status == 200 and b"csrfmiddlewaretoken" in r.read()
            except OSError:
                return False

        wait_for(login_page, timeout=30)
        check_static_files(f"http://127.0.0.1:{port}")
        [node] = Node.objects.all()
        assert node.transport == Transport.LOCAL

        def node_ready():
            """the local node to reach ready with its facts"""
            node.refresh_from_db()
            return node.status == NodeStatus.READY and not node.desyncs.exists()

        wait_for(node_ready, timeout=60)
        assert node.facts["kernel"]
        # Beside them, the alerts process (outside the cluster: a dead one cannot report).
        assert any(argv[-1:] == ["alerts"] for argv in child_commands(panel.pid))
    finally:
        panel.send_signal(signal.SIGTERM)
        panel.wait(timeout=30)

"""What `make run` starts: the web server and the cluster, and the local node gets Ready alone."""

import signal
import socket
import subprocess
import sys
import urllib.request

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


def test_it_serves_the_login_page_and_brings_the_local_node_to_ready(transactional_db, tmp_path):
    env = process_env(PANEL_DATA_DIR=str(tmp_path))
    manage = [sys.executable, str(ROOT / "manage.py")]
    boot = subprocess.run(
        [*manage, "bootstrap"], env=env, capture_output=True, text=True, timeout=60
    )
    assert boot.returncode == 0, boot.stderr
    assert "password" in boot.stdout.lower()
    port = free_port()
    panel = subprocess.Popen(
        [*manage, "runpanel", "--port", str(port)],
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
        [node] = Node.objects.all()
        assert node.transport == Transport.LOCAL

        def node_ready():
            """the local node to reach ready with its facts"""
            node.refresh_from_db()
            return node.status == NodeStatus.READY and not node.desyncs.exists()

        wait_for(node_ready, timeout=60)
        assert node.facts["kernel"]
    finally:
        panel.send_signal(signal.SIGTERM)
        panel.wait(timeout=30)

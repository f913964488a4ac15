"""``make demo``: real sshd nodes converge in the running panel; Ctrl-C removes them all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, manage_ok
from tests.integration.test_runpanel import free_port

pytestmark = pytest.mark.cluster


def login_page(port: int) -> bool:
    """The panel answers on the port it was given."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/") as r:
            return r.status == 200
    except OSError:
        return False


def test_the_demo_fleet_converges_and_goes_away_on_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(PANEL_DATA_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")

    def manage(*args: str) -> str:
        return manage_ok(*args, env=env)

    manage("migrate", "--no-input")
    manage("bootstrap")
    port = free_port()
    env["PANEL_BIND"] = f"127.0.0.1:{port}"  # as `make demo PORT=...` sets it
    demo = subprocess.Popen(
        [sys.executable, "-m", "tools.demo", "--nodes", "3"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            nodes = json.loads(manage("nodes", "--json"))
            demo_nodes = [n for n in nodes if n["name"].startswith("demo-")]
            ready = [n for n in demo_nodes if n["status"] == "ready" and n["pending"] == 0]
            if len(ready) == 3 and login_page(port):
                break
            assert demo.poll() is None, demo.stdout.read()
            assert time.monotonic() < deadline, f"the demo fleet did not converge: {demo_nodes}"
            time.sleep(1)
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 0, output
    assert "Removed the demo nodes (3)" in output
    # Its folder held the sshd's private host keys: gone with it.
    workdir = re.search(r"removed (/\S+)\.", output).group(1)
    assert "panel-demo-" in workdir and not os.path.exists(workdir)
    names = [n["name"] for n in json.loads(manage("nodes", "--json"))]
    assert not [name for name in names if name.startswith("demo-")]
    leftover = subprocess.run(["pgrep", "-f", "panel-demo-"], capture_output=True, text=True)
    assert leftover.stdout == "", "a demo sshd is still running"

"""Starting up: ``make run PORT=...`` listens there, ``runpanel`` refuses a busy port before it
starts anything, ``bootstrap`` prints the address the panel will answer on. Real processes."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, process_env, run_manage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def busy_port():
    """A port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def processes_with(data_dir: str) -> list[int]:
    """Processes started with this test's data folder (a web server or cluster of its own)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if f"PANEL_DATA_DIR={data_dir}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["--port", "PANEL_BIND"])
def test_runpanel_on_a_busy_port_says_so_in_one_line_and_starts_nothing(tmp_path, busy_port, how):
    env = process_env(PANEL_DATA_DIR=str(tmp_path))
    args = ["runpanel"]
    if how == "--port":
        args += ["--port", str(busy_port)]
    else:
        env["PANEL_BIND"] = f"127.0.0.1:{busy_port}"
    started = time.monotonic()
    done = run_manage(*args, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"port {busy_port} on 127.0.0.1 is in use" in done.stderr
    assert "The panel runs at" not in done.stdout
    assert time.monotonic() - started < 5
    assert processes_with(str(tmp_path)) == []


@pytest.mark.django_db(transaction=True)
def test_a_bad_panel_bind_is_one_line(tmp_path):
    env = process_env(PANEL_DATA_DIR=str(tmp_path), PANEL_BIND="8080")
    done = run_manage("runpanel", env=env, timeout=60)
    assert done.returncode == 2
    assert "PANEL_BIND must be ADDRESS:PORT such as 127.0.0.1:8000" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("bind", "url"),
    [
        (None, "http://127.0.0.1:8000/"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("0.0.0.0:9000", "http://127.0.0.1:9000/"),
        ("[::1]:8443", "http://[::1]:8443/"),
    ],
)
def test_bootstrap_prints_the_address_the_panel_will_answer_on(tmp_path, bind, url):
    env = process_env(PANEL_DATA_DIR=str(tmp_path))
    env.pop("PANEL_BIND", None)
    if bind:
        env["PANEL_BIND"] = bind
    done = run_manage("bootstrap", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"Open {url} to log in." in done.stdout


@pytest.mark.parametrize(
    ("make_args", "bind"),
    [
        (["PORT=8080"], "127.0.0.1:8080"),
        (["PORT=8080", "ADDR=0.0.0.0"], "0.0.0.0:8080"),
        ([], "from-the-environment:1"),
    ],
)
def test_make_run_and_demo_pass_port_to_the_panel(make_args, bind):
    """The recipes of ``make run`` and ``make demo`` see PANEL_BIND from PORT and ADDR (the
    environment's when neither is given), which bootstrap, runpanel and gunicorn read."""
    probe = "print-bind:\n\t@echo $$PANEL_BIND\n"
    env = dict(process_env(), PANEL_BIND="from-the-environment:1")
    done = subprocess.run(
        ["make", "-s", "-f", "Makefile", "-f", "-", "print-bind", *make_args],
        cwd=ROOT,
        input=probe,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == bind

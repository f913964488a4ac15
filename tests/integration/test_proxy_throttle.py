"""The login throttle behind the shipped nginx: per real client, whatever the client claims.

A real nginx from Debian's packages runs the ``location`` blocks of
``deploy/nginx/cluster-panel.conf`` as they are shipped (only the socket's path is the test's),
in front of a real gunicorn started with the panel's settings and handed its unix socket as
the systemd socket unit hands it (``systemd-socket-activate``), with
``PANEL_TRUSTED_PROXIES=unix``; gunicorn then listens on nothing else. Two clients connect
from distinct real source addresses on loopback (127.0.0.2, the attacker, and 127.0.0.3, the
user) and send their own ``X-Forwarded-For``. The attacker's spoofed header neither gets it
more guesses nor locks the user out.
"""

from __future__ import annotations

import http.client
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from tests.conftest import ROOT, process_env
from tests.integration.conftest import unavailable, wait_for

NGINX = "/usr/sbin/nginx"
SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"
SHIPPED_CONF = ROOT / "deploy" / "nginx" / "cluster-panel.conf"
SHIPPED_SOCKET = "/run/cluster-panel-web/gunicorn.sock"
ATTACKER = "127.0.0.2"
USER = "127.0.0.3"
PASSWORD = "correct horse battery staple"


def shipped_locations() -> str:
    """The ``location`` blocks of the shipped configuration (of its TLS server)."""
    blocks = re.findall(r"^    location .*?^    \}$", SHIPPED_CONF.read_text(), re.M | re.S)
    assert len(blocks) >= 2, "the shipped nginx configuration lost its locations"
    return "\n".join(blocks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def panel_behind_nginx(transactional_db, tmp_path) -> Iterator[int]:
    """gunicorn on a unix socket, nginx in front on a free loopback port; yields the port."""
    for program, package in ((NGINX, "nginx"), (SOCKET_ACTIVATE, "systemd")):
        if not Path(program).exists():
            unavailable(f"{program} is missing (Debian's {package} package)")
    sock = tmp_path / "gunicorn.sock"
    # PANEL_BIND names a port that must stay closed: the socket systemd hands over is all.
    unused_bind = free_port()
    env = process_env(
        PANEL_TRUSTED_PROXIES="unix",
        PANEL_DATA_DIR=str(tmp_path / "var"),
        PANEL_BIND=f"127.0.0.1:{unused_bind}",
    )
    web = subprocess.Popen(
        # systemd-socket-activate passes on only the variables named with -E, as systemd
        # passes only the unit's EnvironmentFile.
        [SOCKET_ACTIVATE, "--listen", str(sock), *(f"-E{name}" for name in env), "--"]
        + [sys.executable, "-m", "gunicorn", "--config", "panel/gunicorn.conf.py"]
        + ["--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "gunicorn.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    port = free_port()
    temp = tmp_path / "nginx"
    temp.mkdir()
    paths = (
        "\n".join(
            f"    {kind}_temp_path {temp / kind};" for kind in ("client_body", "proxy", "fastcgi")
        )
        + f"\n    uwsgi_temp_path {temp / 'uwsgi'};\n    scgi_temp_path {temp / 'scgi'};"
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process off;
pid {tmp_path / "nginx.pid"};
error_log {tmp_path / "nginx-error.log"};
events {{ worker_connections 64; }}
http {{
    access_log off;
{paths}
    server {{
        listen 127.0.0.1:{port};
{shipped_locations().replace(SHIPPED_SOCKET, str(sock))}
    }}
}}
"""
    )
    proxy = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "nginx-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "nginx.out").open("w"),
    )
    try:

        def both_up():
            """nginx and gunicorn to answer"""
            assert proxy.poll() is None, (tmp_path / "nginx.out").read_text()
            assert web.poll() is None, (tmp_path / "gunicorn.log").read_text()
            if not (sock.exists() and answers(port)):
                return False
            status, _, _ = request(ATTACKER, port, "GET", "/healthz")
            return status in (200, 503)

        wait_for(both_up, timeout=60)
        assert not answers(unused_bind), "gunicorn listens on a TCP port past nginx"
        yield port
    finally:
        stop(proxy)
        stop(web)


def request(
    source: str, port: int, method: str, path: str, body: dict | None = None, **headers: str
) -> tuple[int, dict[str, str], str]:
    """One HTTP request from the local address ``source``; status, headers, text."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        data = urlencode(body) if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def log_in(source: str, port: int, password: str, forwarded_for: str = "") -> int:
    """The login page, then its form posted, from ``source``; the post's status."""
    spoof = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    status, headers, page = request(source, port, "GET", "/accounts/login/", **spoof)
    assert status == 200, page
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    cookie = re.search(r"csrftoken=([^;]+)", headers["Set-Cookie"]).group(1)
    status, _, _ = request(
        source,
        port,
        "POST",
        "/accounts/login/",
        {"username": "alice", "password": password, "csrfmiddlewaretoken": token},
        Cookie=f"csrftoken={cookie}",
        **spoof,
    )
    return status


def test_a_spoofed_forwarded_for_neither_bypasses_the_throttle_nor_locks_out_others(
    panel_behind_nginx,
):
    port = panel_behind_nginx
    get_user_model().objects.create_user("alice", password=PASSWORD)
    # The attacker claims to be the user, then someone new at every guess.
    claims = [USER] + [f"198.51.100.{n}" for n in range(1, settings.AXES_FAILURE_LIMIT + 1)]
    statuses = [
        log_in(ATTACKER, port, secrets.token_hex(8), forwarded_for=f"{claim}, {USER}")
        for claim in claims[: settings.AXES_FAILURE_LIMIT]
    ]
    assert statuses[0] == 200  # a wrong password: the form again
    assert statuses[-1] == 429  # the fifth failure locks the attacker's own address out

    # Not a single further guess, whoever the attacker claims to be; the right password too.
    for claim in (claims[-1], USER, "127.0.0.1", "unix"):
        assert log_in(ATTACKER, port, PASSWORD, forwarded_for=claim) == 429

    # The user, from their own address, is not locked out (a redirect into the panel).
    assert log_in(USER, port, PASSWORD) == 302

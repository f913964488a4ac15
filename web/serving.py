"""Where the panel's web server listens and the address it answers on.

``PANEL_BIND`` (``127.0.0.1:8000`` unless set; ``make run PORT=8080`` sets it) is read by
gunicorn's settings, ``runpanel`` (whose ``--addr``/``--port`` override it) and ``bootstrap``
(which prints the address to open), so the three never disagree.
"""

from __future__ import annotations

import errno
import socket

from django.conf import settings


def bind_address() -> tuple[str, int]:
    """``PANEL_BIND`` as (address, port); ValueError when it is not ``ADDRESS:PORT``."""
    value = settings.PANEL_BIND
    addr, sep, port = value.rpartition(":")
    addr = addr.removeprefix("[").removesuffix("]")
    if not sep or not addr or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"PANEL_BIND must be ADDRESS:PORT such as 127.0.0.1:8000 (port 1-65535), not {value!r}"
        )
    return addr, int(port)


def host_for_url(addr: str) -> str:
    return f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr


def panel_url(addr: str, port: int) -> str:
    """The address a browser on this machine opens: a wildcard bind answers on loopback."""
    if addr in ("0.0.0.0", ""):
        addr = "127.0.0.1"
    elif addr == "::":
        addr = "::1"
    return f"http://{host_for_url(addr)}:{port}/"


def port_problem(addr: str, port: int) -> str | None:
    """Why the web server could not listen on ``addr:port`` now (None: it can).

    Bound and closed at once, as gunicorn binds (SO_REUSEADDR, so a port whose last
    connections are in TIME_WAIT counts as free, as it is for gunicorn).
    """
    try:
        infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return f"{addr} is not an address of this machine"
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {addr} is in use: another panel or program listens there"
            if e.errno == errno.EACCES:
                return f"port {port} needs root (ports below 1024 are privileged)"
            if e.errno == errno.EADDRNOTAVAIL:
                return f"{addr} is not an address of this machine"
            return f"cannot listen on {addr}:{port}: {e.strerror}"
    return None

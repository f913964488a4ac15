"""Settings from the environment, checked when they are read.

A deployment is configured by environment variables (systemd units, the shell, CI). A typo in
one must stop the panel with one line that names the variable and says what it wants, not a
traceback from ``int()`` three frames down, and not a panel that starts with a silly value
(a lease of 0 seconds, -3 workers). ``manage.py`` and ``runpanel`` print ``BadSetting`` as
that one line and exit with 2.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from django.core.exceptions import ImproperlyConfigured

from panel.instance import SECRET_KEY_FILE, read_secret_key
from panel.secretkey import MAKE_ONE, secret_key_problem


class BadSetting(ImproperlyConfigured):
    """An environment variable with a value the panel cannot use."""


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadSetting(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum or maximum is not None and value > maximum:
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadSetting(f"{name} must be {bounds}, not {value}.")
    return value


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise BadSetting(f"{name} must be 1 or 0 (true/false, yes/no, on/off), not {raw!r}.")


def env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated list; blanks around items and empty items are dropped."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_words(name: str) -> list[str]:
    """Items separated by spaces (or newlines, as a systemd ``EnvironmentFile`` may continue a
    line): for values such as URLs, whose queries may hold commas."""
    return os.environ.get(name, "").split()


def env_str(name: str, default: str = "") -> str:
    value = os.environ.get(name, default)
    if any(c in value for c in "\n\r\0"):
        raise BadSetting(f"{name} must be one line.")
    return value


# The entry of PANEL_TRUSTED_PROXIES that stands for gunicorn's unix socket: its peer has no
# address (REMOTE_ADDR is empty), and only the proxy may open the socket (docs/OPERATIONS.md).
UNIX_SOCKET_PEER = "unix"


def env_networks(name: str, *, keywords: frozenset[str] = frozenset()) -> list:
    """Comma-separated addresses or networks (``10.0.0.0/8``, ``::1``), and the ``keywords``.

    Returns ``ipaddress`` networks (an address is a network of one) and the keywords found,
    as they are: a typo must stop the panel, not trust nobody (or everybody) in silence.
    """
    items: list = []
    for item in env_list(name):
        if item.lower() in keywords:
            items.append(item.lower())
            continue
        try:
            items.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            wanted = "addresses or networks such as 127.0.0.1, 10.0.0.0/8 or ::1"
            extra = "".join(f" or {k}" for k in sorted(keywords))
            raise BadSetting(f"{name} must list {wanted}{extra}, not {item!r}.") from None
    return items


def env_secret_key(name: str, data_dir: str | os.PathLike) -> str:
    """The secret key from ``name``, else from the instance's key file ("" before there is one).

    Either must pass ``panel.secretkey``'s rule: the key signs the tasks django-q runs. The
    message names where the key came from, never the key.
    """
    if key := env_str(name).strip():
        if problem := secret_key_problem(key):
            raise BadSetting(f"{name} {problem}; make one with: {MAKE_ONE}")
        return key
    key = read_secret_key(data_dir)
    if key and (problem := secret_key_problem(key)):
        raise BadSetting(
            f"The secret key in {Path(data_dir) / SECRET_KEY_FILE} {problem}; set {name} "
            f"(the same on every machine of the panel) or delete the file to have one made."
        )
    return key


def env_redis_url(name: str, insecure_name: str) -> str:
    """A Redis URL, checked when the settings load, not when the first task is enqueued.

    A mistyped URL would otherwise surface as a connection error deep in a worker, or not at
    all: redis-py reads ``redis://host/abc`` as database 0 and would share another panel's
    queue. The message names the variable and never repeats the URL (it may hold a password).

    A TCP address without a password is refused unless ``insecure_name`` is 1: every local
    user (and anyone who reaches the port) can push tasks into such a Redis, and only the
    secret key then stands between them and code run as the panel. A unix socket is guarded
    by its file mode instead.
    """
    url = os.environ.get(name, "").strip()
    if not url:
        return ""
    example = "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... or unix://PATH"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        problem = "the address or port cannot be read (a port is a number up to 65535)"
    else:
        db = parts.path.strip("/")
        if parts.scheme not in ("redis", "rediss", "unix"):
            problem = f"the scheme is {parts.scheme or 'missing'}"
        elif parts.scheme == "unix":
            problem = "" if parts.path else "the socket's path is missing"
        elif not parts.hostname:
            problem = "the host is missing"
        elif db and not db.isdigit():
            problem = "the database must be a number"
        else:
            problem = ""
    if problem:
        raise BadSetting(f"{name} is not a Redis URL ({example}): {problem}")
    has_password = parts.password or "password" in parse_qs(parts.query)
    if parts.scheme != "unix" and not has_password and not env_bool(insecure_name):
        raise BadSetting(
            f"{name} has no password, so anyone who reaches that address can queue tasks: "
            f"use redis://:PASSWORD@HOST..., a unix:// socket of mode 0660, or set "
            f"{insecure_name}=1 if only trusted users can reach it."
        )
    return url


# What a queue's name may hold: it becomes part of a Redis key (``django_q:NAME:q``), of the
# ORM broker's queue rows and of the salt that signs every task.
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,59}")


def default_instance_name(database: dict) -> str:
    """The instance's queue name when none is set: derived from its database.

    Every machine of one panel shares its database, so each of them derives the same name
    (a server database by its name alone: machines may reach the server by different
    addresses); two panels have two databases, hence two names. An SQLite database is one
    file on one machine: its absolute path names the instance.
    """
    if "sqlite" in database.get("ENGINE", ""):
        path = str(Path(database["NAME"]).resolve())
        return "panel-" + hashlib.sha256(path.encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", str(database.get("NAME") or ""))[:50]
    return f"panel-{name}" if name else "panel"


def env_instance_name(name: str, database: dict) -> str:
    """The instance's own name (``name`` in the environment, else ``default_instance_name``).

    It names the instance's django-q queue and salts the signature of its tasks, so two
    panels sharing one Redis never take each other's tasks (a foreign task would be dropped as
    badly signed, and its node left waiting for the sweep).
    """
    value = env_str(name).strip()
    if not value:
        return default_instance_name(database)
    if not _INSTANCE_NAME.fullmatch(value):
        raise BadSetting(
            f"{name} must be 1 to 60 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit, not {value!r}."
        )
    return value

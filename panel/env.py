"""Settings from the environment, checked when they are read.

A deployment is configured by environment variables (systemd units, the shell, CI). A typo in
one must stop the panel with one line that names the variable and says what it wants, not a
traceback from ``int()`` three frames down, and not a panel that starts with a silly value
(a lease of 0 seconds, -3 workers). ``manage.py`` and ``runpanel`` print ``BadSetting`` as
that one line and exit with 2.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured


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


def env_str(name: str, default: str = "") -> str:
    value = os.environ.get(name, default)
    if any(c in value for c in "\n\r\0"):
        raise BadSetting(f"{name} must be one line.")
    return value

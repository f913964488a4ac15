"""A node's facts as the columns the list shows and sorts (``Node.os_name``, ``cpus``, ...).

The facts types store what the node said as JSON (``Node.facts``, every key, for the API and
the node page) and, in the same UPDATE, these columns: placement asks "which nodes have 8
CPUs and 20 GiB of disk free", and that must be a plain column read and sort over the fleet,
not JSON parsed per row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


def os_label(facts: dict) -> str:
    """The OS by name: ``PRETTY_NAME`` ("Debian GNU/Linux 12 (bookworm)"), else name and
    version, else its id."""
    os = facts.get("os") or {}
    if not isinstance(os, dict):
        return ""
    pretty = str(os.get("pretty") or "").strip()
    if pretty:
        return pretty
    named = " ".join(str(os.get(k) or "").strip() for k in ("name", "version")).strip()
    return named or str(os.get("id") or "").strip()


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def fact_columns(facts: dict, collected_at: datetime) -> dict[str, Any]:
    """The node's column values for ``facts`` collected at ``collected_at`` (a time on the
    database's clock): what ``Node.objects.filter(...).update(**...)`` writes beside them."""
    uptime = _count(facts.get("uptime_seconds"))
    return {
        "os_name": os_label(facts)[:255],
        "kernel": str(facts.get("kernel") or "")[:255],
        "cpus": _count(facts.get("cpus")),
        "memory_mb": _count(facts.get("memory_mb")),
        "disk_free_mb": _count(facts.get("disk_available_mb")),
        "booted_at": collected_at - timedelta(seconds=uptime) if uptime is not None else None,
        "facts_at": collected_at,
    }

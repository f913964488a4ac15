"""Errors a person can read: short, the useful line first, no Python class names.

What a node says can be long (apt prints a page before its one ``E:`` line), hostile (a 21 MB
error) or full of terminal escapes. The row, the node and the list get one short line that
starts with what matters; the whole text goes to the run's log, itself capped.
"""

from __future__ import annotations

import enum
import re
import shlex

from nodes.transports import CommandFailed, TransportError
from nodes.transports.limits import printable

SHORT_CHARS = 300

# The lines that say what went wrong, in the order they are looked for: apt and dpkg, dnf,
# systemd, then anything that calls itself an error.
_USEFUL = [
    re.compile(r"^E: "),
    re.compile(r"^dpkg: error"),
    re.compile(r"^Error: "),
    re.compile(r"^No match for argument"),
    re.compile(r"^Failed to "),
    re.compile(r"^Unit \S+ not found"),
    re.compile(r"error", re.IGNORECASE),
]


class FailureKind(enum.Enum):
    """How a run failed, which decides the node's conditions."""

    UNREACHABLE = "unreachable"
    HOST_KEY = "host-key"
    FAILED = "failed"
    TIMEOUT = "timeout"


def short(text: str, limit: int = SHORT_CHARS) -> str:
    """One line, at most ``limit`` characters."""
    line = " ".join(printable(text[: limit * 4]).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def useful_line(text: str, scan_chars: int = 1 << 20) -> str:
    """The line of a command's output that says what went wrong (the last one as a fallback).

    Only the first and last ``scan_chars`` characters are read: a node may answer megabytes.
    """
    if len(text) > 2 * scan_chars:
        text = text[:scan_chars] + "\n" + text[-scan_chars:]
    lines = [line.strip() for line in printable(text).splitlines() if line.strip()]
    for pattern in _USEFUL:
        for line in lines:
            if pattern.search(line):
                return line
    return lines[-1] if lines else ""


def describe_failure(error: BaseException) -> tuple[FailureKind, str]:
    """The kind of failure and its short text for the row, the node and the list."""
    from nodes.transports.ssh import HostKeyChanged

    if isinstance(error, HostKeyChanged):
        return FailureKind.HOST_KEY, short(str(error))
    if isinstance(error, CommandFailed):
        program = error.argv[0] if error.argv else "command"
        if program == "env" and len(error.argv) > 2:  # env VAR=value program ...
            program = next((a for a in error.argv[1:] if "=" not in a), program)
        line = useful_line(error.stderr)
        exited = f"`{shlex.quote(program)}` exited with {error.exit_status}"
        return FailureKind.FAILED, short(f"{line} ({exited})" if line else exited)
    if isinstance(error, TransportError):
        text = str(error)
        unreachable = text.startswith(("unreachable", "connection to", "ssh channel refused"))
        return (FailureKind.UNREACHABLE if unreachable else FailureKind.FAILED), short(text)
    if isinstance(error, TimeoutError):
        return FailureKind.TIMEOUT, short(str(error) or "timed out")
    return FailureKind.FAILED, short(str(error) or "failed without a message")

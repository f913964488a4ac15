"""How much the panel takes from a node: a node may be hostile, and must not make a worker
use unbounded memory, nor put terminal escapes or bidi overrides in front of an admin.

Every reply frame, command output, error text and file read from a node is capped here, and
the text the panel keeps from a node (facts, log lines, error texts) is cleaned by ``clean``. The
SSH runner sends this module's source to the node ahead of ``remote_runner`` (see
``ssh.RUNNER_SOURCE``), so the node cuts honest output with the same helper and limits, and
an honest reply always fits in a frame: standard library only, Python 3.6 syntax.
"""

import unicodedata

MIB = 1024 * 1024

# One runner reply. The panel refuses a larger frame from its 4-byte length, before reading
# any of it. The largest honest reply is a read file: base64 makes FILE_LIMIT 10.7 MiB.
FRAME_LIMIT = 16 * MIB

# Stdout, and stderr, kept per command: head and tail, the middle cut (errors are often at
# the end). Enough for what the synchronizers parse (stat, sha256sum, dpkg-query...).
OUTPUT_LIMIT = 512 * 1024

# The largest file ``read_file`` returns; a larger one fails with a clear error rather than
# come back cut (a cut manifest would be silently wrong). The panel reads small text files.
FILE_LIMIT = 8 * MIB
FILE_TOO_LARGE = f"larger than {FILE_LIMIT // MIB} MiB, the most the panel reads from a node"

# Commas and brackets in one reply. A reply is one flat JSON object with a few keys; parsing a
# 16 MiB frame of ``[{},{},...]`` would build millions of objects (hundreds of MB).
REPLY_VALUES_LIMIT = 1000

# Characters of stderr in a CommandFailed message (what admins read in logs and pages).
MESSAGE_LIMIT = 1000

# Characters of one fact (a hostname is at most 64, an OS's pretty name a few dozen) and of one
# line of a run's log (a path, a command and its reason).
FACT_CHARS = 255
LOG_LINE_CHARS = 2000


def keep_head_and_tail(
    data: "bytes | str", limit: int, total: "int | None" = None
) -> "bytes | str":
    """``data`` (bytes or str) if it fits in ``limit``; else its head and its tail with a
    "[... N bytes cut ...]" marker between them, ``limit`` long in all (so a cut output fits,
    and is never cut twice).

    ``total`` is the size of the original when ``data`` is already a head and a tail (see
    ``Capture``), so the marker counts what was really cut.
    """
    total = len(data) if total is None else total
    if total <= limit:
        return data
    unit = "characters" if isinstance(data, str) else "bytes"
    keep = max(0, limit - len(f"\n[... {total} {unit} cut ...]\n"))
    marker = f"\n[... {total - keep} {unit} cut ...]\n"  # no longer: fewer or as many digits
    tail = keep // 2
    if not isinstance(data, str):
        marker = marker.encode("ascii")
    return data[: keep - tail] + marker + data[len(data) - tail :]


class Capture:
    """Output read in chunks of which only the head and the tail are kept: memory stays near
    ``limit`` however much the node sends."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._head = bytearray()
        self._tail = bytearray()

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit - self.limit // 2 - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            keep = self.limit // 2
            if len(self._tail) > max(2 * keep, 65536):  # trim in batches: linear, not quadratic
                del self._tail[: len(self._tail) - keep]

    @property
    def over(self) -> bool:
        """More than ``limit`` was fed: ``value()`` is cut."""
        return self.total > self.limit

    def value(self) -> bytes:
        keep = self.limit // 2
        tail = self._tail[len(self._tail) - keep :] if self.over else self._tail
        return keep_head_and_tail(bytes(self._head + tail), self.limit, self.total)


# --- text from a node, fit to store and to show ---------------------------------------------
#
# A node's hostname and OS name go into the facts and the pages, its errors into rows, the log
# file and the terminal of an admin running ``nodesync``. Terminal escapes (ESC, BEL) act on
# that terminal, a bidi override (U+202E) makes one name read as another on a page, and a
# 400,000-character hostname weighs on every page that shows it. ``clean`` is applied where
# such text enters the panel; the validators refuse the same characters, with
# ``has_control_chars``, in the data the panel sends.


def is_control(c: str) -> bool:
    """Unicode's "other" categories (control, format, surrogate, private use, unassigned) and
    the line and paragraph separators: what can split a line, act on a terminal, or make a
    name read as another (bidi marks and overrides are "format" characters)."""
    return unicodedata.category(c)[0] == "C" or c in "\u2028\u2029"


def has_control_chars(value: str) -> bool:
    """NUL, newline, escape, bidi overrides and the like: never in a name, a path or a log line."""
    return any(map(is_control, value))


def printable(text: str, keep: str = "\n\t") -> str:
    """``text`` with each control character but those in ``keep`` shown as ``?``."""
    if not any(is_control(c) and c not in keep for c in text):
        return text
    return "".join("?" if is_control(c) and c not in keep else c for c in text)


def clean(text: str, limit: int, *, one_line: bool = False) -> str:
    """``text`` from a node as the panel keeps it: at most ``limit`` characters (head and
    tail, the cut marked), control characters shown as ``?``; with ``one_line``, line breaks
    and tabs become spaces (a fact, a name)."""
    text = keep_head_and_tail(text, limit)
    if one_line:
        return printable(text.replace("\r\n", " ").replace("\n", " ").replace("\t", " "), "")
    return printable(text)

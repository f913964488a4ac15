"""How much the panel takes from a node: a node may be hostile, and must not make a worker
use unbounded memory.

Every reply frame, command output, error text and file read from a node is capped here. The
SSH runner sends this module's source to the node ahead of ``remote_runner`` (see
``ssh.RUNNER_SOURCE``), so the node cuts honest output with the same helper and limits, and
an honest reply always fits in a frame: standard library only, Python 3.6 syntax.
"""

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

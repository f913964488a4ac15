"""Checking what a node sent on the runner's channel before the panel uses it.

A hostile node does not run our runner: it answers whatever it likes. Each check turns a bad
answer into ``NotARunnerReply``, which the SSH transport reports with the node's name, instead
of a KeyError or a traceback, and without building more than a frame's worth of objects.
"""

from __future__ import annotations

import base64
import binascii
import json

from nodes.transports.base import MISSING, FileState, TransportError
from nodes.transports.limits import FRAME_LIMIT, MIB, REPLY_VALUES_LIMIT, clean

# A progress frame carries the last few KiB of a command's output (``remote_runner.TAIL_BYTES``,
# 4 KiB, base64 in JSON): anything far larger is not one.
PROGRESS_FRAME_LIMIT = 64 * 1024


class NotARunnerReply(Exception):
    """What the node sent is not a reply of the runner; the message says what it was."""


def bad_reply(node_name: str, error: NotARunnerReply) -> TransportError:
    """What admins read about a node that answered something else than the runner would."""
    return TransportError(f"{node_name} answered something that is not a runner reply: {error}")


def check_frame_size(size: int) -> None:
    """Refuse a frame from its length alone, before anything is read or allocated."""
    if size > FRAME_LIMIT:
        raise NotARunnerReply(
            f"a frame of {size} bytes, over the {FRAME_LIMIT // MIB} MiB limit for one reply"
        )


def check_progress_size(size: int) -> None:
    """Refuse a progress frame far larger than the runner's (a tail of TAIL_BYTES)."""
    if size > PROGRESS_FRAME_LIMIT:
        raise NotARunnerReply(
            f"a progress frame of {size} bytes, over the {PROGRESS_FRAME_LIMIT} bytes limit"
        )


def parse_reply(data: bytes) -> dict:
    """The frame ``data`` as the JSON object a runner reply is."""
    if sum(data.count(c) for c in (b",", b"[", b"{")) > REPLY_VALUES_LIMIT:
        raise NotARunnerReply(f"{len(data)} bytes with too many JSON values: {_start(data)}")
    try:
        reply = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        raise NotARunnerReply(f"not JSON: {_start(data)}") from None
    if not isinstance(reply, dict):
        raise NotARunnerReply(f"not a JSON object: {_start(data)}")
    return reply


def reply_int(reply: dict, key: str) -> int:
    value = reply.get(key)
    if type(value) is not int:  # bool is an int subclass, and not an exit status
        raise NotARunnerReply(f"{key!r} is not an integer in {_keys(reply)}")
    return value


def reply_bool(reply: dict, key: str) -> bool:
    value = reply.get(key)
    if type(value) is not bool:
        raise NotARunnerReply(f"{key!r} is not true or false in {_keys(reply)}")
    return value


def reply_bytes(reply: dict, key: str) -> bytes:
    """The base64 field ``key``, decoded."""
    value = reply.get(key)
    if not isinstance(value, str):
        raise NotARunnerReply(f"{key!r} is not a string in {_keys(reply)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise NotARunnerReply(f"{key!r} is not base64: {value[:60]!r}") from None


def reply_error(reply: dict) -> str | None:
    """The runner's error message, if the reply is one."""
    if "error" not in reply:
        return None
    return clean(str(reply["error"]), 500)


def reply_file_state(answer: object, path: str) -> FileState:
    """One answer of a ``stat`` reply, about ``path``, as a FileState."""
    if not isinstance(answer, dict):
        raise NotARunnerReply(f"the answer about {path[:200]} is not a JSON object")
    if (error := reply_error(answer)) is not None:
        return FileState("refused", reason=error)
    kind = answer.get("type")
    if kind == "missing":
        return MISSING
    if kind != "file":
        raise NotARunnerReply(f"the answer about {path[:200]} has no known type: {_keys(answer)}")
    sha256 = answer.get("sha256")
    if not isinstance(sha256, str) or len(sha256) != 64 or not _is_hex(sha256):
        raise NotARunnerReply(f"the answer about {path[:200]} has no sha256")
    mode = reply_int(answer, "mode")
    if not 0 <= mode <= 0o7777:
        raise NotARunnerReply(f"the answer about {path[:200]} has an odd mode {mode}")
    return FileState(
        "file",
        mode=mode,
        uid=reply_int(answer, "uid"),
        gid=reply_int(answer, "gid"),
        owner=_name(answer, "owner"),
        group=_name(answer, "group"),
        sha256=sha256,
    )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _name(reply: dict, key: str) -> str:
    """A user or group name of a reply; empty for none (a number without a name)."""
    value = reply.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 256:
        raise NotARunnerReply(f"{key!r} is not a name in {_keys(reply)}")
    return value


def _start(data: bytes) -> str:
    return repr(data[:60]) + ("..." if len(data) > 60 else "")


def _keys(reply: dict) -> str:
    return "a reply with keys " + repr(sorted(reply)[:10])[:200]

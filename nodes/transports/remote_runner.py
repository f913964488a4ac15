"""The command runner a node session starts once on an SSH node (``python3 -c``).

Every command over plain SSH costs a new channel and a new session on the node: three round
trips and, on the node, a good part of sshd's work for a whole login. This runner keeps one
channel open for the session and runs each request with ``subprocess`` (argument lists, no
shell), so a command costs one round trip. Messages are a 4-byte length and JSON; bytes travel
as base64. Standard library only, and Python 3.6 syntax, for old nodes.
"""
# ruff: noqa: UP022 - capture_output is Python 3.7+, and nodes may be older

import base64
import grp
import json
import os
import pwd
import struct
import subprocess
import sys
import tempfile


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _read(stream):
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    return json.loads(stream.read(size).decode("utf-8"))


def _write(stream, message):
    data = json.dumps(message).encode("utf-8")
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _run(request):
    data = request.get("input")
    try:
        proc = subprocess.run(
            request["argv"],
            input=base64.b64decode(data) if data is not None else None,
            stdin=subprocess.DEVNULL if data is None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=request.get("timeout"),
        )
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    except OSError as e:  # not found, not executable: what a shell would say, and its code
        return {
            "rc": 126 if isinstance(e, PermissionError) else 127,
            "out": "",
            "err": _b64(f"{request['argv'][0]}: {e.strerror}\n".encode()),
        }
    return {"rc": proc.returncode, "out": _b64(proc.stdout), "err": _b64(proc.stderr)}


def _put(request):
    path = request["path"]
    fd, tmp = tempfile.mkstemp(prefix=".panel-", dir=os.path.dirname(path) or "/")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(request["data"]))
        owner, group = request.get("owner"), request.get("group")
        if owner or group:
            uid = pwd.getpwnam(owner).pw_uid if owner else -1
            gid = grp.getgrnam(group).gr_gid if group else -1
            os.chown(tmp, uid, gid)
        os.chmod(tmp, request["mode"])  # after chown, which clears setuid and setgid bits
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return {"ok": True}


def _read_file(request):
    with open(request["path"], "rb") as f:
        return {"data": _b64(f.read())}


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    handlers = {"run": _run, "put": _put, "read": _read_file, "hello": lambda r: {"ok": True}}
    while True:
        request = _read(stdin)
        if request is None:
            return
        try:
            reply = handlers[request["op"]](request)
        except KeyError as e:
            reply = {"error": f"unknown user or group: {e}"}
        except OSError as e:
            reply = {"error": f"{e.filename or request.get('path', '')}: {e.strerror}"}
        _write(stdout, reply)


if __name__ == "__main__":
    main()

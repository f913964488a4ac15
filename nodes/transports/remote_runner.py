"""The command runner a node session starts once on an SSH node (``python3 -c``).

Every command over plain SSH costs a new channel and a new session on the node: three round
trips and, on the node, a good part of sshd's work for a whole login. This runner keeps one
channel open for the session and runs each request with ``subprocess`` (argument lists, no
shell), so a command costs one round trip. Standard library only, and Python 3.6 syntax, for
old nodes (``tests/integration/test_node_python.py`` runs it under 3.6). Longer than the
transports' usual 400 lines: it is sent to the node as one self-contained file.

Protocol (version ``PROTOCOL``). Every message, both ways, is a frame: a 4-byte big-endian
length, then that many bytes of one UTF-8 JSON object; bytes travel as base64.

1. At start, before reading anything, the runner sends ``{"runner": "cluster-panel",
   "protocol": PROTOCOL}``. This first frame keeps this shape in every version, so a panel
   can always read which protocol a runner speaks; the panel refuses any other version.
2. The panel sends ``{"op": "session", "session": {"lock": PATH, "id": ID} | null}``; the
   runner takes the node for that session (``NodeSession``) and answers ``{"ok": true}``.
3. Then one request at a time, each answered by one reply (``{"error": TEXT}`` when it was
   not done, the text complete for admins):

   - ``run``: ``argv``, ``input`` (base64 or null), ``timeout`` (s or null), ``progress``
     (bool) -> ``{"rc", "out", "err"}`` or ``{"timeout": true}``; with ``progress``,
     ``{"progress": TAIL}`` frames come first, about every second while it runs.
   - ``put``: ``path``, ``data``, ``mode``, ``owner``, ``group`` -> ``{"ok": true}``
   - ``mkdir``: ``path``, ``mode``, ``owner``, ``group``, ``trusting`` -> ``{"ok": true}``
   - ``read``: ``path`` -> ``{"data"}``
   - ``remove``: ``path``, ``trusting`` -> ``{"removed": bool}``
   - ``stat``: ``paths`` -> ``{"files": [ANSWER, ...]}``, one answer per path, in order:
     ``{"type": "file", "mode", "uid", "gid", "owner", "group", "sha256"}`` (names null when
     the node has none), ``{"type": "missing"}``, or ``{"error": TEXT}`` (not a regular file)
   - ``attrs``: ``path``, ``mode``, ``owner``, ``group``, ``sha256`` (each may be null)
     -> ``{"ok": true}``
   - ``release`` -> ``{"ok": true}``: the panel's session is over; the node's lock no longer
     names it (a later command of it is refused), and the runner waits for the next
     ``session`` request: a panel keeps a runner between its sessions on the node (a warm
     connection), taking and releasing the node for each one.
   - ``session`` again (after a ``release``, or to hand the runner to a newer session of the
     same panel): the node is taken for that session, as at the start.

The panel closing its end ends the running command, the session and the runner. Version 1
was the unversioned runner, which spoke only after the panel's ``hello``; version 3 added
``stat`` and ``attrs``; version 4 ``release`` (and ``session`` more than once).

Work on the node ends with its run: every command runs in a session (process group) of its
own, and a timeout, a closed channel (the panel cancelled, was killed, or lost the
connection) or a newer session taking the node over ends the whole group, TERM then KILL.
One synchronizer per node holds on the node itself (``NodeSession``), not only in the panel's
tables. The file functions (``write_file``, ``make_dir``, ``read_file``, ``remove_file``,
``stat_file``, ``set_attrs``) are the only implementation of file work on a node: the local
transport runs them on a thread.
"""
# ruff: noqa: UP022 - capture_output is Python 3.7+, and nodes may be older

import base64
import errno
import fcntl
import grp
import hashlib
import json
import os
import pwd
import queue
import signal
import stat
import struct
import subprocess
import sys
import threading
import time

if __name__ != "__main__":  # imported by the panel; on the node, channel.py sends limits.py first
    from nodes.transports.limits import (
        FILE_LIMIT,
        FILE_TOO_LARGE,
        FRAME_LIMIT,
        MIB,
        OUTPUT_LIMIT,
        Capture,
    )

# The version of the frames and requests in the docstring: the runner's first frame says it,
# and the panel refuses a runner that speaks another. Change it with any change to them.
PROTOCOL = 4


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
    if len(data) > FRAME_LIMIT:  # not with the caps below; the panel would refuse the frame
        error = f"the reply was {len(data)} bytes, over the {FRAME_LIMIT // MIB} MiB limit"
        data = json.dumps({"error": error}).encode("utf-8")
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _run_op(request):
    data = request.get("input")
    on_output = None
    if request.get("progress"):  # the panel watches the run: send the output's tail as it grows

        def on_output(tail):
            _write(sys.stdout.buffer, {"progress": _b64(tail)})

    try:
        result = run_command(
            request["argv"],
            None if data is None else base64.b64decode(data),
            request.get("timeout"),
            _SESSION,
            on_output=on_output,
        )
    except SessionTakenOver as e:
        return {"error": str(e)}
    except OSError as e:  # not found, not executable: what a shell would say, and its code
        return {
            "rc": 126 if isinstance(e, PermissionError) else 127,
            "out": "",
            "err": _b64(f"{request['argv'][0]}: {e.strerror}\n".encode()),
        }
    if result is None:
        return {"timeout": True}
    rc, out, err = result
    return {"rc": rc, "out": _b64(out), "err": _b64(err)}


class Command:
    """A command started on this node; ``end()`` ends its whole group, from any thread."""

    def __init__(self):
        self.proc = None
        self.ended = False

    def end(self):
        self.ended = True
        if self.proc is not None:
            end_group(self.proc.pid, self.proc)


def run_command(
    argv, data=None, timeout=None, session=None, command=None, on_output=None, env=None
):
    """Run one command in a process group of its own; (status, stdout, stderr), or None when
    it timed out (its group ended). Raises SessionTakenOver, or OSError when it cannot start.

    Its stdout and stderr are read as they come and only their heads and tails kept
    (OUTPUT_LIMIT each): a command printing gigabytes costs neither the node's memory nor a
    reply over the panel's frame limit, and its last lines still arrive. With ``on_output``,
    the last TAIL_BYTES of its output are passed to it about every PROGRESS_SECONDS while it
    runs (whoever watches the run sees what it prints). ``env``: its whole environment (the
    caller's when None).
    """
    command = command or Command()
    deadline = None if timeout is None else time.monotonic() + timeout

    def start():
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own group: ended whole, children included
            env=env,
        )

    proc = session.spawn(start) if session else start()
    command.proc = proc
    _RUNNING.append(command)
    try:
        if command.ended:  # cancelled while it started
            end_group(proc.pid, proc)
        return _wait(proc, argv, data, timeout, deadline, on_output)
    except BaseException:  # SIGHUP or SIGTERM (SystemExit) mid-command: the command ends too
        end_group(proc.pid, proc)
        raise
    finally:
        _RUNNING.remove(command)
        if session:
            session.finished(proc)


TAIL_BYTES = 4096
PROGRESS_SECONDS = 1.0


class Tail:
    """The last TAIL_BYTES of a command's output, both streams together, as it is printed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.data = b""
        self.version = 0

    def feed(self, chunk):
        with self.lock:
            self.data = (self.data + chunk)[-TAIL_BYTES:]
            self.version += 1

    def text(self):
        with self.lock:
            return self.data


def _wait(proc, argv, data, timeout, deadline, on_output=None):
    out, err = Capture(OUTPUT_LIMIT), Capture(OUTPUT_LIMIT)
    tail = Tail() if on_output else None
    readers = [
        _thread(_collect, proc.stdout, out, tail),
        _thread(_collect, proc.stderr, err, tail),
    ]
    if data is not None:
        _thread(_feed, proc.stdin, data)
    try:
        seen = 0
        for reader in readers:  # till end of output, like communicate()
            while True:
                left = _left(deadline)
                if tail is not None:
                    left = PROGRESS_SECONDS if left is None else min(PROGRESS_SECONDS, left)
                reader.join(left)
                if tail is not None and tail.version != seen:
                    seen = tail.version
                    on_output(tail.text())
                if not reader.is_alive():
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(argv, timeout)
        proc.wait(_left(deadline))
    except subprocess.TimeoutExpired:
        end_group(proc.pid, proc)
        for reader in readers:
            reader.join(GRACE_SECONDS)
        return None
    return proc.returncode, out.value(), err.value()


def _thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _collect(pipe, capture, tail=None):
    with pipe:
        for chunk in iter(lambda: os.read(pipe.fileno(), 65536), b""):
            capture.feed(chunk)
            if tail is not None:
                tail.feed(chunk)


def _feed(pipe, data):
    try:
        with pipe:
            pipe.write(data)
    except OSError:  # BrokenPipeError: the command did not read it all; its status says more
        pass


def _left(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


# --- writes and removes that cannot be redirected -------------------------------------------
#
# Root writes and removes files in folders that unprivileged users may control (a user's
# ~/.ssh). A path is a name that such a user can re-point between two system calls (a symbolic
# link in place of a folder or of the temporary file), so nothing here uses a path twice: each
# folder is opened from "/" one component at a time without following links, and everything
# after that acts on descriptors. The local transport calls these same functions.

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    """A file or folder operation that was not done; the message is complete, for admins."""


def split_path(path, what):
    """The components of an absolute path; ``.``, ``..`` and relative paths are refused."""
    parts = [p for p in path.split("/") if p]
    if not path.startswith("/") or any(p in (".", "..") for p in parts):
        raise Refused(f"cannot {what}: the path must be absolute, without . or ..")
    return parts


def _ids(owner, group, what, whose="the owner"):
    """The uid and gid of ``owner`` and ``group`` (-1 for none); Refused names the one this
    node does not have, as ``whose`` it is (the owner, or the owner of the file to come)."""
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
    except KeyError:
        raise Refused(f"cannot {what}: {whose} {owner} is not a user on this node") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        raise Refused(f"cannot {what}: the group {group} is not a group on this node") from None
    return uid, gid


def _trusted(uid):
    """Who may own the folders on the way: root, this process, and the user written for
    (a user's own folders can only be re-pointed at what that user can already reach)."""
    return {0, os.geteuid()} | ({uid} if uid != -1 else set())


def _open_folder(dir_fd, name, shown, what, trusted, missing_ok=False):
    """Open ``name`` in ``dir_fd`` as a folder, never through a link, owned by ``trusted``
    (None: by anyone, for reads); with ``missing_ok``, None when there is nothing by that
    name."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if missing_ok and e.errno == errno.ENOENT:
            return None
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise Refused(f"cannot {what}: {shown}: {e.strerror}") from None
        # A link fails with either; a folder here now was a link a moment ago (swapped back).
        try:
            kind = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            kind = stat.S_IFLNK
        if not (stat.S_ISLNK(kind) or stat.S_ISDIR(kind)):
            raise Refused(f"cannot {what}: {shown} is not a folder") from None
        raise Refused(f"refusing to {what}: {shown} is a symbolic link") from None
    owner = os.fstat(fd).st_uid
    if trusted is not None and owner not in trusted:
        os.close(fd)
        raise Refused(f"refusing to {what}: {shown} is owned by uid {owner}")
    return fd


def _walk(parts, what, trusted, create=False, missing_ok=False):
    """A descriptor of the folder ``/parts...``; with ``create``, missing folders are made
    (root's, 0755 less the umask, like ``mkdir -p``); with ``missing_ok``, None when a folder
    on the way does not exist."""
    fd = os.open("/", _DIR_FLAGS)
    shown = ""
    try:
        for name in parts:
            shown += "/" + name
            if create:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise Refused(f"cannot {what}: {shown}: {e.strerror}") from None
            next_fd = _open_folder(fd, name, shown, what, trusted, missing_ok)
            os.close(fd)
            fd = next_fd
            if fd is None:
                return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_temp(dir_fd):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        name = ".panel-" + base64.b16encode(os.urandom(6)).decode("ascii").lower() + ".tmp"
        try:
            return name, os.open(name, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name")


def _set_owner_and_mode(fd, uid, gid, mode):
    """Set owner (-1: keep) then mode (None: keep) on a descriptor, never by path: fchown
    clears setuid and setgid bits, so the mode comes after it."""
    if uid != -1 or gid != -1:
        os.fchown(fd, uid, gid)
    if mode is not None:
        os.fchmod(fd, mode)


def write_file(path, data, mode, owner=None, group=None):
    """Replace ``path`` with ``data`` atomically: a temporary file made in the folder's
    descriptor, chowned and chmodded through its own descriptor, renamed within the folder.

    Folders on the way may belong to root, to this process, or to ``owner``; a symbolic link
    or another user's folder on the way is refused (Refused, with the reason).
    """
    what = f"write {path}"
    parts = split_path(path, what)
    if not parts:
        raise Refused(f"cannot {what}: it is the root folder")
    uid, gid = _ids(owner, group, what)
    dir_fd = _walk(parts[:-1], what, _trusted(uid))
    try:
        tmp, fd = _create_temp(dir_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                _set_owner_and_mode(fd, uid, gid, mode)
                os.fsync(fd)
                os.rename(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dir_fd)
                except OSError:
                    pass
                raise
            # The folder's owner may have put something else in the temporary file's place.
            ours = os.fstat(fd)
            there = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino):
                raise Refused(f"refusing to {what}: the file was replaced while written")
        finally:
            os.close(fd)
    except OSError as e:
        raise Refused(f"cannot {what}: {e.strerror}") from None
    finally:
        os.close(dir_fd)


def make_dir(path, mode=None, owner=None, group=None, trusting=None):
    """Make the folder ``path`` and the missing ones above it, like ``mkdir -p``; with
    ``mode``, ``owner`` or ``group``, set them on the folder (made or already there) through
    its descriptor, like ``install -d``.

    Folders on the way may belong to root, to this process, or to ``owner`` (or to
    ``trusting``: the user a file will be written for there); anything else is refused.
    """
    what = f"make the folder {path}"
    parts = split_path(path, what)
    uid, gid = _ids(owner, group, what)
    trusted = _trusted(uid) | _trusted(_ids(trusting, None, what, "the file's owner")[0])
    if not parts:
        return
    parent_fd = _walk(parts[:-1], what, trusted, create=True)
    try:
        try:
            os.mkdir(parts[-1], 0o755 if mode is None else 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass
        fd = _open_folder(parent_fd, parts[-1], path, what, trusted)
        try:
            _set_owner_and_mode(fd, uid, gid, mode)
        finally:
            os.close(fd)
    except OSError as e:
        raise Refused(f"cannot {what}: {e.strerror}") from None
    finally:
        os.close(parent_fd)


def read_file(path):
    """The bytes of ``path``, up to FILE_LIMIT: a larger file is refused, never cut (a cut
    manifest would be silently wrong). Reads follow links (they only read: /etc/os-release is
    one), but only a regular file is read: a FIFO, socket or device is refused, and opened
    without blocking to find out (a FIFO with no writer would hold the session for ever)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise Refused(f"cannot read {path}: {e.strerror}") from None
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise _not_regular(path, kind, f"read {path}")
        data = _read_all(fd, FILE_LIMIT + 1)
    except OSError as e:
        raise Refused(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > FILE_LIMIT:
        raise Refused(f"cannot read {path}: {FILE_TOO_LARGE}")
    return data


def _read_all(fd, limit):
    chunks, size = [], 0
    while size < limit:
        chunk = os.pread(fd, min(1 << 20, limit - size), size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# --- reading a file's state, and changing its mode and owner, through one descriptor -------
#
# ``stat``, ``sha256sum`` and ``chmod`` name a path three times: between the read and the
# change, the owner of a folder on the way re-points the name at any file of root's (a link,
# or the folder itself swapped with renameat2). Here the file is found like the writes find
# their folder (from "/", no link followed), opened without following a link or blocking,
# checked to be a regular file, and everything read or changed is of that descriptor.

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(shown, kind, what):
    name = next((name for test, name in _KINDS if test(kind)), "a special file")
    return Refused(f"refusing to {what}: {shown} is {name}, not a regular file")


def _open_regular(dir_fd, name, shown, what):
    """A read-only descriptor of the regular file ``name`` in ``dir_fd``; None when there is
    none. Its kind is looked at before it is opened (a device is never opened) and again on
    the descriptor (it may have been swapped in between); a link is never followed."""
    try:
        kind = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(kind):
        raise _not_regular(shown, kind, what)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _not_regular(shown, stat.S_IFLNK, what) from None
        raise Refused(f"cannot {what}: {e.strerror}") from None
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        raise _not_regular(shown, kind, what)
    return fd


def _sha256(fd, shown):
    """The checksum of the file, read up to FILE_LIMIT: a larger one (a user's sparse file of
    terabytes) is refused rather than hold the session; the panel writes no such file."""
    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        offset += len(chunk)
        if offset > FILE_LIMIT:
            raise Refused(f"refusing to read {shown}: {FILE_TOO_LARGE}")


def _name(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return None


def stat_file(path):
    """What ``path`` is, read from one descriptor: ``{"type": "file", "mode", "uid", "gid",
    "owner", "group", "sha256"}``, or ``{"type": "missing"}`` when nothing is there (nor,
    perhaps, its folder). Anything but a regular file reached without a link is refused,
    saying what it is.

    Folders of any owner are walked (this changes nothing); an act on the file opens it
    again under the writes' rules (``set_attrs``), and may check it still holds what was read.
    """
    what = f"read {path}"
    parts = split_path(path, what)
    if not parts:
        raise Refused(f"refusing to {what}: / is a folder, not a regular file")
    dir_fd = _walk(parts[:-1], what, None, missing_ok=True)
    if dir_fd is None:
        return {"type": "missing"}
    try:
        fd = _open_regular(dir_fd, parts[-1], path, what)
        if fd is None:
            return {"type": "missing"}
        try:
            st = os.fstat(fd)
            return {
                "type": "file",
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "owner": _name(pwd.getpwuid, st.st_uid),
                "group": _name(grp.getgrgid, st.st_gid),
                "sha256": _sha256(fd, path),
            }
        finally:
            os.close(fd)
    except OSError as e:
        raise Refused(f"cannot {what}: {e.strerror}") from None
    finally:
        os.close(dir_fd)


def _others_can_link_in(dir_fd):
    """Whether someone but root can put a name in this folder (a hard link to root's file)."""
    st = os.fstat(dir_fd)
    return st.st_uid != 0 or bool(st.st_mode & 0o022)


def set_attrs(path, mode=None, owner=None, group=None, sha256=None):
    """Set the mode and owner of the regular file ``path`` through its descriptor: ``fchown``
    then ``fchmod`` (chown clears setuid and setgid bits; set after, they stay). With
    ``sha256``, only if the file still holds those bytes (what was read is what is changed).

    The file is reached like ``write_file``'s folder (no link, folders of root, of this
    process or of ``owner`` only); a file with other hard links in a folder that a user can
    change is refused too (a link to root's file made there would be changed).
    """
    what = f"change {path}"
    parts = split_path(path, what)
    if not parts:
        raise Refused(f"cannot {what}: it is the root folder")
    uid, gid = _ids(owner, group, what)
    dir_fd = _walk(parts[:-1], what, _trusted(uid))
    try:
        fd = _open_regular(dir_fd, parts[-1], path, what)
        if fd is None:
            raise Refused(f"cannot {what}: there is no such file")
        try:
            links = os.fstat(fd).st_nlink
            if links > 1 and _others_can_link_in(dir_fd):
                raise Refused(
                    f"refusing to {what}: it has {links} hard links, in a folder others can change"
                )
            if sha256 is not None and _sha256(fd, path) != sha256:
                raise Refused(f"refusing to {what}: it was changed since it was read")
            _set_owner_and_mode(fd, uid, gid, mode)
        finally:
            os.close(fd)
    except OSError as e:
        raise Refused(f"cannot {what}: {e.strerror}") from None
    finally:
        os.close(dir_fd)


def remove_file(path, trusting=None):
    """Remove the file ``path``: True when there was one, False when there was nothing there
    (nor, perhaps, its folder). A folder is refused, never removed.

    The folder is reached like ``write_file``'s, so a user who swaps a folder on the way for
    a link cannot make root remove the same name elsewhere: no link is followed, and folders
    may belong to root, to this process, or to ``trusting`` (the user the file was for) only.
    The name is then unlinked in the folder's descriptor; a link there is removed, not what it
    points at.
    """
    what = f"remove {path}"
    parts = split_path(path, what)
    if not parts:
        raise Refused(f"cannot {what}: it is the root folder")
    trusted = _trusted(_ids(trusting, None, what, "the file's owner")[0])
    dir_fd = _walk(parts[:-1], what, trusted, missing_ok=True)
    if dir_fd is None:
        return False
    try:
        try:
            kind = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(kind):
                raise Refused(f"refusing to {what}: it is a folder")
            os.unlink(parts[-1], dir_fd=dir_fd)  # unlinkat: never a folder, nor through a link
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno == errno.EISDIR:  # a folder put there since the check
                raise Refused(f"refusing to {what}: it is a folder") from None
            raise Refused(f"cannot {what}: {e.strerror}") from None
        return True
    finally:
        os.close(dir_fd)


def _put_op(request):
    write_file(
        request["path"],
        base64.b64decode(request["data"]),
        request["mode"],
        request.get("owner"),
        request.get("group"),
    )
    return {"ok": True}


def _mkdir_op(request):
    make_dir(
        request["path"],
        request.get("mode"),
        request.get("owner"),
        request.get("group"),
        request.get("trusting"),
    )
    return {"ok": True}


def _read_op(request):
    return {"data": _b64(read_file(request["path"]))}


def _remove_op(request):
    return {"removed": remove_file(request["path"], request.get("trusting"))}


def _stat_one(path):
    try:
        return stat_file(path)
    except Refused as e:
        return {"error": str(e)}


def _stat_op(request):
    paths = request["paths"]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ValueError("paths must be a list of strings")
    return {"files": [_stat_one(path) for path in paths]}


def _attrs_op(request):
    set_attrs(
        request["path"],
        request.get("mode"),
        request.get("owner"),
        request.get("group"),
        request.get("sha256"),
    )
    return {"ok": True}


# The file requests: what the local transport hands to ``handle`` on a thread, too.
FILE_HANDLERS = {
    "put": _put_op,
    "mkdir": _mkdir_op,
    "read": _read_op,
    "remove": _remove_op,
    "stat": _stat_op,
    "attrs": _attrs_op,
}


def handle(request, handlers):
    """The reply to one request: an answer, never an exception (the channel stays usable)."""
    if not isinstance(request, dict):
        return {"error": "a request must be a JSON object"}
    handler = handlers.get(request.get("op"))
    try:
        if handler is None:
            raise ValueError(f"unknown request {request.get('op')!r}")
        return handler(request)
    except Refused as e:
        return {"error": str(e)}
    except KeyError as e:
        return {"error": f"the request has no {e}"}
    except OSError as e:
        return {"error": f"{e.filename or request.get('path', '')}: {e.strerror}"}
    except Exception as e:  # a bad request or a bug: an answer, not a dead channel
        return {"error": f"{type(e).__name__}: {e}"}


# --- one synchronizer per node, on the node ------------------------------------------------

GRACE_SECONDS = 2.0


class SessionTakenOver(Exception):
    """Another session took the node over: this one may start nothing more."""


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_group(pgid, proc=None):
    """End a command's whole process group: TERM, then KILL after a short grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is None:
                time.sleep(0.05)
                continue
            if not _group_alive(pgid):
                break
            time.sleep(0.05)
        else:
            continue
        break
    if proc is not None:
        try:
            proc.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass


def _start_ticks(pid):
    """When the process started (clock ticks since boot), so a reused pid is never ended."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class NodeSession:
    """The node's one session at a time, kept in a lock file on the node.

    The file names the session that owns the node and the process group of the command it
    runs now. A new session (the panel's lease moved: a forced takeover, a lost lease) takes
    the node over: it ends the old session's running command, whole, and writes itself in; the
    old session's next command is refused. Every change is made under ``flock``, and a command
    is started and recorded under it too, so no two sessions' commands ever run at once.
    """

    def __init__(self, lock_path, session_id):
        if os.geteuid() != 0:  # a login user without root cannot write the runtime folder
            home = os.path.expanduser("~")
            lock_path = os.path.join(home, ".cache", "cluster-panel", os.path.basename(lock_path))
        self.lock_path = lock_path
        self.session_id = session_id

    def _locked(self, change):
        parts = split_path(self.lock_path, "lock the node")
        dir_fd = _walk(parts[:-1], "lock the node", {0, os.geteuid()}, create=True)
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(parts[-1], flags, 0o600, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 4096, 0)
            try:
                state = json.loads(raw.decode("utf-8")) if raw else {}
            except ValueError:
                state = {}
            if not isinstance(state, dict):
                state = {}
            result, new_state = change(state)
            if new_state != state:
                data = json.dumps(new_state).encode("utf-8")
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            return result
        finally:
            os.close(fd)  # releases the flock

    def take_over(self):
        """Own the node; end whatever another session runs there. Returns what was ended."""

        def change(state):
            ended = ""
            pgid, started = state.get("pgid"), state.get("start")
            if state.get("owner") not in (None, self.session_id) and pgid:
                if started is None or _start_ticks(pgid) == started:
                    end_group(pgid)
                    ended = f"ended the command of session {state.get('owner')}"
            return ended, {"owner": self.session_id, "pgid": None, "start": None}

        return self._locked(change)

    def spawn(self, start):
        def change(state):
            if state.get("owner") != self.session_id:
                raise SessionTakenOver(
                    f"another session took this node over ({state.get('owner')}); "
                    "this one runs nothing more"
                )
            proc = start()
            return proc, {
                "owner": self.session_id,
                "pgid": proc.pid,
                "start": _start_ticks(proc.pid),
            }

        return self._locked(change)

    def finished(self, proc):
        def change(state):
            if state.get("owner") == self.session_id and state.get("pgid") == proc.pid:
                return None, {"owner": self.session_id, "pgid": None, "start": None}
            return None, state

        self._locked(change)

    def release(self):
        def change(state):
            if state.get("owner") == self.session_id:
                return None, {"owner": None, "pgid": None, "start": None}
            return None, state

        try:
            self._locked(change)
        except (OSError, Refused):
            pass


_SESSION = None  # the runner's NodeSession, from the panel's session request
_RUNNING = []  # the Commands running now in this process


def _session_op(request):
    """Take the node for the panel's session named in the request (the first request, or
    the next session on a runner the panel kept: a warm connection)."""
    global _SESSION
    session = request.get("session")
    if session:
        new = NodeSession(session["lock"], session["id"])
        if _SESSION is not None and _SESSION.session_id != new.session_id:
            _SESSION.release()  # the previous session of this runner, if it still holds it
        _SESSION = new
        try:
            _SESSION.take_over()
        except (OSError, Refused) as e:
            return {"error": f"cannot lock the node for this session: {e}"}
    return {"ok": True}


def _release_op(request):
    """The panel's session is over, the runner stays for the next one: the node's lock no
    longer names this session, so another panel worker takes the node without ending
    anything, and a command sent before the next ``session`` is refused."""
    if _SESSION is not None:
        _SESSION.release()
    return {"ok": True}


def _abort():
    """The channel closed: end the running command, whole, and the session."""
    for command in list(_RUNNING):
        command.end()
    if _SESSION:
        _SESSION.release()


def _read_requests(stream, requests):
    """Read requests on a thread of its own, so a closed channel is noticed while a command
    runs (the panel sends nothing else meanwhile): then the command is ended at once."""
    while True:
        try:
            request = _read(stream)
        except Exception:  # garbled or gone: the same as a closed channel, never a hung runner
            request = None
        if request is None:
            _abort()
            requests.put(None)
            return
        requests.put(request)


def _terminated(signum, frame):
    raise SystemExit(1)


def _raw_terminal():
    """On the terminal the panel asks for (``channel.RAW_TERMINAL``: so that closing the
    channel hangs up whatever the node started), pass bytes as they are, before the first
    frame: no echo, no line editing, no signal from a ^C byte, no newline translation. This
    process's own stderr (a warning, a thread's traceback) goes to /dev/null, not into the
    frames. Nothing to do on pipes."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        return
    import termios

    mode = termios.tcgetattr(fd)
    mode[0] &= ~(
        termios.IGNBRK
        | termios.BRKINT
        | termios.PARMRK
        | termios.ISTRIP
        | termios.INLCR
        | termios.IGNCR
        | termios.ICRNL
        | termios.IXON
        | termios.IXOFF
        | termios.INPCK
    )
    mode[1] &= ~termios.OPOST
    mode[2] = (mode[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    mode[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def main():
    _raw_terminal()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _write(stdout, {"runner": "cluster-panel", "protocol": PROTOCOL})  # before anything else
    handlers = dict(FILE_HANDLERS, run=_run_op, session=_session_op, release=_release_op)
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGHUP, _terminated)
    requests = queue.Queue()
    threading.Thread(target=_read_requests, args=(stdin, requests), daemon=True).start()
    try:
        _serve(handlers, requests, stdout)
    finally:
        _abort()


def _serve(handlers, requests, stdout):
    while True:
        request = requests.get()
        if request is None:
            return
        _write(stdout, handle(request, handlers))


if __name__ == "__main__":
    main()

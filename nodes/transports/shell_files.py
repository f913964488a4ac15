"""File work on a node without python3: ``sh`` scripts, in the one place they are written.

The runner's descriptor-based writes cannot be done from ``sh``: sh can only name paths, and
a user who owns a folder on the way can re-point a name between two commands (a link in place
of ~/.ssh or of the temporary file, and chown follows it). So the scripts work only where no
unprivileged user can change any name: every folder from / down is a real folder (no link)
owned by root (or by the login user), and none is writable by others, except a sticky folder
above the target (/tmp: others cannot rename root's entries there). Anything else is refused
(exit 3) with the reason; such a node needs python3 for files in users' folders. ``trusting``
adds nobody here. Reading a file's state and setting its mode and owner (``stat``,
``sha256sum``, ``chown``, ``chmod``, which name the path each time) are stricter still: they
are done only where every folder is root's, and refused in any folder a user owns, saying
that the panel does that only through its runner. The scripts are fixed; paths and names
arrive as positional arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nodes.transports import remote_runner
from nodes.transports.base import MISSING, FileState, TransportError
from nodes.transports.fileops import STAT_BATCH, FileOps
from nodes.transports.limits import FILE_LIMIT, FILE_TOO_LARGE
from nodes.transports.streams import PlainOutput

_SAFE_FOLDERS = (
    "refuse() { printf '%s\\n' \"$1\" >&2; exit 3; }; "
    # owned WHAT USER DIR: DIR on the way belongs to USER (a script may say it its own way).
    'owned() { refuse "refusing to $1: the node has no python3: cannot safely write into '
    'a folder owned by $2 ($3)"; }; '
    # safe WHAT DIR STRICT: DIR and the folders above it are safe to write in, as above.
    'safe() { d=$2; strict=$3; me=$(id -u); nopy="the node has no python3: cannot safely"; '
    "while :; do "
    "info=$(LC_ALL=C stat -c '%F:%u:%U:%a' -- \"$d\" 2>/dev/null) || "
    'refuse "cannot $1: cannot stat $d"; '
    "kind=${info%%:*}; rest=${info#*:}; uid=${rest%%:*}; rest=${rest#*:}; "
    "user=${rest%%:*}; perm=${rest#*:}; "
    '[ "$kind" != "symbolic link" ] || refuse "refusing to $1: $d is a symbolic link"; '
    '[ "$kind" = directory ] || refuse "cannot $1: $d is not a folder"; '
    '[ "$uid" = 0 ] || [ "$uid" = "$me" ] || owned "$1" "$user" "$d"; '
    'if [ $((0$perm & 022)) != 0 ] && { [ "$strict" = 1 ] || [ $((0$perm & 01000)) = 0 ]; }; '
    'then refuse "refusing to $1: $nopy write into $d, which other users can write to"; fi; '
    '[ "$d" != / ] || return 0; d=${d%/*}; d=${d:-/}; strict=0; '
    "done; }; "
)

# put: $1 folder, $2 octal mode, $3 owner[:group] or empty, $4 path; the data on stdin.
PUT_FILE_SCRIPT = (
    "set -e; umask 077; " + _SAFE_FOLDERS + 'safe "write $4" "$1" 1; '
    'tmp=$(mktemp "$1/.panel-XXXXXXXXXX"); trap \'rm -f -- "$tmp"\' EXIT; cat > "$tmp"; '
    'if [ -n "$3" ]; then chown -- "$3" "$tmp"; fi; chmod -- "$2" "$tmp"; '
    'mv -f -- "$tmp" "$4"; trap - EXIT'
)

# make_dir: $1 folder, $2 octal mode or empty, $3 owner[:group] or empty. The deepest folder
# that exists is where new ones are made: it must be safe (strictly, when anything is made).
MAKE_DIR_SCRIPT = (
    "set -e; umask 022; " + _SAFE_FOLDERS + 'e=$1; while [ ! -e "$e" ] && [ ! -L "$e" ]; '
    "do e=${e%/*}; e=${e:-/}; done; "
    'if [ "$e" = "$1" ]; then safe "make the folder $1" "$e" 0; '
    'else safe "make the folder $1" "$e" 1; fi; mkdir -p -- "$1"; '
    'if [ -n "$3" ]; then chown -- "$3" "$1"; fi; if [ -n "$2" ]; then chmod -- "$2" "$1"; fi'
)

# remove: $1 folder, $2 path; prints "removed" when there was something to remove. A missing
# folder means a missing file: nothing to do. ``rm -f`` never follows the name it removes.
REMOVE_FILE_SCRIPT = (
    "set -e; " + _SAFE_FOLDERS + 'if [ ! -e "$1" ] && [ ! -L "$1" ]; then exit 0; fi; '
    'safe "remove $2" "$1" 0; '
    'if [ -d "$2" ] && [ ! -L "$2" ]; then refuse "refusing to remove $2: it is a folder"; fi; '
    'if [ -e "$2" ] || [ -L "$2" ]; then rm -f -- "$2"; echo removed; fi'
)

# Reads and changes of a file's state without python3 (``stat``, ``sha256sum``, ``chown``,
# ``chmod`` name the path each time): only where every folder from / is root's, so that no
# one else can re-point the name between them. In a user's folder, only the runner does it.
_NOT_IN_USERS_FOLDERS = (
    'owned() { refuse "refusing to $1: the node has no python3: the panel changes files in '
    'folders a user owns only through its runner ($3 belongs to $2)"; }; '
    "kind_name() { case $1 in 'symbolic link') k='a symbolic link';; directory) k='a folder';; "
    "fifo) k='a FIFO';; socket) k='a socket';; 'character special file') "
    "k='a character device';; 'block special file') k='a block device';; "
    "*) k='a special file';; esac; }; "
)

# stat: the paths as arguments; one NUL-terminated record each, in order: "missing",
# "refused<TAB>REASON" or "file<TAB>MODE:UID:GID:OWNER:GROUP:SHA256".
STAT_FILES_SCRIPT = (
    _SAFE_FOLDERS + _NOT_IN_USERS_FOLDERS + "for p; do d=${p%/*}; d=${d:-/}; "
    'if [ ! -e "$d" ] && [ ! -L "$d" ]; then printf \'missing\\0\'; continue; fi; '
    'if ! why=$(safe "read $p" "$d" 0 2>&1); then printf \'refused\\t%s\\0\' "$why"; '
    "continue; fi; "
    "info=$(LC_ALL=C stat -c '%F:%a:%u:%g:%U:%G' -- \"$p\" 2>/dev/null) || "
    "{ printf 'missing\\0'; continue; }; kind=${info%%:*}; "
    "case $kind in 'regular file'|'regular empty file') "
    'if sum=$(sha256sum < "$p"); then printf \'file\\t%s:%s\\0\' "${info#*:}" "${sum%% *}"; '
    "else printf 'refused\\tcannot read %s\\0' \"$p\"; fi;; "
    '*) kind_name "$kind"; '
    'printf \'refused\\trefusing to read %s: %s is %s, not a regular file\\0\' "$p" "$p" "$k";; '
    "esac; done"
)

# attrs: $1 path, $2 octal mode or empty, $3 owner[:group] or empty, $4 sha256 or empty.
SET_ATTRS_SCRIPT = (
    "set -e; " + _SAFE_FOLDERS + _NOT_IN_USERS_FOLDERS + "p=$1; d=${p%/*}; d=${d:-/}; "
    'safe "change $p" "$d" 1; '
    "kind=$(LC_ALL=C stat -c '%F' -- \"$p\" 2>/dev/null) || "
    'refuse "cannot change $p: there is no such file"; '
    'case $kind in "regular file"|"regular empty file") ;; *) kind_name "$kind"; '
    'refuse "refusing to change $p: $p is $k, not a regular file";; esac; '
    'if [ -n "$4" ]; then sum=$(sha256sum < "$p"); [ "${sum%% *}" = "$4" ] || '
    'refuse "refusing to change $p: it was changed since it was read"; fi; '
    'if [ -n "$3" ]; then chown -- "$3" "$p"; fi; if [ -n "$2" ]; then chmod -- "$2" "$p"; fi'
)

RunPlain = Callable[..., Awaitable[PlainOutput]]


class ShellFileOps(FileOps):
    """File work as plain SSH commands: ``run_plain(argv, input=, file_limit=)``."""

    def __init__(self, run_plain: RunPlain) -> None:
        self._run = run_plain

    async def put(
        self, path: str, data: bytes, *, mode: int, owner: str | None, group: str | None
    ) -> None:
        folder = _folder(path, f"write {path}")
        arguments = [folder, f"{mode:o}", _chown(owner, group), path]
        await self._script(f"write {path}", PUT_FILE_SCRIPT, arguments, data)

    async def make_dir(
        self,
        path: str,
        *,
        mode: int | None,
        owner: str | None,
        group: str | None,
        trusting: str | None,
    ) -> None:
        what = f"make the folder {path}"
        folder = "/" + "/".join(_parts(path, what))
        arguments = [folder, "" if mode is None else f"{mode:o}", _chown(owner, group)]
        await self._script(what, MAKE_DIR_SCRIPT, arguments)

    async def read(self, path: str) -> bytes:
        result = await self._run(["cat", "--", path], file_limit=FILE_LIMIT)
        if result.stdout_over:
            raise TransportError(f"cannot read {path}: {FILE_TOO_LARGE}")
        if result.exit_status != 0:
            stderr = result.stderr.decode(errors="replace").strip()
            raise TransportError(
                f"cannot read {path}: {stderr or 'exit ' + str(result.exit_status)}"
            )
        return result.stdout

    async def remove(self, path: str, *, trusting: str | None) -> bool:
        folder = _folder(path, f"remove {path}")
        result = await self._script(f"remove {path}", REMOVE_FILE_SCRIPT, [folder, path])
        return result.stdout.strip() == b"removed"

    async def stat(self, paths: list[str]) -> dict[str, FileState]:
        for path in paths:
            _parts(path, f"read {path}")
        found: dict[str, FileState] = {}
        for start in range(0, len(paths), STAT_BATCH):
            batch = paths[start : start + STAT_BATCH]
            result = await self._script("read files", STAT_FILES_SCRIPT, batch)
            records = result.stdout.split(b"\0")[:-1]
            if len(records) != len(batch):
                raise TransportError(
                    f"cannot read {batch[0]}: the node answered {len(records)} "
                    f"records for {len(batch)} paths"
                )
            for path, record in zip(batch, records, strict=True):
                found[path] = _file_state(path, record.decode(errors="replace"))
        return found

    async def set_attrs(
        self,
        path: str,
        *,
        mode: int | None,
        owner: str | None,
        group: str | None,
        sha256: str | None,
    ) -> None:
        what = f"change {path}"
        _parts(path, what)
        arguments = [path, "" if mode is None else f"{mode:o}", _chown(owner, group), sha256 or ""]
        await self._script(what, SET_ATTRS_SCRIPT, arguments)

    async def _script(
        self, what: str, script: str, arguments: list[str], data: bytes = b""
    ) -> PlainOutput:
        """Run one of the scripts; its refusals (exit 3) are the message."""
        result = await self._run(["sh", "-c", script, "panel", *arguments], input=data)
        status = -1 if result.exit_status is None else result.exit_status
        if status != 0:
            reason = result.stderr.decode(errors="replace").strip()[-500:] or f"exit {status}"
            raise TransportError(reason if status == 3 else f"cannot {what}: {reason}")
        return result


def _parts(path: str, what: str) -> list[str]:
    try:
        parts = remote_runner.split_path(path, what)
    except remote_runner.Refused as e:
        raise TransportError(str(e)) from None
    if not parts:
        raise TransportError(f"cannot {what}: it is the root folder")
    return parts


def _folder(path: str, what: str) -> str:
    """The folder that holds ``path``."""
    return "/" + "/".join(_parts(path, what)[:-1])


def _file_state(path: str, record: str) -> FileState:
    """One record of STAT_FILES_SCRIPT's output."""
    kind, _, rest = record.partition("\t")
    if kind == "missing":
        return MISSING
    if kind == "refused":
        return FileState("refused", reason=rest[:500])
    fields = rest.split(":")
    if kind != "file" or len(fields) != 6:
        raise TransportError(f"cannot read {path}: the node answered {record[:100]!r}")
    mode, uid, gid, owner, group, sha256 = fields
    unknown = "UNKNOWN"  # what stat prints for a number without a name
    return FileState(
        "file",
        mode=int(mode, 8),
        uid=int(uid),
        gid=int(gid),
        owner="" if owner == unknown else owner,
        group="" if group == unknown else group,
        sha256=sha256,
    )


def _chown(owner: str | None, group: str | None) -> str:
    """``chown``'s ``owner:group`` argument; empty for neither."""
    return f"{owner or ''}:{group}" if group else (owner or "")

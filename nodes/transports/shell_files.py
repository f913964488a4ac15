"""File work on a node without python3: ``sh`` scripts, in the one place they are written.

The runner's descriptor-based writes cannot be done from ``sh``: sh can only name paths, and
a user who owns a folder on the way can re-point a name between two commands (a link in place
of ~/.ssh or of the temporary file, and chown follows it). So the scripts work only where no
unprivileged user can change any name: every folder from / down is a real folder (no link)
owned by root (or by the login user), and none is writable by others, except a sticky folder
above the target (/tmp: others cannot rename root's entries there). Anything else is refused
(exit 3) with the reason; such a node needs python3 for files in users' folders. ``trusting``
adds nobody here. The scripts are fixed; paths and names arrive as positional arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nodes.transports import remote_runner
from nodes.transports.base import TransportError
from nodes.transports.fileops import FileOps
from nodes.transports.limits import FILE_LIMIT, FILE_TOO_LARGE
from nodes.transports.streams import PlainOutput

_SAFE_FOLDERS = (
    "refuse() { printf '%s\\n' \"$1\" >&2; exit 3; }; "
    # safe WHAT DIR STRICT: DIR and the folders above it are safe to write in, as above.
    'safe() { d=$2; strict=$3; me=$(id -u); nopy="the node has no python3: cannot safely"; '
    "while :; do "
    "info=$(LC_ALL=C stat -c '%F:%u:%U:%a' -- \"$d\" 2>/dev/null) || "
    'refuse "cannot $1: cannot stat $d"; '
    "kind=${info%%:*}; rest=${info#*:}; uid=${rest%%:*}; rest=${rest#*:}; "
    "user=${rest%%:*}; perm=${rest#*:}; "
    '[ "$kind" != "symbolic link" ] || refuse "refusing to $1: $d is a symbolic link"; '
    '[ "$kind" = directory ] || refuse "cannot $1: $d is not a folder"; '
    '[ "$uid" = 0 ] || [ "$uid" = "$me" ] || '
    'refuse "refusing to $1: $nopy write into a folder owned by $user ($d)"; '
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


def _chown(owner: str | None, group: str | None) -> str:
    """``chown``'s ``owner:group`` argument; empty for neither."""
    return f"{owner or ''}:{group}" if group else (owner or "")

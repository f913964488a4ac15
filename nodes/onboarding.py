"""Putting the panel's public key on a new server without copying it by hand.

Two ways, one script. ``install_key_command`` is a self-contained line to paste in a root
shell (or the node user's own) on the new server: it appends the panel's key to the user's
``~/.ssh/authorized_keys`` (optionally restricted with ``from="..."`` to the panel's
address), and prints the server's host key fingerprints to compare with the ones the panel
shows. It carries the key itself and fetches nothing, so the server needs no way to reach the
panel. ``install_key_with_password`` runs the same script once over SSH with a one-time
password (root's, the node user's, or a sudoer's through ``sudo -S``): only over a connection
that trusts nothing but the host key the admin confirmed, synchronously, and the password is
never stored, logged, queued or put on a command line (``sudo`` reads it on its standard
input).
"""

from __future__ import annotations

import asyncio
import re
import shlex

import asyncssh
from asgiref.sync import async_to_sync

from nodes.hostkeys import check_seconds
from nodes.keys import panel_public_key
from nodes.models import Node, username_validator
from nodes.transports import TransportError
from nodes.transports.limits import MESSAGE_LIMIT, clean
from nodes.transports.ssh import OtherHostKey, _connection_error, connect_pinned

# One entry of sshd's from="pattern-list": a host name or address pattern (* and ?), an
# address with a CIDR length, each may be negated with "!" (sshd(8), AUTHORIZED_KEYS).
_FROM_ENTRY = re.compile(r"!?[A-Za-z0-9*?][A-Za-z0-9.:*?%_/-]{0,252}\Z")
# What a key line may hold to sit inside the script's single quotes untouched.
_SAFE_LINE = re.compile(r"[A-Za-z0-9+/=@._:\" ,!*?%-]+\Z")


def clean_from(value: str) -> str:
    """The ``from="..."`` patterns, blanks removed; ValueError naming the entry that is not
    one (a quote or a blank there would change what the line means to sshd)."""
    entries = [e.strip() for e in value.split(",") if e.strip()]
    if len(entries) > 20:
        raise ValueError("at most 20 addresses or patterns")
    for entry in entries:
        if not _FROM_ENTRY.match(entry):
            raise ValueError(
                f"{entry!r} is not an address, a network (10.0.0.0/8) or a host pattern "
                "(*.example.org)"
            )
    return ",".join(entries)


def authorized_key_line(from_: str = "", public_key: str | None = None) -> str:
    """The panel's key as a line of ``authorized_keys``, with ``from="..."`` if given."""
    key = public_key or panel_public_key()
    from_ = clean_from(from_)
    line = f'from="{from_}" {key}' if from_ else key
    if not _SAFE_LINE.match(line):
        raise ValueError("the panel's public key holds characters a shell line cannot carry")
    return line


def install_key_command(user: str = "root", from_: str = "", public_key: str | None = None) -> str:
    """The line to paste on the new server, and the script the password install runs: add
    the key for ``user`` (idempotent), then print the server's host key fingerprints.

    In a subshell, so that a failure (``exit 1``) never closes the terminal it is pasted in.
    Run as root it gives the folder and file to ``user``; run as ``user`` it needs no root.
    """
    username_validator(user)
    line = authorized_key_line(from_, public_key)
    return (
        f"(umask 077; u='{user}'; k='{line}'; "
        'h=$(getent passwd "$u" | cut -d: -f6); '
        '[ -n "$h" ] || { echo "There is no user $u here." >&2; exit 1; }; '
        'f="$h/.ssh/authorized_keys"; '
        'mkdir -p "$h/.ssh" && touch "$f" && '
        '{ [ ! -s "$f" ] || [ -z "$(tail -c1 "$f")" ] || echo >> "$f"; } && '
        '{ grep -qxF "$k" "$f" || printf \'%s\\n\' "$k" >> "$f"; } && '
        '{ [ "$(id -u)" != 0 ] || chown "$u" "$h/.ssh" "$f"; } && '
        "echo \"The panel's key is in $f. Compare these host keys with the panel's:\" && "
        'for p in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf "$p" 2>/dev/null || cat "$p"; '
        "done)"
    )


def _scrubbed(text: str, password: str) -> str:
    """A node's words about the install, capped, without the password should it echo it."""
    return clean(text.replace(password, "(password)"), MESSAGE_LIMIT, one_line=True)


async def _install(node: Node, login: str, password: str, from_: str, limit: float) -> None:
    script = install_key_command(node.username, from_)
    through_sudo = login not in ("root", node.username)
    argv = ["sh", "-c", script]
    if through_sudo:
        argv = ["sudo", "-S", "-p", "", "--", *argv]
    where = f"{login}@{node.host}:{node.port}"
    try:
        conn = await connect_pinned(
            node.host, node.port, login, node.host_key, timeout=limit, password=password
        )
    except OtherHostKey as e:
        raise TransportError(
            f"{node.host}:{node.port} presented another host key ({e.presented}) than the one "
            "you confirmed: the password was not sent."
        ) from None
    except asyncssh.PermissionDenied:
        raise TransportError(f"{where} refused the password (or password logins).") from None
    except (TimeoutError, OSError, asyncssh.Error) as e:
        raise _connection_error(e, node.host, node.port, limit) from None
    try:
        async with asyncio.timeout(limit):
            done = await conn.run(
                shlex.join(argv), input=password + "\n" if through_sudo else None, check=False
            )
    except TimeoutError:
        raise TransportError(f"{where} did not install the key within {limit:g} s") from None
    except asyncssh.Error as e:
        raise TransportError(f"{where}: {_scrubbed(str(e.reason), password)}") from None
    finally:
        conn.abort()
    if done.exit_status != 0:
        said = _scrubbed(str(done.stderr or done.stdout or ""), password)
        how = "sudo as " if through_sudo else "as "
        raise TransportError(
            f"installing the key {how}{login} failed (exit {done.exit_status}): {said}"
        )


def install_key_with_password(node: Node, login: str, password: str, from_: str = "") -> None:
    """Install the panel's key for ``node.username`` once, logged in as ``login`` with
    ``password`` (through ``sudo -S`` when ``login`` is neither root nor the node's user).

    ``node.host_key`` must be the key the admin confirmed: the connection trusts it alone,
    and a server that does not hold it never receives the password (the host key is checked
    before any authentication). Synchronous, bounded by ``check_seconds()`` per step; the
    password lives only in this call. TransportError says what failed, without the password.
    """
    if not node.host_key:
        raise TransportError("no confirmed host key: the password is sent to no server unseen")
    async_to_sync(_install)(node, login, password, from_, check_seconds())

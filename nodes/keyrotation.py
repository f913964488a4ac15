"""Rotating the panel's SSH key across the fleet without ever locking the panel out.

A rotation makes a new key, keeps the old one beside it (``id_ed25519.old``) and then, on
every SSH node at once (bounded): adds the new key's line to the login user's
``authorized_keys``, proves the new key logs in (a fresh connection offering only it, the
host key still checked against the pin), removes the old key's line and records on the node
(``Node.panel_key``) that it now accepts the new key. The order means a failure anywhere
leaves the node accepting the old key, which the panel still holds.

Nodes it could not reach keep the old key; running the rotation again finishes them, and the
old key file is removed once no node needs it. Meanwhile the transport offers each node the
key recorded for it first (``keys.keys_for_node``), so synchronizations go on throughout.

The file is written through the transport's ``read_file``/``put_file`` (the runner's safe
writes, never a shell string), keeping every other line as it was. Nothing here prints or
logs a private key: only fingerprints and node names.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncssh
from asgiref.sync import async_to_sync, sync_to_async
from django.db import DatabaseError

from nodes.choices import Transport as TransportKind
from nodes.keys import (
    key_fingerprint,
    load_old_panel_key,
    load_panel_key,
    new_private_key,
    old_panel_key_path,
    panel_key_path,
    write_private_key_file,
)
from nodes.models import Node
from nodes.transports import TransportError
from nodes.transports.ssh import (
    CONNECT_TIMEOUT,
    SSHTransport,
    Unreachable,
    _connection_error,
    connect_pinned,
)
from panel.instance import private_dir, private_opener

logger = logging.getLogger(__name__)

# sshd's own default, with sshd's tokens: %h the user's home, %u the user name, %% a "%".
DEFAULT_AUTHORIZED_KEYS = "%h/.ssh/authorized_keys"
DEFAULT_PARALLEL = 16
MAX_PARALLEL = 200
ROTATED, UNREACHABLE, FAILED = "rotated", "unreachable", "failed"


class BadRotationInput(ValueError):
    """An option the rotation cannot use; the message says which and why."""


class RotationBusy(RuntimeError):
    """Another rotation of this panel runs right now."""


@dataclass(frozen=True)
class NodeRotation:
    node: str
    state: str  # ROTATED, UNREACHABLE or FAILED
    reason: str = ""

    def line(self) -> str:
        return f"{self.node}: {self.state}" + (f": {self.reason}" if self.reason else "")


@dataclass
class RotationResult:
    old_fingerprint: str
    new_fingerprint: str
    nodes: list[NodeRotation] = field(default_factory=list)
    old_key_removed: bool = False

    @property
    def left(self) -> list[NodeRotation]:
        return [n for n in self.nodes if n.state != ROTATED]


def parse_from(value: str | None) -> list[str]:
    """``--from ADDR[,ADDR]``: addresses or networks (CIDR) for the key line's ``from=``.

    Only addresses: a host name there would make sshd resolve the client's address, which
    it does not by default (``UseDNS no``), and the key would then never log in.
    """
    if value is None:
        return []
    addresses = []
    for part in value.split(","):
        part = part.strip()
        try:
            network = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise BadRotationInput(
                f"--from: {part!r} is not an IP address or network (like 192.0.2.10 or "
                "192.0.2.0/24)"
            ) from None
        single = network.num_addresses == 1 and "/" not in part
        addresses.append(str(network.network_address) if single else str(network))
    return addresses


def check_template(template: str) -> str:
    """``--authorized-keys FILE``: sshd's ``AuthorizedKeysFile`` syntax, one file."""
    if not template or any(c.isspace() or c in "\"'" for c in template) or "\0" in template:
        raise BadRotationInput("--authorized-keys: give one path, without blanks or quotes")
    rest = template.replace("%%", "")
    for i, c in enumerate(rest):
        if c == "%" and rest[i + 1 : i + 2] not in ("h", "u"):
            raise BadRotationInput(
                "--authorized-keys: only the tokens %h (home), %u (user) and %% are known"
            )
    return template


def authorized_keys_path(template: str, home: str, user: str) -> str:
    """Expand ``template`` as sshd does; a relative path is relative to the home."""
    out, i = [], 0
    while i < len(template):
        if template[i] == "%" and i + 1 < len(template):
            out.append({"h": home, "u": user, "%": "%"}[template[i + 1]])
            i += 2
        else:
            out.append(template[i])
            i += 1
    path = "".join(out)
    return posixpath.normpath(path if path.startswith("/") else posixpath.join(home, path))


def key_line(key: asyncssh.SSHKey, from_addresses: Sequence[str]) -> str:
    """The ``authorized_keys`` line for the public half of ``key``."""
    line = key.export_public_key().decode().strip()
    return (f'from="{",".join(from_addresses)}" ' if from_addresses else "") + line


def _blob(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().split()[1]


def holds(line: str, blob: str) -> bool:
    """Whether an ``authorized_keys`` line is for the key whose base64 is ``blob`` (whatever
    options precede it)."""
    return blob in line.split()


def with_line(content: bytes, line: str) -> bytes:
    text = content.decode()
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + line + "\n").encode()


def without_key(content: bytes, blob: str) -> bytes:
    """``content`` less every line for ``blob``; every other line kept byte for byte."""
    lines = content.decode().splitlines(keepends=True)
    return "".join(line for line in lines if not holds(line, blob)).encode()


async def home_of(transport: SSHTransport, user: str) -> str:
    """The login user's home on the node, from the node's own user database."""
    out = await transport.run(["getent", "passwd", "--", user], timeout=30)
    fields = out.stdout.strip().split(":")
    if len(fields) < 7 or not fields[5].startswith("/"):
        raise TransportError(f"no home folder for user {user} in the node's passwd")
    return fields[5]


async def prove_login(node: Node, key: asyncssh.SSHKey) -> None:
    """A fresh connection offering only ``key``, the host key checked against the pin;
    TransportError when it does not log in."""
    try:
        conn = await connect_pinned(
            node.host, node.port, node.username, node.host_key,
            timeout=CONNECT_TIMEOUT, client_keys=[key],
        )  # fmt: skip
    except asyncssh.PermissionDenied:
        raise TransportError("the new key does not log in (refused by the node)") from None
    except (TimeoutError, OSError, asyncssh.Error) as e:
        raise _connection_error(e, node.host, node.port, CONNECT_TIMEOUT) from None
    conn.close()
    await conn.wait_closed()


# What a failure at each step leaves on the node, for the admin.
_AFTER_FAILURE = {
    "adding the new key": "; the old key still works",
    "proving the new key": "; the old key still works",
    "removing the old key": "; the old key still works",
    "recording the new key": "; the node accepts the new key, which the panel offers it too",
}


@sync_to_async(thread_sensitive=True)
def _record(node: Node, fp: str) -> None:
    Node.objects.filter(pk=node.pk).update(panel_key=fp)


async def rotate_node(
    node: Node,
    old: asyncssh.SSHKey,
    new: asyncssh.SSHKey,
    *,
    from_addresses: Sequence[str] = (),
    template: str = DEFAULT_AUTHORIZED_KEYS,
) -> NodeRotation:
    """Move one node from ``old`` to ``new``: add, prove, remove, record."""
    try:
        transport = await SSHTransport.connect(node)
    except Unreachable as e:
        return NodeRotation(node.name, UNREACHABLE, str(e).removeprefix("unreachable: "))
    except TransportError as e:
        return NodeRotation(node.name, FAILED, str(e))
    step = "reading authorized_keys"
    try:
        # The home is asked for only when the file's place depends on it.
        needs_home = "%h" in template.replace("%%", "") or not template.startswith("/")
        home = await home_of(transport, node.username) if needs_home else "/"
        path = authorized_keys_path(template, home, node.username)
        content = await transport.read_file(path)
        old_blob, new_blob = _blob(old), _blob(new)
        lines = content.decode(errors="replace").splitlines()
        has_old = any(holds(line, old_blob) for line in lines)
        if not has_old and not any(holds(line, new_blob) for line in lines):
            raise TransportError(
                f"the panel's key is not in {path}: the node's sshd reads it from another "
                "file (give that file with --authorized-keys); nothing was changed"
            )
        wanted = key_line(new, from_addresses)
        if [line for line in lines if holds(line, new_blob)] != [wanted]:
            # Missing, or left by an earlier run with other ``from=`` addresses.
            step = "adding the new key"
            content = with_line(without_key(content, new_blob), wanted)
            await transport.put_file(path, content, mode=0o600)
        step = "proving the new key"
        await prove_login(node, new)
        if has_old:
            step = "removing the old key"
            # Read again: keep whatever else changed the file meanwhile.
            content = await transport.read_file(path)
            await transport.put_file(path, without_key(content, old_blob), mode=0o600)
        step = "recording the new key"
        await _record(node, key_fingerprint(new))
    except (TransportError, TimeoutError, UnicodeError, DatabaseError) as e:
        return NodeRotation(node.name, FAILED, f"{step}: {e}{_AFTER_FAILURE.get(step, '')}")
    finally:
        await transport.close()
    return NodeRotation(node.name, ROTATED)


class _RotationLock:
    """One rotation at a time per panel (a lock file beside the keys)."""

    def __enter__(self) -> _RotationLock:
        path = private_dir(panel_key_path().parent) / "rotate.lock"
        self.fd = private_opener(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RotationBusy("another key rotation of this panel is running") from None
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def start_rotation() -> tuple[asyncssh.SSHKey, asyncssh.SSHKey]:
    """(old, new): a new key made, the old kept beside it; or, when a rotation is
    unfinished, the pair it was making.

    Every SSH node first records the key it accepts today, so that swapping the files
    changes nothing for any node; then the old key is hard-linked as ``id_ed25519.old``
    and the new one renamed over ``id_ed25519`` (so a process reading keys meanwhile always
    finds both by fingerprint).
    """
    old = load_old_panel_key()
    if old is not None:
        return old, load_panel_key()
    current = load_panel_key()
    Node.objects.filter(transport=TransportKind.SSH, panel_key="").update(
        panel_key=key_fingerprint(current)
    )
    path = panel_key_path()
    new = new_private_key()
    tmp = write_private_key_file(new, path)
    try:
        os.link(path, old_panel_key_path())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(
        "panel key rotation started: old %s, new %s",
        key_fingerprint(current),
        key_fingerprint(new),
    )
    return current, new


def pending_nodes(new_fp: str) -> list[Node]:
    """SSH nodes not known to accept the current key."""
    return list(
        Node.objects.filter(transport=TransportKind.SSH)
        .exclude(panel_key__in=("", new_fp))
        .order_by("name")
    )


def rotate(
    *,
    from_addresses: Sequence[str] = (),
    template: str = DEFAULT_AUTHORIZED_KEYS,
    parallel: int = DEFAULT_PARALLEL,
    on_node: Callable[[NodeRotation, int, int], None] | None = None,
) -> RotationResult:
    """Rotate the panel's key on every SSH node (or finish an unfinished rotation).

    ``on_node(outcome, done, total)`` is called as each node ends, for progress. The old key
    file is removed once no SSH node needs it.
    """
    if not 1 <= parallel <= MAX_PARALLEL:
        raise BadRotationInput(f"--parallel must be between 1 and {MAX_PARALLEL}")
    with _RotationLock():
        old, new = start_rotation()
        new_fp = key_fingerprint(new)
        result = RotationResult(key_fingerprint(old), new_fp)
        nodes = pending_nodes(new_fp)
        if nodes:
            # async_to_sync: the database work of the nodes runs in this thread, on its
            # connection (and its transaction, in the tests).
            result.nodes = async_to_sync(_rotate_all)(
                nodes, old, new, from_addresses, template, parallel, on_node
            )
        if not pending_nodes(new_fp):
            old_panel_key_path().unlink(missing_ok=True)
            result.old_key_removed = True
        logger.info(
            "panel key rotation to %s: %d rotated, %d left%s",
            new_fp,
            len(result.nodes) - len(result.left),
            len(result.left),
            "; old key removed" if result.old_key_removed else "",
        )
        return result


async def _rotate_all(
    nodes: list[Node],
    old: asyncssh.SSHKey,
    new: asyncssh.SSHKey,
    from_addresses: Sequence[str],
    template: str,
    parallel: int,
    on_node: Callable[[NodeRotation, int, int], None] | None,
) -> list[NodeRotation]:
    limit = asyncio.Semaphore(parallel)
    done: list[NodeRotation] = []

    async def one(node: Node) -> NodeRotation:
        async with limit:
            outcome = await rotate_node(
                node, old, new, from_addresses=from_addresses, template=template
            )
        done.append(outcome)
        logger.info("panel key rotation: %s", outcome.line())
        if on_node is not None:
            on_node(outcome, len(done), len(nodes))
        return outcome

    return list(await asyncio.gather(*(one(node) for node in nodes)))

"""The panel's own server among the nodes: recognised by the host keys this machine holds.

Under the systemd units the panel's server is best managed as an SSH node (docs/OPERATIONS.md),
and then nothing in its row says "local". What does say it is its host key: this machine's
sshd signs with the keys in ``OWN_HOST_KEY_DIR`` (``/etc/ssh``), whatever address, name, NAT
or port leads to it. So a node that pins one of them is flagged ``is_panel_host`` when the
web server or a cluster starts, and a key about to be pinned is compared with them before
anyone but a superuser may pin it (``sync.rights``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError

from nodes.choices import Transport
from nodes.hostkeys import parse_host_key
from nodes.models import Node

log = logging.getLogger("sync")

HOST_KEY_GLOB = "ssh_host_*_key.pub"


def own_host_keys(folder: Path | None = None) -> frozenset[str]:
    """This machine's SSH host public keys, as ``parse_host_key`` writes keys for pinning.

    Read at each call (a few small files): a key regenerated meanwhile counts at once. A file
    that is not a key is skipped, not fatal: the flag is a restriction and the other keys
    still count.
    """
    folder = Path(folder or settings.OWN_HOST_KEY_DIR)
    keys = set()
    for path in sorted(folder.glob(HOST_KEY_GLOB)):
        try:
            keys.add(parse_host_key(path.read_text()))
        except (OSError, ValueError, UnicodeError) as e:
            log.warning("cannot read the host key %s: %s", path, e)
    return frozenset(keys)


def _normalized(key: str) -> str:
    try:
        return parse_host_key(key)
    except ValueError:
        return ""


def panel_host_keys() -> frozenset[str]:
    """The keys that identify the panel's server: this machine's, and those pinned on nodes
    already flagged as the panel's own server (a flag a superuser set by hand too)."""
    pinned = Node.objects.filter(is_panel_host=True).exclude(host_key="")
    flagged = {_normalized(k) for k in pinned.values_list("host_key", flat=True)}
    return own_host_keys() | (flagged - {""})


def is_panel_host_key(key: str) -> bool:
    """Whether pinning ``key`` would make a node the panel's own server."""
    return bool(key) and _normalized(key) in panel_host_keys()


def is_own_host_key(key: str) -> bool:
    """Whether ``key`` is one of this machine's own host keys (the flag follows from it)."""
    return bool(key) and _normalized(key) in own_host_keys()


def flag_if_panel_host(node: Node) -> bool:
    """Set ``node.is_panel_host`` (not saved) when it is a local node or pins one of this
    machine's host keys; never cleared here. Whether it is flagged now."""
    if node.transport == Transport.LOCAL or is_own_host_key(node.host_key):
        node.is_panel_host = True
    return node.is_panel_host


def mark_panel_host_nodes() -> list[str]:
    """Flag every node that is the panel's own server and is not flagged yet; their names.

    Local nodes always are; SSH nodes are when their pinned key is one of this machine's own
    host keys. A flag is never cleared here: it restricts who may change the node, and only
    a superuser (in the admin) decides that a node stopped being the panel's server.
    """
    own = own_host_keys()
    marked = []
    candidates = Node.objects.filter(is_panel_host=False).only(
        "pk", "name", "transport", "host_key"
    )
    for node in candidates:
        if node.transport == Transport.LOCAL or (
            node.host_key and _normalized(node.host_key) in own
        ):
            marked.append(node)
    if marked:
        Node.objects.filter(pk__in=[n.pk for n in marked]).update(is_panel_host=True)
    return [n.name for n in marked]


def mark_at_start(process: str) -> None:
    """``mark_panel_host_nodes`` for a starting web server or cluster, said in the log.

    A database that cannot answer yet (not migrated, down for a moment) must not stop the
    start: the flags are set again at the next start, and keys pinned meanwhile are checked
    when they are pinned (``sync.rights``).
    """
    try:
        names = mark_panel_host_nodes()
    except DatabaseError as e:
        log.warning(
            "%s start: cannot look for the panel's own server among the nodes: %s", process, e
        )
        return
    if names:
        log.warning(
            "%s start: %s pinned one of this machine's host keys: now flagged as the panel's "
            "own server (only superusers change it)",
            process,
            ", ".join(names),
        )

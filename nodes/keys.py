"""The panel's own SSH key pair and host key fingerprints."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import asyncssh
from django.conf import settings

from panel.instance import PRIVATE_FILE_MODE, private_dir, tighten

KEY_TYPE = "ssh-ed25519"


def panel_key_path() -> Path:
    """The panel's current key: the one new nodes get and rotated nodes accept."""
    return Path(settings.DATA_DIR) / "ssh" / "id_ed25519"


def old_panel_key_path() -> Path:
    """The key before the last rotation, kept while some node accepts only it (see
    ``nodes.keyrotation``); no file when no rotation is unfinished."""
    return panel_key_path().with_name("id_ed25519.old")


def new_private_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key(KEY_TYPE, comment=f"cluster-panel@{socket.gethostname()}")


def write_private_key_file(key: asyncssh.SSHKey, path: Path) -> Path:
    """Write ``key`` to a new 0600 file beside ``path`` and return that file's path.

    The caller links or renames it into place: a key file is never seen half written, and
    is never readable by anyone but the owner, whatever the umask.
    """
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    return tmp


def load_panel_key() -> asyncssh.SSHKey:
    """The panel's private key, generated on first use under the instance's data folder.

    Written to a temporary file and hard-linked into place, so two processes starting at the
    same time end up with one key, and the key is never readable by anyone but the owner.
    """
    path = panel_key_path()
    # Also a folder or key an earlier version left with looser modes.
    private_dir(path.parent)
    tighten(path, PRIVATE_FILE_MODE)
    if not path.exists():
        tmp = write_private_key_file(new_private_key(), path)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        finally:
            tmp.unlink()
    return asyncssh.read_private_key(path)


def load_old_panel_key() -> asyncssh.SSHKey | None:
    """The key before an unfinished rotation, or None."""
    path = old_panel_key_path()
    tighten(path, PRIVATE_FILE_MODE)
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        return None


def key_fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


def panel_keys() -> list[asyncssh.SSHKey]:
    """Every key the panel holds: the current one, then the old one during a rotation."""
    old = load_old_panel_key()
    return [load_panel_key(), *([old] if old is not None else [])]


def keys_for_node(panel_key: str) -> list[asyncssh.SSHKey]:
    """The keys to offer a node whose ``Node.panel_key`` is ``panel_key``: its own first.

    The other key follows only while a rotation is unfinished (both files exist), so a
    connection opened while the rotation changes that node's ``authorized_keys`` (between
    removing the old line and recording the new key) still logs in. Empty ``panel_key``
    means the current key (nodes added since the last rotation).
    """
    keys = panel_keys()
    if panel_key:
        keys.sort(key=lambda k: key_fingerprint(k) != panel_key)
    return keys


def panel_public_key() -> str:
    """The line to add to ``authorized_keys`` on a node."""
    return load_panel_key().export_public_key().decode().strip()


def fingerprint(public_key: str) -> str:
    """SHA256 fingerprint of an OpenSSH public key line, as ``ssh-keygen -l`` shows it."""
    return asyncssh.import_public_key(public_key).get_fingerprint("sha256")


def safe_fingerprint(public_key: str) -> str:
    """The fingerprint to show a pinned key by: "none" without one, and a corrupt pinned key
    (edited by hand in the database) said in words rather than failing the page."""
    if not public_key:
        return "none"
    try:
        return fingerprint(public_key)
    except Exception:  # noqa: BLE001 - asyncssh raises several kinds for a corrupt key
        return "(unreadable key)"

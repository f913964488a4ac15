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
    return Path(settings.DATA_DIR) / "ssh" / "id_ed25519"


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
        key = asyncssh.generate_private_key(
            KEY_TYPE, comment=f"cluster-panel@{socket.gethostname()}"
        )
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        finally:
            tmp.unlink()
    return asyncssh.read_private_key(path)


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

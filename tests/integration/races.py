"""What the race tests share: a real unprivileged user, root's decoys, and the user's process
that swaps folders for links (``test_write_races``, ``test_remove_races``)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import string
import subprocess
import sys
from pathlib import Path

import pytest

DECOY_CONTENT = b"root's own file\n"


def _random(n: int = 6) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(n))


@pytest.fixture
def victim():
    """A real unprivileged user of this machine, with a home; removed afterwards."""
    name = "pr" + _random()
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--", name], check=True)
    yield pwd.getpwnam(name)
    subprocess.run(["userdel", "--remove", "--", name], capture_output=True)


@pytest.fixture
def decoy(tmp_path) -> tuple[Path, Path]:
    """A root-owned folder with a root-owned file: what the attacker points links at."""
    folder = tmp_path / "decoy"
    folder.mkdir(mode=0o755)
    secret = folder / "secret"
    secret.write_bytes(DECOY_CONTENT)
    secret.chmod(0o644)
    return folder, secret


def snapshot(folder: Path, secret: Path) -> dict:
    def meta(p: Path) -> tuple:
        st = p.lstat()
        return (st.st_uid, st.st_gid, st.st_mode)

    return {
        "folder": meta(folder),
        "entries": sorted(os.listdir(folder)),
        "secret": meta(secret),
        "content": secret.read_bytes(),
    }


class Attacker:
    """The user's process running ``script`` (its arguments: the user's home, the decoy folder
    and file), started before the panel's work; it prints "ready", then its counts when ended."""

    def __init__(self, script: str, user: pwd.struct_passwd, folder: Path, secret: Path) -> None:
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        self.proc = subprocess.Popen(
            [python, "-c", script, user.pw_dir, str(folder), str(secret)],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read()

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

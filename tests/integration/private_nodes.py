"""Test nodes with their own /etc and /home: a real sshd in a private mount namespace.

sshd reads each user's keys from ``~/.ssh/authorized_keys`` and ``authorized_keys2``, as
Debian's does, and root's (the panel's key) from a ``/root`` of the node's own.

The users type changes the machine it runs on (``useradd``, ``userdel``, ``usermod``). Each
node here is a real sshd started in a mount namespace of its own, over a copy of ``/etc`` and
an empty ``/home``: accounts made on one node exist on no other node and not on the test
machine. Processes are not separated (the pid namespace is shared), so each node's accounts
get uids from a range of their own, far above the machine's: a ``pkill -u UID`` on a node
can only reach that node's users.

Commands "on the node" (a user's process, a FIFO in a home) go through ``nsenter`` into the
sshd's namespace. Tools the test machine lacks or must not run for real (cron's ``crontab``,
at's ``atq``, systemd's ``loginctl``) can be given as small scripts in ``/usr/local/bin`` of
the node only. The node's ``/run`` is its own too, and says that systemd runs
(``/run/systemd/system``, which is how programs tell).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from contextlib import suppress
from pathlib import Path

from tools.sshd import SSHServer

# Each node's accounts take uids FIRST_UID ... FIRST_UID + 999, FIRST_UID in this range.
UID_BASES = range(300_000, 2_000_000, 1000)

BIND_SCRIPT = (
    'mount --bind "$1" /etc && mount --bind "$2" /home && mount --bind "$3" /usr/local/bin '
    '&& mount --bind "$4" /run && shift 4 && exec "$@"'
)


def unavailable() -> str:
    """Why private nodes cannot be made here ("" when they can)."""
    if os.geteuid() != 0:
        return "nodes with their own /etc need root (mount namespaces)"
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        return "`unshare` or `nsenter` (util-linux) is missing"
    return ""


class PrivateNodeServer(SSHServer):
    """An sshd whose node has its own /etc (a copy), /home (empty) and /usr/local/bin."""

    def __init__(self, workdir: Path, authorized_key: str, *, tools: dict[str, str] | None = None):
        super().__init__(workdir, authorized_key, keys_in_home=True)
        self.etc, self.home, self.bin = self.dir / "etc", self.dir / "home", self.dir / "bin"
        self.run_dir = self.dir / "run"
        subprocess.run(["cp", "-a", "/etc", str(self.etc)], check=True)
        for folder in (self.home, self.bin, self.run_dir / "sshd", self.run_dir / "systemd/system"):
            folder.mkdir(mode=0o755, parents=True)
        for name, script in (tools or {}).items():
            (self.bin / name).write_text(script)
            (self.bin / name).chmod(0o755)
        self.first_uid = secrets.choice(UID_BASES)
        self._own_id_range()
        self.spawned: list[subprocess.Popen] = []

    def _own_id_range(self) -> None:
        defs = self.etc / "login.defs"
        last = self.first_uid + 999
        ranges = {"UID_MIN": self.first_uid, "UID_MAX": last, "GID_MIN": self.first_uid}
        ranges["GID_MAX"] = last
        lines = [
            line
            for line in defs.read_text().splitlines()
            if not line.split() or line.split()[0] not in ranges
        ]
        defs.write_text("\n".join([*lines, *(f"{k} {v}" for k, v in ranges.items())]) + "\n")

    def _config(self) -> Path:
        """As Debian's sshd: each user's keys in ``authorized_keys`` and ``authorized_keys2``."""
        config = super()._config()
        lines = [
            "AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2"
            if line.startswith("AuthorizedKeysFile ")
            else line
            for line in config.read_text().splitlines()
        ]
        config.write_text("\n".join(lines) + "\n")
        return config

    def command(self) -> list[str]:
        where = [str(self.etc), str(self.home), str(self.bin), str(self.run_dir)]
        namespace = ["unshare", "--mount", "--propagation", "private"]
        return [*namespace, "sh", "-c", BIND_SCRIPT, "sh", *where, *super().command()]

    def _enter(self, argv: tuple[str, ...]) -> list[str]:
        assert self.proc is not None, "the node is not started"
        return ["nsenter", "--target", str(self.proc.pid), "--mount", "--", *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` as root on the node; its output as text."""
        return subprocess.run(
            self._enter(argv), check=check, capture_output=True, text=True, timeout=30
        )

    def spawn(self, *argv: str) -> subprocess.Popen:
        """Start ``argv`` on the node and leave it running (ended by ``stop`` if still there)."""
        proc = subprocess.Popen(
            self._enter(argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.spawned.append(proc)
        return proc

    def passwd(self, name: str) -> list[str] | None:
        """The node's passwd entry of ``name`` (its fields), None when there is none."""
        done = self.run("getent", "passwd", name, check=False)
        return done.stdout.strip().split(":") if done.returncode == 0 else None

    def shadow(self, name: str) -> list[str]:
        return self.run("getent", "shadow", name).stdout.strip().split(":")

    def processes_of(self, uid: int) -> list[int]:
        done = self.run("pgrep", "-U", str(uid), check=False)
        return [int(pid) for pid in done.stdout.split()]

    def stop(self) -> None:
        for proc in self.spawned:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # A process of the node's uids that a failed test left behind (runuser's child).
        for pid in self.processes_in_range():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        super().stop()

    def processes_in_range(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with suppress(OSError):
                    if self.first_uid <= entry.stat().st_uid <= self.first_uid + 999:
                        found.append(int(entry.name))
        return found

"""Real OpenSSH servers on loopback ports, one process per node: for the tests and `make demo`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import asyncssh

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SSHServer:
    """One sshd on 127.0.0.1:port that lets the given public key log in as root.

    By default every user's keys are the one file ``authorized_keys`` in the workdir. With
    ``keys_in_home``, sshd reads each user's ``~/.ssh/authorized_keys`` as a real node does,
    and runs in a mount namespace of its own where ``/root`` is the workdir's ``root``
    folder: root's keys are then this node's alone (written there, ``authorized_keys``
    points at them), other users' homes are this machine's.
    """

    def __init__(
        self,
        workdir: Path,
        authorized_key: str,
        *,
        force_command: str = "",
        keys_in_home: bool = False,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.keys_in_home = keys_in_home
        if keys_in_home:
            ssh_dir = self.dir / "root" / ".ssh"
            ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.authorized_keys = ssh_dir / "authorized_keys"
        else:
            self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(authorized_key + "\n")
        self.host_key_file = self.dir / "ssh_host_ed25519_key"
        self.force_command = force_command
        self.proc: subprocess.Popen | None = None
        self.new_host_key()

    @property
    def host_key(self) -> str:
        return (
            asyncssh.read_public_key(str(self.host_key_file) + ".pub")
            .export_public_key()
            .decode()
            .strip()
        )

    def new_host_key(self) -> None:
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(self.host_key_file))
        key.write_public_key(str(self.host_key_file) + ".pub")
        os.chmod(self.host_key_file, 0o600)

    def _config(self) -> Path:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key_file}",
            "AuthorizedKeysFile .ssh/authorized_keys"
            if self.keys_in_home
            else f"AuthorizedKeysFile {self.authorized_keys}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"Subsystem sftp {SFTP_SERVER}",
            "MaxStartups 200",
            "MaxSessions 50",
        ]
        if self.force_command:
            lines.append(f"ForceCommand {self.force_command}")
        config = self.dir / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        return config

    def command(self) -> list[str]:
        """The sshd process to start (a subclass may wrap it, in a namespace say)."""
        argv = [SSHD, "-D", "-f", str(self._config()), "-E", str(self.dir / "sshd.log")]
        if self.keys_in_home:
            own_root = 'mount --bind "$0" /root && exec "$@"'
            argv = ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", own_root,
                    str(self.dir / "root"), *argv]  # fmt: skip
        return argv

    def start(self) -> SSHServer:
        """Start sshd and return once *this* sshd listens.

        A connection alone does not prove it: between a stop and a start another process (a
        test run beside this one) may have taken the port, and our sshd then fails to bind
        while the other one answers. sshd logs "Server listening on ..." once its own bind
        succeeded, so the log written since this start is the proof.
        """
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = self.dir / "sshd.log"
        offset = log.stat().st_size if log.exists() else 0
        self.proc = subprocess.Popen(self.command(), start_new_session=True)
        listening = f"Server listening on 127.0.0.1 port {self.port}."
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if listening in self._log_since(offset):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not start: {self._log_since(offset)[-2000:]}")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.dir / "sshd.log", "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart_with_new_host_key(self) -> None:
        self.stop()
        self.new_host_key()
        self.start()

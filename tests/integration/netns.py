"""Several "machines" on one machine, for tests: Linux network namespaces on a bridge.

Each machine is a network namespace with an address of its own on a bridge in the root
namespace, and every process started on it also gets a host name of its own (a UTS
namespace), so the panel's worker ids (``worker@HOST:PID:...``) name the machine exactly as
they would name a real server. A machine's loopback is its own: MariaDB, Redis and the sshd
test nodes of the root namespace are reachable from it only through the bridge address.
MariaDB and Redis listen on loopback only, so a small TCP relay forwards connections from
the bridge address to them (and records who connected); the sshd nodes listen on the bridge
address themselves.

The names below are fixed, so that a run that crashed leaves nothing the next run cannot
find and remove; ``machine_lock`` keeps two runs on one machine from using them at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT
from tools.sshd import SSHServer

PREFIX = "cpdist"
BRIDGE = f"{PREFIX}0"
SUBNET = "10.197.61"
BRIDGE_ADDRESS = f"{SUBNET}.1"
PREFIX_LENGTH = 24


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Hold a lock shared by every test run on this machine, for fixed machine-wide names
    (the namespaces, a Redis database number): a second run waits instead of breaking the
    first one's network or flushing its queue."""
    path = Path(tempfile.gettempdir()) / f"cluster-panel-test-{name}.lock"
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@dataclass(frozen=True)
class Machine:
    """One network namespace, named like the host name its processes get."""

    name: str
    address: str

    @property
    def host_veth(self) -> str:
        return f"{self.name}h"  # the root namespace's end, a port of the bridge

    @property
    def veth(self) -> str:
        return f"{self.name}n"  # the end inside the namespace

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on this machine: in its namespace, under its own host name.

        ``ip netns exec`` and ``unshare`` exec in place and ``sh`` execs the command, so the
        process started is the command itself (its pid, its process group).
        """
        set_hostname = 'echo "$0" > /proc/sys/kernel/hostname && exec "$@"'
        return ["ip", "netns", "exec", self.name, "unshare", "--uts", "sh", "-c", set_hostname,
                self.name, *argv]  # fmt: skip

    def manage(self, *args: str, env: dict[str, str]) -> subprocess.Popen:
        """Start ``manage.py ARGS`` on this machine, as an admin logged in there would."""
        return subprocess.Popen(
            self.command([sys.executable, str(ROOT / "manage.py"), *args]),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def pids(self) -> list[int]:
        """Processes running in this namespace (any left by a run that crashed)."""
        out = _ip("netns", "pids", self.name).stdout
        return [int(p) for p in out.split()]


class Network:
    """A bridge with the address BRIDGE_ADDRESS and ``count`` machines on it (.11, .12 ...)."""

    def __init__(self, count: int) -> None:
        self.machines = [
            Machine(f"{PREFIX}-m{i}", f"{SUBNET}.{10 + i}") for i in range(1, count + 1)
        ]

    @staticmethod
    def unavailable() -> str:
        """Why namespaces cannot be made here ("" when they can)."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if not shutil.which("ip") or not shutil.which("unshare"):
            return "`ip` (iproute2) or `unshare` (util-linux) is missing"
        return ""

    def create(self) -> None:
        """Remove what a crashed run left, then build the bridge and the machines.

        Raises RuntimeError, with what ``ip`` said, when the kernel refuses (``ip netns add``
        is the first thing refused where namespaces are not allowed).
        """
        self.destroy()
        for machine in self.machines:
            self._check("netns", "add", machine.name)
        self._check("link", "add", BRIDGE, "type", "bridge")
        self._check("addr", "add", f"{BRIDGE_ADDRESS}/{PREFIX_LENGTH}", "dev", BRIDGE)
        self._check("link", "set", BRIDGE, "up")
        for m in self.machines:
            self._check("link", "add", m.host_veth, "type", "veth", "peer", "name", m.veth)
            self._check("link", "set", m.veth, "netns", m.name)
            self._check("link", "set", m.host_veth, "master", BRIDGE, "up")
            self._check("-n", m.name, "addr", "add", f"{m.address}/{PREFIX_LENGTH}", "dev", m.veth)
            self._check("-n", m.name, "link", "set", m.veth, "up")
            self._check("-n", m.name, "link", "set", "lo", "up")

    def destroy(self) -> None:
        """Remove the machines (ending what still runs in them), the veths and the bridge.

        Best effort and quiet: also called before creating, when there is usually nothing.
        """
        for machine in self.machines:
            for pid in machine.pids():
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _ip("link", "del", machine.host_veth)
            _ip("netns", "del", machine.name)
        _ip("link", "del", BRIDGE)

    @staticmethod
    def _check(*args: str) -> None:
        done = _ip(*args)
        if done.returncode:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class BridgeSSHServer(SSHServer):
    """A test node's sshd that also listens on the bridge address, where machines reach it.

    It keeps its loopback address, which SSHServer.start checks to know sshd is up; from a
    machine, 127.0.0.1 is the machine's own loopback, so machines can only use the bridge.
    """

    def __init__(self, *args, address: str, **kwargs) -> None:
        self.address = address
        super().__init__(*args, **kwargs)

    def _config(self) -> Path:
        config = super()._config()
        loopback = "ListenAddress 127.0.0.1\n"
        text = config.read_text()
        assert loopback in text
        config.write_text(text.replace(loopback, f"{loopback}ListenAddress {self.address}\n"))
        return config


class TcpRelay:
    """Accept TCP connections on ``listen_host`` (a free port) and forward each one to
    ``target``, both ways; ``peers`` collects the addresses that connected.

    Runs its own event loop on a thread of the test's process. When either side closes or
    resets, both connections are closed, so a machine that dies drops its database
    connections (and with them its transactions and locks) at once, as over a real network.
    """

    def __init__(self, listen_host: str, target: tuple[str, int]) -> None:
        self.listen_host = listen_host
        self.target = target
        self.port = 0
        self.peers: set[str] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> TcpRelay:
        ready = threading.Event()

        def main() -> None:
            try:
                asyncio.run(self._serve(ready))
            except BaseException as e:  # shown by start() when it never got ready
                self._error = e
                ready.set()

        self._thread = threading.Thread(target=main, name=f"relay-{self.target[1]}", daemon=True)
        self._thread.start()
        if not ready.wait(10) or self._error:
            raise RuntimeError(f"the relay to {self.target} did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop and self._stopping and self._thread:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=10)

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        handlers: set[asyncio.Task] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await self._relay(reader, writer)
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(handle, self.listen_host, 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stopping.wait()
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.add(writer.get_extra_info("peername")[0])
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (writer, up_writer):
                w.close()
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

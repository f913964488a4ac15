"""A simulated node, for benchmarks and tests only: a fleet of thousands without thousands of
machines.

Selected by the ``SIM_TRANSPORT`` setting (``PANEL_SIM_TRANSPORT``), which production never
sets and no form offers: with it, every SSH node is answered here instead of over SSH. Each
node keeps its state (packages, users, services, files and folders) in a JSON file of its own
under the setting's folder, so the sessions of any worker process, one after the other, see
what the earlier ones did, and a second convergence finds nothing to do. Each command costs a
configurable round trip plus a per-command time (``asyncio.sleep``), each file operation a
round trip, and a connection two.

It answers the commands the built-in synchronizers run (``dpkg-query``, ``apt-get``,
``getent``, ``useradd``, ``systemctl``...) as a Debian node would; any other command succeeds
and prints nothing. It is not a model of a node's security rules: those are tested against
real ``sshd`` nodes and the local transport.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nodes.transports.base import (
    MISSING,
    CommandFailed,
    CommandResult,
    FileState,
    OutputCallback,
    Transport,
    TransportError,
)
from nodes.transports.fileops import FileOps

OS_RELEASE = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
    'VERSION_ID="12"\nID=debian\n'
)
FIRST_UID = 1000


@dataclass(frozen=True)
class SimSettings:
    """What ``PANEL_SIM_TRANSPORT`` says: ``dir=PATH,rtt_ms=N,command_ms=N``."""

    directory: Path
    rtt: float = 0.0
    command: float = 0.0

    @classmethod
    def parse(cls, text: str) -> SimSettings:
        """``dir=PATH[,rtt_ms=N][,command_ms=N]``; ValueError saying what is wrong."""
        values = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in ("dir", "rtt_ms", "command_ms"):
                raise ValueError(f"expected dir=PATH,rtt_ms=N,command_ms=N, not {part!r}")
            values[key.strip()] = value.strip()
        if not values.get("dir"):
            raise ValueError("dir=PATH is required")
        try:
            rtt, command = (float(values.get(k, 0)) / 1000 for k in ("rtt_ms", "command_ms"))
        except ValueError:
            raise ValueError("rtt_ms and command_ms are numbers of milliseconds") from None
        if rtt < 0 or command < 0:
            raise ValueError("rtt_ms and command_ms cannot be negative")
        return cls(Path(values["dir"]), rtt, command)


def new_state(hostname: str) -> dict:
    """A fresh Debian node: no package, user or service of the panel's yet."""
    return {
        "hostname": hostname,
        "packages": [],
        "users": {},
        "services": {},
        "files": {
            "/etc/os-release": {
                "data": base64.b64encode(OS_RELEASE.encode()).decode(),
                "mode": 0o644,
                "owner": "root",
                "group": "root",
            }
        },
        "dirs": ["/", "/etc", "/home", "/var", "/var/lib"],
    }


class SimNode:
    """One node's state, read from its file when a session opens, written back when it closes
    (only if something changed)."""

    def __init__(self, path: Path, hostname: str) -> None:
        self.path = path
        try:
            self.state = json.loads(path.read_text())
        except FileNotFoundError:
            self.state = new_state(hostname)
        self.changed = False

    def save(self) -> None:
        if self.changed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state))
            os.replace(tmp, self.path)
            self.changed = False

    # --- commands ---------------------------------------------------------------------------

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of ``argv`` on this node."""
        if argv[:2] == ["env", "DEBIAN_FRONTEND=noninteractive"]:
            argv = argv[2:]
        name = os.path.basename(argv[0]) if argv else ""
        handler = getattr(self, "_" + name.replace("-", "_"), None)
        return handler(argv[1:]) if handler else (0, "", "")

    def _sh(self, args: list[str]) -> tuple[int, str, str]:
        script = args[1] if len(args) > 1 else ""
        if "uname -n" in script:  # the facts script
            s = self.state
            return (
                0,
                (
                    f"hostname={s['hostname']}\nkernel=6.1.0-sim\narch=x86_64\ncpus=2\n"
                    "memory_kb=4000000\nmemory_available_kb=3000000\ndisk_total_kb=20000000\n"
                    "disk_used_kb=5000000\ndisk_available_kb=15000000\nuptime_seconds=1000\n"
                    "os_id=debian\nos_name=Debian GNU/Linux\nos_version=12\n"
                    "os_pretty=Debian GNU/Linux 12 (bookworm)\nos_id_like=\n"
                ),
                "",
            )
        if "command -v" in script:
            return 1, "", ""  # no update-rc.d: systemd runs the services
        return 0, "", ""

    def _test(self, args: list[str]) -> tuple[int, str, str]:
        if args[:2] == ["-d", "/run/systemd/system"]:
            return 0, "", ""
        if len(args) == 2 and args[0] == "-d":
            return (0 if args[1] in self.state["dirs"] else 1), "", ""
        if len(args) == 2 and args[0] in ("-e", "-f", "-x"):
            return (0 if args[1] in self.state["files"] else 1), "", ""
        return 0, "", ""

    def _dpkg_query(self, args: list[str]) -> tuple[int, str, str]:
        names = [a for a in args if not a.startswith("-")]
        have = set(self.state["packages"])
        out = "".join(f"{n}\tinstall ok installed\n" for n in names if n in have)
        missing = [n for n in names if n not in have]
        err = "".join(f"dpkg-query: no packages found matching {n}\n" for n in missing)
        return (1 if missing else 0), out, err

    def _apt_cache(self, args: list[str]) -> tuple[int, str, str]:
        if args[:1] == ["pkgnames"]:  # every name asked for is a package here
            return 0, "".join(f"{a}\n" for a in args[1:] if not a.startswith("-")), ""
        return 0, "", ""

    def _apt_get(self, args: list[str]) -> tuple[int, str, str]:
        if "install" in args:
            names = [a for a in args[args.index("install") + 1 :] if not a.startswith("-")]
            added = [n for n in names if n not in self.state["packages"]]
            if added:
                self.state["packages"] = sorted({*self.state["packages"], *added})
                self.changed = True
            return 0, f"{len(added)} newly installed\n", ""
        return 0, "", ""

    def _getent(self, args: list[str]) -> tuple[int, str, str]:
        user = self.state["users"].get(args[-1]) if args[:1] == ["passwd"] else None
        if user is None:
            return 2, "", ""
        return 0, f"{args[-1]}:x:{user['uid']}:{user['uid']}::{user['home']}:{user['shell']}\n", ""

    def _useradd(self, args: list[str]) -> tuple[int, str, str]:
        name = args[-1]
        users = self.state["users"]
        if name in users:
            return 9, "", f"useradd: user '{name}' already exists\n"
        shell = args[args.index("--shell") + 1] if "--shell" in args else "/bin/sh"
        uid = max([FIRST_UID - 1, *(u["uid"] for u in users.values())]) + 1
        users[name] = {"uid": uid, "home": f"/home/{name}", "shell": shell, "locked": False}
        self.state["dirs"].append(f"/home/{name}")
        self.changed = True
        return 0, "", ""

    def _usermod(self, args: list[str]) -> tuple[int, str, str]:
        user = self.state["users"].get(args[-1])
        if user is None:
            return 6, "", f"usermod: user '{args[-1]}' does not exist\n"
        if "--shell" in args:
            user["shell"] = args[args.index("--shell") + 1]
        if "--lock" in args:
            user["locked"] = True
        self.changed = True
        return 0, "", ""

    def _userdel(self, args: list[str]) -> tuple[int, str, str]:
        if self.state["users"].pop(args[-1], None) is None:
            return 6, "", f"userdel: user '{args[-1]}' does not exist\n"
        self.changed = True
        return 0, "", ""

    def _id(self, args: list[str]) -> tuple[int, str, str]:
        if args[-1] not in self.state["users"]:
            return 1, "", f"id: '{args[-1]}': no such user\n"
        return 0, f"{args[-1]}\n", ""

    def _passwd(self, args: list[str]) -> tuple[int, str, str]:
        user = self.state["users"].get(args[-1])
        if user is None:
            return 1, "", ""
        return 0, f"{args[-1]} {'L' if user['locked'] else 'P'} 01/01/2026 0 99999 7 -1\n", ""

    def _systemctl(self, args: list[str]) -> tuple[int, str, str]:
        services = self.state["services"]
        name = args[-1]
        if args[:1] == ["is-active"]:
            return (0 if services.get(name, {}).get("running") else 3), "", ""
        if args[:1] == ["enable"]:
            services[name] = {"enabled": True, "running": "--now" in args}
            self.changed = True
        elif args[:1] == ["reload-or-restart"]:
            services.setdefault(name, {"enabled": False})["running"] = True
            self.changed = True
        return 0, "", ""

    # --- files ------------------------------------------------------------------------------

    def file_state(self, path: str) -> FileState:
        entry = self.state["files"].get(path)
        if entry is None:
            if path in self.state["dirs"]:
                return FileState("refused", reason="it is a folder")
            return MISSING
        data = base64.b64decode(entry["data"])
        uid = self._uid(entry["owner"])
        return FileState(
            "file",
            mode=entry["mode"],
            uid=uid,
            gid=uid,
            owner=entry["owner"],
            group=entry["group"],
            sha256=hashlib.sha256(data).hexdigest(),
        )

    def _uid(self, name: str) -> int:
        return 0 if name == "root" else self.state["users"].get(name, {}).get("uid", -1)

    def put(self, path: str, data: bytes, mode: int, owner: str | None, group: str | None):
        self.state["files"][path] = {
            "data": base64.b64encode(data).decode(),
            "mode": mode,
            "owner": owner or "root",
            "group": group or owner or "root",
        }
        self.make_dir(os.path.dirname(path))
        self.changed = True

    def make_dir(self, path: str) -> None:
        dirs = self.state["dirs"]
        while path and path not in dirs:
            dirs.append(path)
            path = os.path.dirname(path) if path != "/" else ""
        self.changed = True


class SimFileOps(FileOps):
    """File work on a simulated node: one round trip each."""

    def __init__(self, transport: SimTransport) -> None:
        self.t = transport

    async def put(self, path, data, *, mode, owner, group) -> None:
        await self.t.trip()
        self.t.node.put(path, data, mode, owner, group)

    async def make_dir(self, path, *, mode, owner, group, trusting) -> None:
        await self.t.trip()
        self.t.node.make_dir(path)

    async def read(self, path: str) -> bytes:
        await self.t.trip()
        entry = self.t.node.state["files"].get(path)
        if entry is None:
            raise TransportError(f"cannot read {path}: No such file or directory")
        return base64.b64decode(entry["data"])

    async def remove(self, path: str, *, trusting) -> bool:
        await self.t.trip()
        if path in self.t.node.state["dirs"]:
            raise TransportError(f"refusing to remove {path}: it is a folder")
        removed = self.t.node.state["files"].pop(path, None) is not None
        self.t.node.changed |= removed
        return removed

    async def stat(self, paths: list[str]) -> dict[str, FileState]:
        await self.t.trip()
        return {path: self.t.node.file_state(path) for path in paths}

    async def set_attrs(self, path, *, mode, owner, group, sha256) -> None:
        await self.t.trip()
        entry = self.t.node.state["files"].get(path)
        if entry is None:
            raise TransportError(f"cannot change {path}: there is no such file")
        if sha256 is not None and self.t.node.file_state(path).sha256 != sha256:
            raise TransportError(f"refusing to change {path}: it was changed since it was read")
        if mode is not None:
            entry["mode"] = mode
        if owner is not None:
            entry["owner"] = owner
        if group is not None:
            entry["group"] = group
        self.t.node.changed = True


class SimTransport(Transport):
    """One session on a simulated node."""

    def __init__(self, node: SimNode, settings: SimSettings) -> None:
        self.node = node
        self.settings = settings
        self._files = SimFileOps(self)

    @classmethod
    async def connect(cls, node, settings: SimSettings) -> SimTransport:
        """A session on ``node`` (a ``Node``): two round trips, like a warm SSH handshake."""
        sim = SimNode(settings.directory / f"{node.uuid}.json", node.name)
        transport = cls(sim, settings)
        await transport.trip(2)
        return transport

    async def trip(self, count: float = 1, extra: float = 0.0) -> None:
        wait = self.settings.rtt * count + extra
        await asyncio.sleep(wait)  # 0 still yields, as a network wait would

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        argv = [str(a) for a in argv]
        await self.trip(1, self.settings.command)
        status, stdout, stderr = self.node.run(argv)
        if check and status != 0:
            raise CommandFailed(argv, status, stderr)
        return CommandResult(argv, status, stdout, stderr)

    async def _file_ops(self) -> FileOps:
        return self._files

    async def close(self) -> None:
        self.node.save()

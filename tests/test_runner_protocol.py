"""The runner's protocol version, checked before the panel sends the runner anything.

The real runner runs here as a local process over pipes, met by the panel's own channel code
(``RunnerChannel.open``, what the SSH transport calls on the runner's SSH channel).
"""

from __future__ import annotations

import ast
import asyncio
import json
import struct
import sys

import pytest

from nodes.transports import TransportError
from nodes.transports.channel import RUNNER_SOURCE, RunnerChannel
from nodes.transports.remote_runner import PROTOCOL, NodeSession
from nodes.transports.replies import NotARunnerReply


class PipeProcess:
    """A local process with the few methods the channel uses of an asyncssh process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdin, self.stdout = proc.stdin, proc.stdout

    def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    def is_closing(self) -> bool:
        return self.proc.returncode is not None


async def _open(argv: list[str], session: NodeSession | None = None):
    """Start ``argv`` and meet it as the panel meets a runner; (channel, process)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    process = PipeProcess(proc)
    try:
        return await RunnerChannel.open(process, session), proc
    finally:
        process.close()
        await proc.wait()


def _runner_speaking(version: int) -> str:
    old, new = f"\nPROTOCOL = {PROTOCOL}\n", f"\nPROTOCOL = {version}\n"
    assert RUNNER_SOURCE.count(old) == 1
    return RUNNER_SOURCE.replace(old, new)


def test_the_runner_is_python_3_6_syntax():
    """Fast; the real run under 3.6 is ``tests/integration/test_node_python.py``."""
    ast.parse(RUNNER_SOURCE, feature_version=(3, 6))
    with pytest.raises(SyntaxError):  # the check does refuse newer syntax
        ast.parse("if (n := 1):\n    pass\n", feature_version=(3, 6))
    assert "from __future__" not in RUNNER_SOURCE  # not in the middle of the sent source


def test_the_runner_says_its_protocol_before_anything_else():
    async def first_frame():
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RUNNER_SOURCE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            (size,) = struct.unpack(">I", await proc.stdout.readexactly(4))
            return json.loads(await proc.stdout.readexactly(size))
        finally:
            proc.stdin.close()  # the channel closes: the runner exits
            await proc.wait()

    assert asyncio.run(first_frame()) == {"runner": "cluster-panel", "protocol": PROTOCOL}


def test_it_refuses_a_runner_of_another_protocol_before_sending_it_anything(tmp_path):
    lock = tmp_path / "locks" / "node.lock"
    session = NodeSession(str(lock), "panel:1:test")
    old = PROTOCOL - 1
    with pytest.raises(TransportError) as e:
        asyncio.run(_open([sys.executable, "-c", _runner_speaking(old)], session))
    assert str(e.value).startswith(f"the node's runner speaks protocol {old}, the panel {PROTOCOL}")
    assert not lock.parent.exists()  # the session request was never sent: no lock taken


def test_it_takes_the_node_with_a_runner_of_its_own_protocol(tmp_path):
    lock = tmp_path / "locks" / "node.lock"
    session = NodeSession(str(lock), "panel:1:test")
    channel, _ = asyncio.run(_open([sys.executable, "-c", RUNNER_SOURCE], session))
    assert channel is not None
    assert json.loads(lock.read_text())["owner"] == "panel:1:test"


def test_it_refuses_a_first_frame_without_a_version():
    fake = (
        'import sys; data = b\'{"runner": "cluster-panel"}\'; '
        "sys.stdout.buffer.write(len(data).to_bytes(4, 'big') + data); sys.stdout.flush(); "
        "sys.stdin.read()"
    )
    with pytest.raises(NotARunnerReply, match="'protocol' is not an integer"):
        asyncio.run(_open([sys.executable, "-c", fake]))


def test_a_node_without_python3_has_no_runner():
    """What a shell without python3 does: a word on stderr, exit 127; then plain commands."""
    not_found = ["sh", "-c", "echo 'sh: 1: python3: not found' >&2; exit 127"]
    channel, _ = asyncio.run(_open(not_found))
    assert channel is None


def test_a_kept_runner_lets_the_node_go_between_sessions_and_takes_it_again(tmp_path):
    """What a warm connection does with its runner: each session takes the node, runs under
    its own name, and lets it go; a command sent between sessions is refused."""
    lock = tmp_path / "locks" / "node.lock"
    first = NodeSession(str(lock), "panel:1:first")
    second = NodeSession(str(lock), "panel:1:second")

    def owner() -> str | None:
        return json.loads(lock.read_text())["owner"]

    async def sessions():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RUNNER_SOURCE, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        process = PipeProcess(proc)
        try:
            channel = await RunnerChannel.open(process, first)
            run = {"op": "run", "argv": ["true"], "input": None, "timeout": 5}
            seen = [owner(), (await channel.request(run))["rc"]]
            await channel.release_node()
            seen += [owner(), (await channel.request(run)).get("error", "")]
            await channel.take_node(second)
            seen += [owner(), (await channel.request(run))["rc"]]
            await channel.release_node()
            return [*seen, owner()]
        finally:
            process.close()
            await proc.wait()

    taken, ran, released, refused, again, ran_again, released_again = asyncio.run(sessions())
    assert (taken, ran) == ("panel:1:first", 0)
    assert released is None and "another session took this node over" in refused
    assert (again, ran_again, released_again) == ("panel:1:second", 0, None)

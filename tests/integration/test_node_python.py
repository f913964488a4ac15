"""The runner under the oldest Python promised for nodes, and a runner of another protocol.

The node is a real sshd whose ForceCommand puts a folder first on PATH where ``python3`` is
that old interpreter, then runs what the panel asked for: the SSH transport starts its runner
with ``python3 -c`` as on any node, and every request goes through the panel's real code.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shlex
import subprocess

import pytest

from nodes.transports import TransportError, channel
from nodes.transports.remote_runner import PROTOCOL
from tests.integration.conftest import with_transport

pytestmark = pytest.mark.django_db

OLDEST = (3, 6)


def node_python() -> str | None:
    """``PANEL_TEST_NODE_PYTHON``, else a Python 3.6 found on this machine."""
    if os.environ.get("PANEL_TEST_NODE_PYTHON"):
        return os.environ["PANEL_TEST_NODE_PYTHON"]
    found = sorted(glob.glob("/root/.pyenv/versions/3.6*/bin/python3.6"))
    found += [p for p in ["/usr/bin/python3.6"] if os.path.exists(p)]
    return found[0] if found else None


@pytest.fixture
def old_python_node(make_ssh_node, tmp_path):
    """(node, interpreter): an SSH node whose ``python3`` is the oldest Python promised."""
    python = node_python()
    if python is None:
        pytest.skip(
            "no Python 3.6 here (set PANEL_TEST_NODE_PYTHON, or install one as "
            "/usr/bin/python3.6 or under /root/.pyenv/versions/3.6*)"
        )
    version = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tuple(map(int, version)) == OLDEST, f"{python} is Python {'.'.join(version)}"
    bin_dir = tmp_path / "node-bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(python)
    path = shlex.quote(f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin")
    node, _ = make_ssh_node(force_command=f'PATH={path}; export PATH; eval "$SSH_ORIGINAL_COMMAND"')
    return node, os.path.realpath(python)


def test_the_runner_works_under_the_oldest_python_promised_for_nodes(old_python_node, tmp_path):
    node, python = old_python_node
    folder = tmp_path / "files" / "etc" / "app"
    path = folder / "app.conf"
    (tmp_path / "decoy").mkdir()
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "link").symlink_to(tmp_path / "decoy")
    content = b"key = value\n\x00\xff binary too\n"
    progress: list[bytes] = []

    async def work(t):
        done = {
            # The command's parent is the runner: proof that no plain-SSH fallback ran it.
            "runner": (await t.run(["sh", "-c", "readlink /proc/$PPID/exe"])).stdout.strip(),
            "stdin": (await t.run(["cat"], input=b"through stdin\n")).stdout,
            "failed": await t.run(["sh", "-c", "echo doom >&2; exit 7"], check=False),
            "watched": await t.run(
                ["sh", "-c", "echo step one; sleep 1.5; echo step two"], on_output=progress.append
            ),
        }
        with pytest.raises(TimeoutError):
            await t.run(["sleep", "30"], timeout=1)
        await t.make_dir(str(folder), mode=0o750, owner="nobody", group="nogroup")
        await t.put_file(str(path), content, mode=0o640, owner="nobody", group="nogroup")
        done["read"] = await t.read_file(str(path))
        done["mode"] = os.stat(path).st_mode & 0o7777
        done["removed"] = await t.remove_file(str(path), trusting="nobody")
        done["removed again"] = await t.remove_file(str(path), trusting="nobody")
        for attempt in (
            t.put_file(str(tmp_path / "files" / "link" / "x"), b"x"),
            t.remove_file(str(tmp_path / "files" / "link" / "x")),
        ):
            with pytest.raises(TransportError, match="/link is a symbolic link"):
                await attempt
        return done

    done = asyncio.run(with_transport(node, work))
    assert done["runner"] == python
    assert done["stdin"] == "through stdin\n"
    assert (done["failed"].exit_status, done["failed"].stderr) == (7, "doom\n")
    assert done["watched"].stdout == "step one\nstep two\n"
    assert any(b"step one" in tail for tail in progress)
    assert (folder.stat().st_uid, folder.stat().st_mode & 0o7777) == (65534, 0o750)
    assert (done["read"], done["mode"]) == (content, 0o640)
    assert (done["removed"], done["removed again"]) == (True, False)
    assert not path.exists() and os.listdir(folder) == []
    assert os.listdir(tmp_path / "decoy") == []


def test_the_panel_refuses_a_runner_of_another_protocol(make_ssh_node, tmp_path, monkeypatch):
    node, _ = make_ssh_node()
    old = f"\nPROTOCOL = {PROTOCOL}\n"
    assert channel.RUNNER_SOURCE.count(old) == 1
    other = channel.RUNNER_SOURCE.replace(old, f"\nPROTOCOL = {PROTOCOL + 1}\n")
    monkeypatch.setattr(channel, "RUNNER_SOURCE", other)
    marker = tmp_path / "ran"

    with pytest.raises(TransportError) as e:
        asyncio.run(with_transport(node, lambda t: t.run(["touch", str(marker)])))
    assert str(e.value).startswith(
        f"the node's runner speaks protocol {PROTOCOL + 1}, the panel {PROTOCOL}: refused"
    )
    assert not marker.exists()  # not run by that runner, nor by plain SSH in its place

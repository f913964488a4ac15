"""The local transport: the panel's own server as a node."""

import asyncio
import os
import stat
import time

import pytest

from nodes.transports import CommandFailed, TransportError
from nodes.transports.local import LocalTransport


def run(coro):
    return asyncio.run(coro)


def test_it_passes_arguments_literally():
    tricky = "$(touch /tmp/pwned); `id` && echo 'x' | cat > /dev/null; * \"q\""
    result = run(LocalTransport().run(["printf", "%s", tricky]))
    assert result.stdout == tricky
    assert result.exit_status == 0


def test_it_reports_a_failed_command_with_its_exit_code_and_stderr():
    with pytest.raises(CommandFailed) as e:
        run(LocalTransport().run(["sh", "-c", "echo doomed >&2; exit 3"]))
    assert e.value.exit_status == 3
    assert "exited with 3" in str(e.value) and "doomed" in str(e.value)


def test_it_returns_a_failed_command_when_not_checking():
    result = run(LocalTransport().run(["false"], check=False))
    assert result.exit_status == 1


def test_it_reports_a_missing_program():
    with pytest.raises(TransportError, match="cannot run"):
        run(LocalTransport().run(["/nonexistent/program"]))


def test_it_kills_a_command_past_its_timeout(tmp_path):
    marker = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run(LocalTransport().run(["sh", "-c", f"echo $$ > {marker}; sleep 30"], timeout=0.5))
    assert time.monotonic() - started < 5
    pid = int(marker.read_text())
    time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_it_writes_a_file_atomically_with_its_mode(tmp_path):
    path = tmp_path / "motd"
    path.write_text("old")
    run(LocalTransport().put_file(str(path), b"new content\n", mode=0o640))
    assert path.read_bytes() == b"new content\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["motd"]  # no temporary file left


def test_it_reads_a_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"\x00data")
    assert run(LocalTransport().read_file(str(path))) == b"\x00data"


def test_it_reports_an_unreadable_file(tmp_path):
    with pytest.raises(TransportError, match="cannot read"):
        run(LocalTransport().read_file(str(tmp_path / "missing")))


def test_its_commands_get_a_clean_environment_without_the_panels_secrets(monkeypatch):
    """The panel's environment holds its secret key and the passwords of its database and
    Redis; a command the synchronizers run (a package's scripts...) sees none of it."""
    secrets = {
        "DJANGO_SECRET_KEY": "s3cret-key-of-the-panel",
        "DATABASE_URL": "mysql://panel:db-pa55word@db/panel",
        "PANEL_REDIS_URL": "redis://:redis-pa55word@127.0.0.1:6379/0",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    result = run(LocalTransport().run(["env"]))
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines())
    for name, value in secrets.items():
        assert name not in seen and value not in result.stdout
    assert set(seen) == {"PATH", "LANG", "HOME", "USER", "LOGNAME"}
    assert seen["LANG"] == "C.UTF-8"
    assert seen["HOME"] == os.path.expanduser("~" + seen["USER"])
    assert "/usr/sbin" in seen["PATH"].split(":")  # useradd, apt-get's helpers

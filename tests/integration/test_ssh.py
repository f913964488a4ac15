"""SSH nodes end to end, against real OpenSSH servers on loopback ports."""

import asyncio
import hashlib
import os
import re
import socket
import stat
import threading
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from nodes.choices import NodeStatus, Transport
from nodes.keys import fingerprint, panel_key_path, panel_public_key
from nodes.models import Node
from nodes.transports import CommandFailed, TransportError
from sync.engine import register_desync, run_nodes
from sync.models import Node2Sync, Outcome, SyncRun
from tests.integration.conftest import with_transport, without_runner
from tools.sshd import SSHServer

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def nodesync_exit_code(*args: str) -> int:
    try:
        run("nodesync", *args)
    except CommandError as e:
        return e.returncode
    return 0


def add_ssh_node(name: str, server) -> Node:
    run("addnode", name, "--host", "127.0.0.1", "--port", str(server.port), "--user", "root")
    return Node.objects.get(name=name)


# --- the acceptance path ----------------------------------------------------------------------


def test_it_brings_three_real_ssh_nodes_to_ready_and_survives_a_changed_host_key(sshd):
    servers = [sshd() for _ in range(3)]
    nodes = [add_ssh_node(f"s{i}", server) for i, server in enumerate(servers)]
    assert nodesync_exit_code() == 0
    for node in nodes:
        node.refresh_from_db()
        assert node.status == NodeStatus.READY
        assert node.facts["hostname"] == socket.gethostname()
        assert node.facts["kernel"]

    servers[0].restart_with_new_host_key()
    run("desync", "s0", "--action", "nodeinfo")
    assert nodesync_exit_code() == 1
    s0 = Node.objects.get(name="s0")
    assert "host key changed" in s0.last_error
    assert "acceptkey" not in s0.last_error  # the page offers its button; commands add it
    assert "acceptkey s0" in run("nodes")
    assert fingerprint(servers[0].host_key) in s0.last_error
    assert set(Node.objects.exclude(name="s0").values_list("status", flat=True)) == {"ready"}

    out = run("acceptkey", "s0")
    assert fingerprint(servers[0].host_key) in out
    assert nodesync_exit_code() == 0
    s0.refresh_from_db()
    assert s0.status == NodeStatus.READY
    assert s0.last_error == ""


# --- addnode, panelkey, acceptkey -------------------------------------------------------------


def test_it_pins_the_host_key_and_prints_its_fingerprint(sshd):
    server = sshd()
    out = run("addnode", "s1", "--host", "127.0.0.1", "--port", str(server.port))
    node = Node.objects.get(name="s1")
    assert node.transport == Transport.SSH
    assert node.host_key == server.host_key
    assert fingerprint(server.host_key) in out
    assert Node2Sync.objects.filter(node=node).exists()


def test_it_refuses_to_add_an_unreachable_node():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CommandError, match="unreachable") as e:
        run("addnode", "gone", "--host", "127.0.0.1", "--port", str(port))
    assert e.value.returncode == 1
    assert not Node.objects.exists()


def test_it_refuses_to_add_a_node_that_does_not_accept_the_panels_key(sshd):
    server = sshd()
    server.authorized_keys.write_text("")
    err = StringIO()
    with pytest.raises(CommandError, match="authentication refused"):
        call_command(
            "addnode",
            "s1",
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            stdout=StringIO(),
            stderr=err,
        )
    assert panel_public_key() in err.getvalue()
    assert not Node.objects.exists()


def test_it_refuses_a_bad_port():
    with pytest.raises(CommandError) as e:
        run("addnode", "s1", "--host", "127.0.0.1", "--port", "70000")
    assert e.value.returncode == 2


def test_it_prints_the_panels_public_key_and_keeps_the_private_key_private():
    out = run("panelkey").strip()
    assert re.fullmatch(r"ssh-ed25519 [A-Za-z0-9+/=]+ cluster-panel@\S+", out)
    assert stat.S_IMODE(panel_key_path().stat().st_mode) == 0o600
    assert "PRIVATE" not in out


def test_it_says_when_an_accepted_key_is_unchanged(make_ssh_node):
    node, server = make_ssh_node()
    assert "unchanged" in run("acceptkey", node.name)


def test_it_refuses_acceptkey_for_a_local_node(make_node):
    make_node("l1")
    with pytest.raises(CommandError) as e:
        run("acceptkey", "l1")
    assert e.value.returncode == 2


# --- the transport ----------------------------------------------------------------------------


@pytest.fixture(params=["runner", "plain-ssh"])
def command_mode(request, monkeypatch):
    """Both ways commands reach a node: the session's runner, and plain SSH commands (nodes
    without python3)."""
    if request.param == "plain-ssh":
        without_runner(monkeypatch)
    return request.param


def test_it_passes_arguments_and_file_names_literally_over_ssh(
    make_ssh_node, tmp_path, command_mode
):
    node, _ = make_ssh_node()
    tricky = "$(touch /tmp/pwned-by-panel); `id` && echo 'x' | cat; * \"q\" \\ ~"
    (tmp_path / "files").mkdir()
    path = tmp_path / "files" / "a file; $(touch x) & 'q'.conf"
    content = b"value = $(rm -rf /)\n`reboot`\n'quoted' \"double\"\n\x00binary\xff\n"

    async def work(t):
        echoed = await t.run(["printf", "%s", tricky])
        await t.put_file(str(path), content, mode=0o600)
        return echoed.stdout, await t.read_file(str(path))

    echoed, read_back = asyncio.run(with_transport(node, work))
    assert echoed == tricky
    assert read_back == content
    assert path.read_bytes() == content
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert not os.path.exists("/tmp/pwned-by-panel")


def test_it_removes_a_file_and_says_whether_there_was_one(make_ssh_node, tmp_path, command_mode):
    node, _ = make_ssh_node()
    folder = tmp_path / "etc"
    (folder / "sub").mkdir(parents=True)
    path = folder / "app.conf"
    path.write_text("x")

    async def work(t):
        removed = [await t.remove_file(str(path)) for _ in range(2)]
        removed.append(await t.remove_file(str(tmp_path / "gone" / "app.conf")))
        with pytest.raises(TransportError, match=r"refusing to remove .*/sub: it is a folder"):
            await t.remove_file(str(folder / "sub"))
        return removed

    assert asyncio.run(with_transport(node, work)) == [True, False, False]
    assert os.listdir(folder) == ["sub"]


def test_it_reports_a_failed_command_with_its_exit_code_and_stderr(make_ssh_node, command_mode):
    node, _ = make_ssh_node()
    with pytest.raises(CommandFailed) as e:
        asyncio.run(with_transport(node, lambda t: t.run(["sh", "-c", "echo doom >&2; exit 7"])))
    assert e.value.exit_status == 7
    assert "exited with 7" in str(e.value) and "doom" in str(e.value)


def test_it_reports_an_unreadable_file(make_ssh_node, tmp_path, command_mode):
    node, _ = make_ssh_node()
    with pytest.raises(TransportError, match="cannot read"):
        asyncio.run(with_transport(node, lambda t: t.read_file(str(tmp_path / "missing"))))


def test_it_uses_one_connection_for_a_whole_session(make_ssh_node, make_type):
    node, server = make_ssh_node()

    async def one_command(ctx):
        await ctx.transport.run(["true"])

    types = [make_type(f"t-{p}", priority=p, run=one_command) for p in (1, 2, 3)]
    register_desync([node], types)
    [result] = run_nodes([node.pk])
    assert result.completed == 3
    log = (server.dir / "sshd.log").read_text()
    assert log.count("Accepted publickey") == 1


# --- each way a node fails --------------------------------------------------------------------


def _fail_and_check(node, healthy, action, expected: str) -> None:
    """Run both nodes; the failure must reach the node, the run log and the log file, and the
    healthy node must not be held up."""
    log_file = settings.LOG_DIR / "panel.log"
    before = log_file.stat().st_size if log_file.exists() else 0
    register_desync([node, healthy], [action])
    results = {r.node.name: r for r in run_nodes([node.pk, healthy.pk])}
    assert results[node.name].failed
    assert results[healthy.name].completed == 1
    node.refresh_from_db()
    assert expected in node.last_error
    run = SyncRun.objects.get(node=node, action=action)
    assert run.outcome in (Outcome.FAILED, Outcome.TIMEOUT)
    assert expected in run.log
    with open(log_file) as f:
        f.seek(before)
        written = f.read()
    assert f"sync error node={node.name} type={action.name}" in written
    assert expected in written


async def _facts_command(ctx):
    await ctx.transport.run(["uname", "-r"])


def test_it_reports_an_unreachable_node(make_node, make_type, make_ssh_node):
    healthy, _ = make_ssh_node("ok")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = make_node(
        "gone", transport=Transport.SSH, host="127.0.0.1", port=port, host_key=healthy.host_key
    )
    _fail_and_check(gone, healthy, make_type("t-a", run=_facts_command), "unreachable")


def test_it_reports_refused_authentication(make_ssh_node, make_type):
    healthy, _ = make_ssh_node("ok")
    locked, server = make_ssh_node("locked")
    server.authorized_keys.write_text("")
    _fail_and_check(locked, healthy, make_type("t-a", run=_facts_command), "authentication refused")


def test_it_reports_a_changed_host_key_and_runs_nothing_there(make_ssh_node, make_type):
    healthy, _ = make_ssh_node("ok")
    moved, server = make_ssh_node("moved")
    server.restart_with_new_host_key()
    ran: list[str] = []

    async def record(ctx):
        ran.append(ctx.node.name)
        await ctx.transport.run(["true"])

    _fail_and_check(moved, healthy, make_type("t-a", run=record), "host key changed")
    assert ran == ["ok"]


def test_it_reports_a_failed_command(make_ssh_node, make_type):
    healthy, _ = make_ssh_node("ok")
    broken, _ = make_ssh_node("broken")

    async def fails_on_broken(ctx):
        code = "7" if ctx.node.name == "broken" else "0"
        await ctx.transport.run(["sh", "-c", f"echo disk full >&2; exit {code}"])

    _fail_and_check(
        broken, healthy, make_type("t-a", run=fails_on_broken), "disk full (`sh` exited with 7)"
    )


def test_it_reports_a_command_that_hangs(make_ssh_node, make_type, command_mode):
    healthy, _ = make_ssh_node("ok")
    slow, _ = make_ssh_node("slow")

    async def hangs_on_slow(ctx):
        await ctx.transport.run(["sleep", "30" if ctx.node.name == "slow" else "0"])

    _fail_and_check(
        slow, healthy, make_type("t-a", run=hangs_on_slow, timeout=2), "timed out after 2 s"
    )


def test_it_reports_a_node_that_never_answers_the_handshake(make_node, make_type, make_ssh_node):
    healthy, _ = make_ssh_node("ok")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stay_silent():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    try:
        mute = make_node(
            "mute",
            transport=Transport.SSH,
            host="127.0.0.1",
            port=listener.getsockname()[1],
            host_key=healthy.host_key,
        )
        _fail_and_check(
            mute, healthy, make_type("t-a", run=_facts_command, timeout=2), "timed out after 2 s"
        )
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_it_sets_owner_and_group_of_a_file(make_ssh_node, tmp_path, command_mode):
    node, _ = make_ssh_node()
    path = tmp_path / "owned"
    asyncio.run(
        with_transport(
            node, lambda t: t.put_file(str(path), b"x", mode=0o640, owner="nobody", group="nogroup")
        )
    )
    assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (65534, 0o640)


def test_it_reports_a_missing_program_over_ssh(make_ssh_node, command_mode):
    node, _ = make_ssh_node()
    with pytest.raises(CommandFailed) as e:
        asyncio.run(with_transport(node, lambda t: t.run(["no-such-program-xyz"])))
    assert e.value.exit_status == 127


def test_it_reads_a_files_state_and_sets_it_through_a_descriptor(
    make_ssh_node, tmp_path, command_mode
):
    node, _ = make_ssh_node()
    path, fifo, link = tmp_path / "tool", tmp_path / "fifo", tmp_path / "link"
    path.write_bytes(b"x\n")
    os.mkfifo(fifo)
    link.symlink_to(path)
    sha = hashlib.sha256(b"x\n").hexdigest()

    async def work(t):
        states = await t.stat_files([str(path), str(fifo), str(link), str(tmp_path / "none")])
        await t.set_attrs(str(path), mode=0o4750, owner="nobody", group="root", sha256=sha)
        with pytest.raises(TransportError, match="link is a symbolic link, not a regular file"):
            await t.set_attrs(str(link), mode=0o777)
        return states

    states = asyncio.run(with_transport(node, work))
    assert (states[str(path)].kind, states[str(path)].sha256, states[str(path)].owner) == (
        "file",
        sha,
        "root",
    )
    assert "fifo is a FIFO, not a regular file" in states[str(fifo)].reason
    assert "link is a symbolic link, not a regular file" in states[str(link)].reason
    assert states[str(tmp_path / "none")].kind == "missing"
    assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (65534, 0o4750)


def test_the_runner_runs_on_a_raw_terminal_that_passes_every_byte(make_ssh_node, tmp_path):
    """The runner starts on a terminal (closing its channel hangs up what the node started:
    ``test_remote_work_ends``), set raw before its first frame: every byte passes both ways."""
    node, _ = make_ssh_node()
    data = bytes(range(256)) * 64 + b"\r\n\x03\x04\x1a\x11\x13\n"
    path = tmp_path / "binary"

    async def work(t):
        terminal = await t.run(["sh", "-c", "stty -a -F $(readlink /proc/$PPID/fd/0)"])
        echoed = await t.run(["cat"], input=data)
        await t.put_file(str(path), data, mode=0o600)
        return terminal.stdout, echoed.stdout, await t.read_file(str(path))

    terminal, echoed, read_back = asyncio.run(with_transport(node, work))
    for mode in ("-echo", "-icanon", "-isig", "-opost", "-icrnl", "-ixon", "cs8"):
        assert re.search(rf"(^|\s){mode}(\s|$)", terminal), terminal
    assert echoed == data.decode(errors="replace")
    assert path.read_bytes() == data and read_back == data


class NoTerminalSSHServer(SSHServer):
    """A node whose sshd refuses terminals (``PermitTTY no``)."""

    def _config(self):
        config = super()._config()
        config.write_text(config.read_text() + "PermitTTY no\n")
        return config


def test_the_runner_starts_without_a_terminal_where_the_node_refuses_one(make_ssh_node):
    node, _ = make_ssh_node("no-tty", server_class=NoTerminalSSHServer)

    async def work(t):
        return await t.run(["sh", "-c", "readlink /proc/$PPID/fd/0; readlink /proc/$PPID/exe"])

    stdin, runner = asyncio.run(with_transport(node, work)).stdout.split()
    assert not stdin.startswith("/dev/pts/") and "python" in runner

"""A hostile node must not make the panel use unbounded memory, nor crash it with garbage.

The fake node is a real sshd whose ForceCommand runs a small script in place of whatever the
panel asked for: it answers the runner's protocol with a lie, or (posing as a node without
python3) answers plain SSH commands with endless or huge output. Each attack is run as an admin
would meet it, ``manage.py nodesync``, in a child process whose peak memory is measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from nodes.models import Node
from nodes.transports import CommandFailed, TransportError
from nodes.transports.limits import FACT_CHARS, FILE_LIMIT, LOG_LINE_CHARS, OUTPUT_LIMIT
from nodes.transports.remote_runner import PROTOCOL
from sync.engine import register_desync, run_nodes
from sync.models import Outcome, SyncAction, SyncRun
from sync.synchronizers import update_syncactions
from sync.validators import has_control_chars
from tests.conftest import ROOT, process_env
from tests.integration.conftest import with_transport, without_runner

MAX_RSS_MB = 300

# The first frame of an honest runner of this panel's protocol, which the fake plays.
ANNOUNCE = json.dumps({"runner": "cluster-panel", "protocol": PROTOCOL})

# The fake node. argv[1] is the attack, argv[2] the first frame of an honest runner;
# SSH_ORIGINAL_COMMAND is what the panel asked for.
FAKE_NODE = r"""
import base64, json, os, struct, sys

MIB = 1024 * 1024
ANNOUNCE = sys.argv[2].encode()
attack = sys.argv[1]
command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
stdin, stdout, stderr = sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer


def frame(data):
    return struct.pack(">I", len(data)) + data


def read_request():
    head = stdin.read(4)
    if len(head) < 4:
        sys.exit(0)
    return json.loads(stdin.read(struct.unpack(">I", head)[0]))


def send(data):
    try:
        stdout.write(data)
        stdout.flush()
    except BrokenPipeError:  # the panel hung up: what it should do
        sys.exit(0)


def stream(stream, total, chunk=b"A" * MIB):
    sent = 0
    try:
        while total is None or sent < total:
            piece = chunk[: MIB if total is None else min(MIB, total - sent)]
            stream.write(piece)
            sent += len(piece)
        stream.flush()
    except BrokenPipeError:
        sys.exit(0)


SMALL = {  # a well-formed frame around a bad reply
    "garbage": frame(b"\x89PNG\r\n\x1a\n" + bytes(range(200, 256))),
    "not-an-object": frame(b"[1, 2, 3]"),
    "wrong-types": frame(b'{"rc": "zero", "out": "", "err": ""}'),
    "bad-base64": frame(b'{"rc": 0, "out": "!!! not base64 !!!", "err": ""}'),
    "missing-keys": frame(b'{"hello": "world"}'),
    "json-bomb": frame(b"[" + b"{}," * (5 * MIB) + b"{}]"),
    "big-file": frame(b'{"data": "' + b"QUFB" * (3 * MIB) + b'"}'),
    "odd-progress": frame(b'{"rc": 0, "progress": "QUFB"}'),
    "huge-progress": frame(b'{"progress": "' + b"A" * MIB + b'"}'),
}


def attack_runner():
    if attack == "hello-huge-length":  # in place of the runner's first frame
        send(struct.pack(">I", 0xFFFFFFF0))
        stream(stdout, 5000 * MIB)
        stdin.read()
        return
    send(frame(ANNOUNCE))  # the runner's first frame: its protocol version
    read_request()  # the session
    send(frame(b'{"ok": true}'))
    read_request()
    if attack in SMALL:
        send(SMALL[attack])
    elif attack == "huge-length":
        send(struct.pack(">I", 0xFFFFFFF0))
        stream(stdout, 5000 * MIB)  # more than 4 GiB: as long as the panel keeps reading
    elif attack == "progress-flood":  # a command's output tail, as fast as the link takes it
        tail = base64.b64encode(b"\x1b[31m spam " * 400).decode()
        progress = frame(json.dumps({"progress": tail}).encode())
        while True:
            send(progress * 100)
    elif attack == "big-frame":
        size = 400 * 1000 * 1000
        head, tail = b'{"rc": 0, "err": "", "out": "', b'"}'
        send(struct.pack(">I", size) + head)
        stream(stdout, size - len(head) - len(tail))
        send(tail)
    stdin.read()  # until the panel hangs up


def attack_plain():
    if command.startswith("python3"):  # no runner here: the panel must fall back
        stderr.write(b"sh: 1: python3: not found\n")
        sys.exit(127)
    if attack == "endless-output":
        stream(stdout, None)
    elif attack == "huge-stderr":
        stream(stderr, 400 * MIB, chunk=b"E" * (MIB - 1) + b"\n")
        stderr.write(b"the real error is at the end\n")
        sys.exit(1)
    elif attack == "hostile-text":  # the facts script's answer, with escapes and a bidi override
        hostname = "\x1b]0;owned\x07\u202eevil" + "h" * 400_000
        facts = {
            "hostname": hostname,
            "kernel": "6.1\x1b[2J\x1b[H",
            "arch": "x86_64\u2028",
            "os_id": "debian",
            "os_pretty": "Debian\u202e21 xunil\x00\r",
        }
        send("".join(f"{k}={v}\n" for k, v in facts.items()).encode())


if attack in ("endless-output", "huge-stderr", "hostile-text"):
    attack_plain()
else:
    attack_runner()
"""

# Runs the rest of its arguments and reports the peak memory of that child (and of anything
# it waited for), whatever the child does: a delta of our own getrusage would miss it.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(f'peak-rss-kb={peak}', file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


@pytest.fixture
def hostile_node(make_ssh_node, tmp_path):
    """``hostile_node(attack)``: a node whose every SSH command is the fake node's attack."""
    script = tmp_path / "fake_node.py"
    script.write_text(FAKE_NODE)

    def make(attack: str, name: str = "hostile"):
        command = shlex.join([sys.executable, str(script), attack, ANNOUNCE])
        node, _ = make_ssh_node(name, force_command=command)
        return node

    return make


def nodesync_with_peak_rss(node_name: str) -> tuple[int, str, float]:
    """Run ``manage.py nodesync`` for the node's facts; its exit code, output and peak MB."""
    command = [sys.executable, "-c", PEAK_RSS, sys.executable, str(ROOT / "manage.py")]
    with subprocess.Popen(
        [*command, "nodesync", "--node", node_name, "--action", "nodeinfo"],
        cwd=ROOT,
        env=process_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # nodesync too, not only the wrapper
            raise
    peak_kb = int(output.rpartition("peak-rss-kb=")[2].split()[0])
    return proc.returncode, output, peak_kb / 1024


NOT_A_REPLY = "hostile answered something that is not a runner reply: "
ENDLESS_TIMEOUT = 8  # seconds: nodeinfo's timeout for the endless output; 120 for the rest
ATTACKS = {
    # attack: what the admin must read
    "huge-length": NOT_A_REPLY + "a frame of 4294967280 bytes, over the 16 MiB limit for one",
    "hello-huge-length": NOT_A_REPLY + "a frame of 4294967280",
    "big-frame": NOT_A_REPLY + "a frame of 400000000 bytes",
    "garbage": NOT_A_REPLY + "not JSON: b'\\x89PNG",
    "not-an-object": NOT_A_REPLY + "not a JSON object",
    "wrong-types": NOT_A_REPLY + "'rc' is not an integer",
    "bad-base64": NOT_A_REPLY + "'out' is not base64",
    "missing-keys": NOT_A_REPLY + "'rc' is not an integer in a reply with keys ['hello']",
    "odd-progress": NOT_A_REPLY + "a progress frame not in the runner's form",
    "huge-progress": NOT_A_REPLY + "a progress frame of 1048592 bytes, over the 65536 bytes",
    "json-bomb": NOT_A_REPLY + "15728644 bytes with too many JSON values: b'[{},{},",
    "endless-output": f"timed out after {ENDLESS_TIMEOUT} s",
    "huge-stderr": "the real error is at the end (`sh` exited with 1)",  # kept: the tail
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attack", ATTACKS)
def test_it_refuses_a_hostile_node_in_bounded_memory(hostile_node, attack):
    update_syncactions()  # a transactional test starts with empty tables
    timeout = ENDLESS_TIMEOUT if attack == "endless-output" else 120
    SyncAction.objects.filter(name="nodeinfo").update(timeout=timeout)
    node = hostile_node(attack)
    register_desync([node], SyncAction.objects.filter(name="nodeinfo"))

    exit_code, output, peak_mb = nodesync_with_peak_rss(node.name)

    print(f"{attack}: peak {peak_mb:.0f} MB")
    assert exit_code == 1, output
    assert ATTACKS[attack] in output, output
    assert "Traceback" not in output
    assert peak_mb < MAX_RSS_MB, output


def strings_in(value: object) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings_in(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.django_db
def test_it_keeps_a_hostile_nodes_text_clean_and_capped(hostile_node):
    node = hostile_node("hostile-text")
    action = SyncAction.objects.get(name="nodeinfo")
    register_desync([node], [action])
    run_nodes([node.pk], action_ids=[action.pk])
    run = SyncRun.objects.filter(node=node, action=action).latest("id")
    facts = Node.objects.get(pk=node.pk).facts

    kept = [*strings_in(facts), *run.log.splitlines()]
    assert not [s for s in kept if has_control_chars(s)], kept
    assert facts["hostname"].startswith("?]0;owned??evilhhh")
    assert len(facts["hostname"]) == FACT_CHARS
    assert "characters cut" in facts["hostname"]
    assert facts["kernel"] == "6.1?[2J?[H"
    assert facts["os"]["pretty"] == "Debian?21 xunil?"
    assert max(map(len, run.log.splitlines())) <= LOG_LINE_CHARS


FLOOD_SECONDS = 4


@pytest.mark.django_db
def test_it_drops_a_flood_of_progress_frames_in_bounded_cpu(hostile_node):
    """An endless flood of "output so far" frames costs the panel little CPU: at most two a
    second are looked at, the rest dropped and counted, and the run times out as usual."""
    node = hostile_node("progress-flood")
    action = SyncAction.objects.get(name="nodeinfo")
    SyncAction.objects.filter(pk=action.pk).update(timeout=FLOOD_SECONDS)
    action.refresh_from_db()
    register_desync([node], [action])

    started, cpu = time.monotonic(), time.process_time()
    run_nodes([node.pk], action_ids=[action.pk])
    cpu, wall = time.process_time() - cpu, time.monotonic() - started

    run = SyncRun.objects.filter(node=node, action=action).latest("id")
    print(f"progress flood: {cpu:.2f} s of CPU in {wall:.2f} s\n{run.log}")
    assert run.outcome == Outcome.TIMEOUT, run.log
    dropped = re.search(r"dropped (\d+) progress frames", run.log)
    assert dropped and int(dropped[1]) > 0, run.log
    assert cpu < 0.25 * wall, f"{cpu:.2f} s of CPU in {wall:.2f} s"


# --- the same paths with honest nodes ------------------------------------------------------


@pytest.fixture(params=["runner", "plain-ssh", "local"])
def any_node(request, make_ssh_node, make_node, monkeypatch):
    """An honest node reached each way: the runner, plain SSH (no python3), the local one."""
    if request.param == "local":
        return make_node("local")
    if request.param == "plain-ssh":
        without_runner(monkeypatch)
    return make_ssh_node()[0]


@pytest.mark.django_db
def test_it_keeps_head_and_tail_of_a_big_output(any_node):
    lines = 200_000  # 1.3 MB
    result = asyncio.run(with_transport(any_node, lambda t: t.run(["seq", "1", str(lines)])))
    assert result.stdout.startswith("1\n2\n3\n")
    assert result.stdout.endswith(f"\n{lines - 1}\n{lines}\n")
    assert "bytes cut ...]" in result.stdout
    assert len(result.stdout) <= OUTPUT_LIMIT


@pytest.mark.django_db
def test_it_keeps_the_end_of_a_huge_error(any_node):
    script = "seq 1 300000 >&2; echo the real cause >&2; exit 3"
    with pytest.raises(CommandFailed) as e:
        asyncio.run(with_transport(any_node, lambda t: t.run(["sh", "-c", script])))
    message = str(e.value)
    assert message.startswith("command `sh -c ")
    assert "exited with 3: 1\n2\n3\n" in message
    assert message.endswith("300000\nthe real cause")
    assert "characters cut ...]" in message
    assert len(message) < 1300
    assert "bytes cut ...]" in e.value.stderr


@pytest.mark.django_db
def test_it_leaves_a_normal_command_alone(any_node):
    text = b"0123456789abcdef\n" * 20_000  # 340 kB: under the limit, so kept whole

    async def work(t):
        return (
            await t.run(["printf", "%s", "hello"]),
            await t.run(["cat"], input=text),
            await t.run(["wc", "-c"], input=text * 10),
        )

    small, echoed, counted = asyncio.run(with_transport(any_node, work))
    assert (small.stdout, small.stderr, small.exit_status) == ("hello", "", 0)
    assert echoed.stdout == text.decode()
    assert counted.stdout.strip() == str(len(text) * 10)


@pytest.mark.django_db
def test_it_still_times_out_a_command_that_prints_for_ever(any_node):
    endless = ["sh", "-c", "while :; do echo spam; done"]
    with pytest.raises(TimeoutError):
        asyncio.run(with_transport(any_node, lambda t: t.run(endless, timeout=2)))


@pytest.mark.django_db
def test_it_reads_a_file_up_to_the_limit_and_refuses_a_larger_one(any_node, tmp_path):
    fits, too_big = tmp_path / "fits", tmp_path / "too-big"
    fits.write_bytes(b"x" * FILE_LIMIT)
    too_big.write_bytes(b"x" * (FILE_LIMIT + 1))
    assert asyncio.run(with_transport(any_node, lambda t: t.read_file(str(fits)))) == (
        b"x" * FILE_LIMIT
    )
    with pytest.raises(TransportError, match="larger than 8 MiB, the most the panel reads"):
        asyncio.run(with_transport(any_node, lambda t: t.read_file(str(too_big))))


@pytest.mark.django_db
def test_it_stops_reading_an_endless_file_from_a_hostile_node(hostile_node):
    node = hostile_node("endless-output")
    with pytest.raises(TransportError, match="larger than 8 MiB, the most the panel reads"):
        asyncio.run(with_transport(node, lambda t: t.read_file("/etc/hostname")))


@pytest.mark.django_db
def test_it_refuses_a_file_over_the_limit_from_a_hostile_runner(hostile_node):
    node = hostile_node("big-file")
    with pytest.raises(TransportError, match="larger than 8 MiB, the most the panel reads"):
        asyncio.run(with_transport(node, lambda t: t.read_file("/etc/hostname")))

"""Remote work ends with its run, and one synchronizer per node holds on the node itself.

Real sshd nodes; the work is a shell script on the node (this machine) whose processes are
looked for afterwards with ``pgrep``: after a timeout, a cancel or a ``--force``, none of the
hung command's processes may be left. Two ``nodesync --force`` started at once must never run
the work twice at the same time, as the node itself sees it (``flock -n`` on a file there).
"""

from __future__ import annotations

import importlib
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from sync.engine import cancel_node, register_desync, run_nodes
from sync.models import Outcome, SyncAction, SyncRun
from sync.synchronizers import REGISTRY, unregister_type, update_syncactions
from tests.conftest import ROOT, process_env

# The type's name; importing its module registers the type, so only the fixture imports it.
NODE_WORK = "node-work"

pytestmark = pytest.mark.django_db(transaction=True)
ENV = {"PANEL_SYNCHRONIZER_MODULES": "tests.integration.node_work_types"}


@pytest.fixture
def node_work(transactional_db):
    import tests.integration.node_work_types as module

    if NODE_WORK not in REGISTRY:
        importlib.reload(module)
    update_syncactions()
    yield SyncAction.objects.get(name=NODE_WORK)
    unregister_type(NODE_WORK)


def marker() -> str:
    """A sleep length no other process on this machine uses: how its processes are found."""
    return f"3001.{random.randrange(10**6):06d}"


def processes(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return found.stdout.split()


def assert_gone(pattern: str, within: float = 6) -> None:
    deadline = time.monotonic() + within
    while processes(pattern) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes(pattern) == [], f"left on the node: {pattern}"


def hanging_work(tmp_path: Path, sleep: str, once: bool = False) -> list[str]:
    """sh that starts a child and a grandchild sleeping, and waits (hangs); with ``once``,
    only the first time (a flag file), then it succeeds at once."""
    flag = tmp_path / "hang-once"
    if once:
        flag.touch()
    script = tmp_path / "work.sh"
    script.write_text(
        f'if [ "{int(once)}" = 0 ] || [ -e {flag} ]; then rm -f {flag}; '
        f"echo waiting for the lock; sh -c 'sleep {sleep}' & sleep {sleep}; fi\n"
    )
    return ["sh", str(script)]


def in_thread(fn) -> threading.Thread:
    def target() -> None:
        try:
            fn()
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def wait_until_running(pattern: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not processes(pattern):
        assert time.monotonic() < deadline, f"{pattern} never started"
        time.sleep(0.1)


def cancel_while_it_sleeps(node, node_work, sleep: str) -> None:
    """Run the work, cancel it once ``sleep MARKER`` runs on the node; nothing may be left."""
    SyncAction.objects.filter(pk=node_work.pk).update(timeout=60)
    worker = in_thread(lambda: run_nodes([node.pk]))
    wait_until_running(f"sleep {sleep}")
    assert cancel_node(node, "alice") == ["Node work"]
    worker.join(20)

    assert SyncRun.objects.get().outcome == Outcome.CANCELLED
    assert_gone(f"sleep {sleep}")


def test_it_ends_the_hung_command_on_the_node_when_the_run_times_out(
    make_ssh_node, node_work, tmp_path
):
    node, _ = make_ssh_node("w1")
    sleep = marker()
    node.facts = {"work": hanging_work(tmp_path, sleep)}
    node.save(update_fields=["facts"])
    register_desync([node], [node_work])

    run_nodes([node.pk])

    run = SyncRun.objects.get()
    assert run.outcome == Outcome.TIMEOUT
    node.refresh_from_db()  # the timeout in words, with the command it ended
    assert f"timed out after 4 s while running `sh {tmp_path}/work.sh`" in node.last_error
    # What the hung command printed reached the panel while it ran, and stays in the log.
    assert "last output of `sh " in run.log and "waiting for the lock" in run.log
    assert_gone(f"sleep {sleep}")


def test_it_ends_the_hung_command_on_the_node_when_the_run_is_cancelled(
    make_ssh_node, node_work, tmp_path, settings
):
    settings.SYNC = {**settings.SYNC, "cancel_check_seconds": 0.5}
    node, _ = make_ssh_node("w2")
    sleep = marker()
    node.facts = {"work": hanging_work(tmp_path, sleep)}
    node.save(update_fields=["facts"])
    register_desync([node], [node_work])
    cancel_while_it_sleeps(node, node_work, sleep)


@pytest.fixture
def hanging_login(make_ssh_node, node_work):
    """(node, sleep): a node whose every SSH session runs ``sleep MARKER`` (a ForceCommand
    that hangs): the runner never starts there. What a test leaves is ended by its pids."""
    sleep = marker()
    node, _ = make_ssh_node("hangs", force_command=f"sleep {sleep}")
    node.facts = {"work": ["true"]}
    node.save(update_fields=["facts"])
    register_desync([node], [node_work])
    yield node, sleep
    for pid in processes(f"sleep {sleep}"):
        subprocess.run(["kill", "-KILL", pid], check=False)


def test_it_ends_a_login_that_never_starts_the_runner_when_the_run_times_out(hanging_login):
    node, sleep = hanging_login

    run_nodes([node.pk])

    assert SyncRun.objects.get().outcome == Outcome.TIMEOUT
    assert_gone(f"sleep {sleep}")


def test_it_ends_a_login_that_never_starts_the_runner_when_the_run_is_cancelled(
    hanging_login, node_work, settings
):
    settings.SYNC = {**settings.SYNC, "cancel_check_seconds": 0.5}
    node, sleep = hanging_login
    cancel_while_it_sleeps(node, node_work, sleep)


def nodesync(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "nodesync", *args],
        cwd=ROOT,
        env=process_env(**ENV),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_it_ends_the_hung_command_on_the_node_when_forced(make_ssh_node, node_work, tmp_path):
    node, _ = make_ssh_node("w3")
    sleep = marker()
    node.facts = {"work": hanging_work(tmp_path, sleep, once=True)}
    node.save(update_fields=["facts"])
    register_desync([node], [node_work])
    SyncAction.objects.filter(pk=node_work.pk).update(timeout=60)

    hung = in_thread(lambda: run_nodes([node.pk]))
    wait_until_running(f"sleep {sleep}")
    forced = nodesync("--node", node.name, "--force")
    out, err = forced.communicate(timeout=60)
    hung.join(30)

    assert forced.returncode == 0, out + err
    assert "1 run(s) completed" in out
    assert_gone(f"sleep {sleep}")
    outcomes = sorted(SyncRun.objects.values_list("outcome", flat=True))
    assert outcomes == [Outcome.FORCED, Outcome.SUCCESS]


def test_two_forced_nodesyncs_never_run_the_work_twice_at_once_on_the_node(
    make_ssh_node, node_work, tmp_path
):
    node, _ = make_ssh_node("w4")
    lock, overlaps = tmp_path / "work.lock", tmp_path / "overlaps"
    script = tmp_path / "work.sh"
    # Holds the node-side lock for 2 s; a second copy running meanwhile is an overlap.
    script.write_text(f"flock -n {lock} sleep 2 || echo overlap >> {overlaps}\n")
    node.facts = {"work": ["sh", str(script)]}
    node.save(update_fields=["facts"])
    register_desync([node], [node_work])

    first, second = nodesync("--node", node.name, "--force"), None
    time.sleep(0.3)
    second = nodesync("--node", node.name, "--force")
    for proc in (first, second):
        proc.communicate(timeout=90)

    assert not overlaps.exists(), overlaps.read_text()
    assert SyncRun.objects.filter(outcome=Outcome.SUCCESS).exists()

"""A worker keeps each SSH node's connection and runner open between sessions (warm).

Real sshd nodes; the sessions run as a django-q worker runs them (``run_task_batch``, the
task's own entry point) in this process, and the sshd's own log counts the logins ("Accepted
publickey"). One test runs a real cluster: the connection outlives the worker's tasks, and a
node put in maintenance by another process loses it there.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from nodes.transports import node_session, warm
from sync.actions import edit_node, set_maintenance
from sync.actor import Actor
from sync.engine import cancel_node, register_desync, run_task_batch
from sync.models import Outcome, SyncAction, SyncRun
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.django_db

ADMIN = Actor.command("test")


def logins(server) -> int:
    """How many times the panel logged in to this sshd (its log since it was made)."""
    log = Path(server.dir) / "sshd.log"
    return log.read_text().count("Accepted publickey") if log.exists() else 0


def disconnects(server) -> int:
    log = Path(server.dir) / "sshd.log"
    return log.read_text().count("Disconnected from user") if log.exists() else 0


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (sshd's connections), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def break_connections(server) -> None:
    """Kill the sshd processes serving the open connections (what a node's reboot does to
    them), not the listener."""
    for pid in children(server.proc.pid):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not children(server.proc.pid), timeout=5)


@pytest.fixture
def remote(make_type):
    """A type whose run asks the node who runs it: the runner's pid (the command's parent)
    and the node's session lock as the command sees it."""
    seen: list[dict] = []

    async def ask_the_node(ctx):
        lock = node_session(ctx.node).lock_path
        # Read under the lock: the runner writes the command into it once it started it.
        out = await ctx.transport.run(["sh", "-c", f'echo "$PPID"; flock -s "{lock}" cat "{lock}"'])
        runner, state = out.stdout.split("\n", 1)
        seen.append({"runner": int(runner), "lock": json.loads(state)})
        ctx.log("asked")

    action = make_type("ask", priority=5, run=ask_the_node, needs=())
    return action, seen


def warm_session(node, action) -> SyncRun:
    """Register ``action`` on ``node`` and run it as a worker's task does."""
    register_desync([node], [action])
    run_task_batch([node.pk])
    return SyncRun.objects.filter(node=node).order_by("-pk").first()


def lock_state(node) -> dict:
    return json.loads(Path(node_session(node).lock_path).read_text())


def test_a_workers_second_session_reuses_the_connection_and_the_runner(make_ssh_node, remote):
    node, server = make_ssh_node("w1")
    action, seen = remote

    assert warm_session(node, action).outcome == Outcome.SUCCESS
    assert warm.idle_count() == 1
    between = lock_state(node)
    assert warm_session(node, action).outcome == Outcome.SUCCESS

    assert logins(server) == 1  # one handshake for both sessions
    first, second = seen
    assert first["runner"] == second["runner"]  # the runner was not sent again
    # Each session takes the node on its own, and lets it go: between them no one holds it.
    assert first["lock"]["owner"] and second["lock"]["owner"]
    assert first["lock"]["owner"] != second["lock"]["owner"]
    assert between["owner"] is None
    assert lock_state(node)["owner"] is None


def test_a_node_the_admin_changes_gets_a_new_connection(make_ssh_node, sshd, remote):
    node, server = make_ssh_node("w2")
    action, _ = remote
    warm_session(node, action)

    moved_to = sshd()  # the node moves to another address (and so another host key)
    node.port, node.host_key = moved_to.port, moved_to.host_key
    edit_node(ADMIN, node, ["port", "host_key"])
    assert warm_session(node, action).outcome == Outcome.SUCCESS
    assert (logins(server), logins(moved_to)) == (1, 1)
    wait_for(lambda: disconnects(server) == 1, timeout=5)  # the old one was closed

    # Maintenance and deletion, done by another process: the worker's next task drops it.
    set_maintenance(ADMIN, [node], True)
    assert warm.idle_count() == 1
    run_task_batch([])
    assert warm.idle_count() == 0
    wait_for(lambda: disconnects(moved_to) == 1, timeout=5)
    set_maintenance(ADMIN, [node], False)
    warm_session(node, action)
    assert (logins(moved_to), warm.idle_count()) == (2, 1)
    node.delete()
    run_task_batch([])
    assert warm.idle_count() == 0


def test_a_task_takes_at_once_the_due_nodes_its_worker_keeps_warm(make_ssh_node, remote):
    """A task goes to whichever worker is free: the node it was given waits a moment if
    another worker may keep it warm, and the nodes this worker keeps warm are taken at once,
    so a re-sync does not log in again wherever its tasks land."""
    kept, _ = make_ssh_node("w7")
    given, given_server = make_ssh_node("w8")
    action, _ = remote
    warm_session(kept, action)
    warm_session(given, action)
    warm.close_node(given.pk)  # as if another worker kept it

    register_desync([kept, given], [action])
    started = time.monotonic()
    run_task_batch([given.pk])  # the task of the other worker's node came here

    runs = {r.node_id: r for r in SyncRun.objects.filter(action=action).order_by("pk")}
    assert runs[kept.pk].outcome == runs[given.pk].outcome == Outcome.SUCCESS
    assert runs[kept.pk].started_at < runs[given.pk].started_at  # taken at once, not waited
    assert time.monotonic() - started >= 2  # the given one waited for a worker keeping it
    assert logins(given_server) == 2  # no one took it: it connected here after the wait


def test_a_broken_connection_is_made_again_once_with_its_host_key_checked(make_ssh_node, remote):
    node, server = make_ssh_node("w3")
    action, seen = remote
    warm_session(node, action)

    break_connections(server)
    assert warm_session(node, action).outcome == Outcome.SUCCESS  # transparently replaced
    assert (logins(server), len(seen)) == (2, 2)

    break_connections(server)  # the node was reinstalled: new host key, connections gone
    server.restart_with_new_host_key()
    assert warm_session(node, action).outcome == Outcome.FAILED
    node.refresh_from_db()
    assert "host key changed" in node.last_error
    assert node.has_condition("host-key-changed")
    assert (logins(server), len(seen)) == (2, 2)  # no login with the new key, nothing ran
    assert warm.idle_count() == 0


def test_the_probe_opens_a_fresh_connection_and_finds_a_dead_sshd(make_ssh_node, remote, settings):
    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 0}
    node, server = make_ssh_node("w5")
    action, _ = remote
    probe = SyncAction.objects.get(name="probe")
    warm_session(node, action)

    os.kill(server.proc.pid, signal.SIGTERM)  # sshd's listener dies, its connection stays
    server.proc.wait(5)
    settings.PANEL_PROBE_FRESH_SECONDS = 3600
    assert warm_session(node, probe).outcome == Outcome.SUCCESS  # the warm one still answers
    assert warm_session(node, action).outcome == Outcome.SUCCESS

    settings.PANEL_PROBE_FRESH_SECONDS = 0  # not fresh enough for the probe
    assert warm_session(node, probe).outcome == Outcome.FAILED
    node.refresh_from_db()
    assert node.has_condition("unreachable")
    assert "refused the connection" in node.last_error
    assert logins(server) == 1


def _hang(tmp_path: Path) -> tuple[str, list[str]]:
    marker = f"3002.{time.monotonic_ns() % 10**6:06d}"
    script = tmp_path / "hang.sh"
    script.write_text(f"sh -c 'sleep {marker}' & sleep {marker}\n")
    return marker, ["sh", str(script)]


def _running(pattern: str) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if pattern.encode() in f.read().replace(b"\0", b" "):
                        return True
            except OSError:
                continue
    return False


@pytest.mark.django_db(transaction=True)
def test_a_cancel_or_a_timeout_ends_the_command_and_the_connection_stays_warm(
    make_ssh_node, make_type, tmp_path, settings
):
    settings.SYNC = {**settings.SYNC, "cancel_check_seconds": 0.5}
    node, server = make_ssh_node("w6")
    marker, argv = _hang(tmp_path)

    async def hang(ctx):
        await ctx.transport.run(argv)

    async def quick(ctx):
        await ctx.transport.run(["true"])

    hanging = make_type("hang", priority=5, run=hang, needs=(), timeout=60)
    fine = make_type("fine", priority=6, run=quick, needs=())
    warm_session(node, fine)

    register_desync([node], [hanging])
    worker = threading.Thread(target=lambda: (run_task_batch([node.pk]), connection.close()))
    worker.start()
    wait_for(lambda: _running(f"sleep {marker}"), timeout=10)
    cancelled_at = time.monotonic()
    assert cancel_node(node, "alice") == ["Hang"]
    wait_for(lambda: not _running(f"sleep {marker}"), timeout=10, interval=0.05)
    assert time.monotonic() - cancelled_at < 3.5
    worker.join(20)
    assert SyncRun.objects.get(action=hanging).outcome == Outcome.CANCELLED
    assert (logins(server), warm.idle_count()) == (1, 1)  # kept; its runner starts again

    SyncAction.objects.filter(pk=hanging.pk).update(timeout=1)
    register_desync([node], [hanging])
    started = time.monotonic()
    run_task_batch([node.pk])
    wait_for(lambda: not _running(f"sleep {marker}"), timeout=10, interval=0.05)
    assert time.monotonic() - started < 1 + 3.5
    assert SyncRun.objects.filter(action=hanging).order_by("-pk")[0].outcome == Outcome.TIMEOUT

    assert warm_session(node, fine).outcome == Outcome.SUCCESS
    assert logins(server) == 2  # a timed-out run's connection may be stuck: not kept


@pytest.mark.cluster
def test_a_worker_process_keeps_the_connection_across_its_tasks(
    make_ssh_node, start_qcluster, transactional_db
):
    first, first_server = make_ssh_node("c1")
    second, _ = make_ssh_node("c2")
    probe = SyncAction.objects.get(name="probe")
    start_qcluster(PANEL_Q_WORKERS="1")

    def probed(node, times: int):
        def done():
            return SyncRun.objects.filter(node=node, outcome=Outcome.SUCCESS).count() >= times

        done.__doc__ = f"{times} successful run(s) on {node.name}"
        return done

    register_desync([first], [probe])
    wait_for(probed(first, 1), timeout=60)
    register_desync([first], [probe])  # a task of its own, later: same worker, same login
    wait_for(probed(first, 2), timeout=30)
    assert logins(first_server) == 1

    # Maintenance turned on here (another process): the worker's next task closes it.
    set_maintenance(ADMIN, [first], True)
    register_desync([second], [probe])
    wait_for(probed(second, 1), timeout=30)
    wait_for(lambda: disconnects(first_server) == 1, timeout=10)


@pytest.mark.cluster
def test_a_worker_drops_connections_to_nodes_in_maintenance_or_deleted_without_a_task(
    make_ssh_node, start_qcluster, transactional_db
):
    """The worker's own watch closes them within seconds, though no task comes to it."""
    from django_q.models import Task

    node, server = make_ssh_node("c5")
    gone, gone_server = make_ssh_node("c6")
    probe = SyncAction.objects.get(name="probe")
    start_qcluster(PANEL_Q_WORKERS="1", PANEL_SSH_STALE_CHECK_SECONDS="1")
    register_desync([node, gone], [probe])

    def probed() -> bool:
        return SyncRun.objects.filter(outcome=Outcome.SUCCESS).count() >= 2

    wait_for(probed, timeout=60)
    wait_for(lambda: Task.objects.count() >= 1, timeout=10)
    tasks = Task.objects.count()
    assert (disconnects(server), disconnects(gone_server)) == (0, 0)  # kept warm

    set_maintenance(ADMIN, [node], True)
    gone.delete()
    wait_for(lambda: disconnects(server) == 1, timeout=8)
    wait_for(lambda: disconnects(gone_server) == 1, timeout=8)
    assert Task.objects.count() == tasks  # no task ran meanwhile: the watch closed them

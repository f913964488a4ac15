"""Alerts end to end: ``manage.py alerts`` as a process of its own, real receivers, apprise.

A real sshd is stopped by hand and started again while the test runs what the cluster's
periodic task runs (the health pass, then the due nodes: tests/integration/test_probe.py);
a real django-q cluster is frozen with SIGSTOP. The receivers are an HTTP server taking
apprise's json:// posts and an SMTP server (aiosmtpd). Periods and thresholds are seconds
here (the defaults are minutes), so each test takes seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress

import pytest

from nodes.models import Node
from sync.engine import check_health, due_node_ids, run_nodes
from sync.heartbeat import cluster_state
from sync.models import AlertDelivery
from tests.conftest import ROOT, process_env
from tests.integration.conftest import start_qcluster, wait_for  # noqa: F401 - a fixture
from tests.receivers import HttpReceiver, SmtpReceiver

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cretPassw0rd"
QUICK = {
    "PANEL_ALERT_DIGEST_SECONDS": "1",
    "PANEL_ALERT_GATHER_SECONDS": "0",
    "PANEL_ALERT_RETRY_SECONDS": "1",
}


@pytest.fixture
def alerts(tmp_path):
    """Start ``manage.py alerts`` with ``PANEL_ALERT_URLS`` and settings; stopped (SIGTERM,
    as systemd and runpanel stop it) at the end, its output in ``proc.output``."""
    started: list[tuple[subprocess.Popen, object]] = []

    def start(urls: list[str], **env: str) -> subprocess.Popen:
        log = (tmp_path / f"alerts{len(started)}.log").open("w+")
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "alerts", "--every", "0.3"],
            cwd=ROOT,
            env=process_env(PANEL_ALERT_URLS=" ".join(urls), **QUICK, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append((proc, log))
        return proc

    yield start
    for proc, log in started:
        proc.terminate()
        try:
            assert proc.wait(timeout=20) == 0  # a clean stop on SIGTERM
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            log.seek(0)
            output = log.read()
            print(f"--- alerts ---\n{output[-4000:]}")
            assert SECRET not in output


@pytest.fixture
def receivers():
    http, smtp = HttpReceiver().start(), SmtpReceiver().start()
    yield http, smtp
    http.stop()
    smtp.stop()


def health_pass() -> None:
    """What the cluster does each period: the health pass, then the nodes that are due."""
    check_health()
    due = due_node_ids()
    if due:
        run_nodes(due)


def test_a_stopped_node_is_one_digest_by_webhook_and_mail_and_one_more_when_back(
    make_ssh_node, settings, alerts, receivers
):
    settings.SYNC = {
        **settings.SYNC,
        "probe_seconds": 1,
        "unreachable_grace_seconds": 1,
        "backoff_base_seconds": 0.2,
        "backoff_cap_seconds": 0.5,
    }
    http, smtp = receivers
    late = HttpReceiver()  # down until the first digest has failed to reach it
    node, server = make_ssh_node("a1")
    health_pass()
    alerts([http.url(), smtp.url(), late.url(f"panel:{SECRET}")])

    server.stop()

    def digest_about_a1():
        """the digest that a1 is unreachable, at the webhook and by mail"""
        health_pass()
        return http.messages and smtp.mails

    wait_for(digest_about_a1, timeout=30, interval=0.3)
    (posted,) = http.messages
    assert posted["title"] == "Panel alert: a1 unreachable"
    assert "a1 is unreachable: " in posted["message"]
    assert "refused the connection" in posted["message"]
    wait_for(lambda: len(smtp.mails) == 1, timeout=10)
    (mail,) = smtp.texts()
    assert mail.startswith("Panel alert: a1 unreachable\n") and "a1 is unreachable" in mail

    # The receiver that is down (tried after the others): its delivery waits, with the
    # reason, then goes when it is up.
    def tried():
        """the first attempt at the receiver that is down"""
        return AlertDelivery.objects.filter(label__contains=":****@", attempts__gte=1).first()

    waiting = wait_for(tried, timeout=10)
    assert waiting.state == "pending" and "Connection error" in waiting.last_error
    late.start()
    try:
        wait_for(lambda: late.messages, timeout=10)
        assert late.messages[0]["title"] == "Panel alert: a1 unreachable"

        server.start()

        def back():
            """the digest that a1 is back"""
            health_pass()
            return len(http.messages) == 2 and len(smtp.mails) == 2 and len(late.messages) == 2

        wait_for(back, timeout=30, interval=0.3)
    finally:
        late.stop()
    assert http.messages[1]["title"] == "Panel alert: a1 no longer unreachable"
    assert smtp.texts()[1].startswith("Panel alert: a1 no longer unreachable\n")
    node.refresh_from_db()
    assert node.conditions == []
    assert len(http.messages) == 2  # one digest each way, never one per run


@pytest.mark.cluster
def test_a_frozen_cluster_is_a_cluster_late_digest(start_qcluster, alerts, receivers):  # noqa: F811
    http, _ = receivers
    cluster = start_qcluster(PANEL_CLUSTER_LATE_SECONDS="3")
    wait_for(lambda: cluster_state().seen, timeout=60)
    alerts([http.url()], PANEL_CLUSTER_LATE_SECONDS="3")

    os.killpg(cluster.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: http.messages, timeout=15)
    finally:
        os.killpg(cluster.proc.pid, signal.SIGCONT)
    posted = http.messages[0]  # the next ("running again") may follow at once
    assert posted["title"] == "Panel alert: cluster late"
    assert "The cluster is late: no cluster heartbeat since" in posted["message"]

    wait_for(lambda: len(http.messages) >= 2, timeout=15)
    assert [m["title"] for m in http.messages] == [
        "Panel alert: cluster late",
        "Panel alert: cluster running again",
    ]
    assert not Node.objects.exists()  # about the cluster, not a node

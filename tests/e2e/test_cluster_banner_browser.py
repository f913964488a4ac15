"""A real django-q cluster stops, and an open page says so within the threshold plus 5 s.

The cluster is ``manage.py qcluster`` (tests/integration/conftest.py's ``start_qcluster``),
frozen with SIGSTOP (as a hung machine or a debugger would), resumed, then killed. The
threshold is 6 s here (the default is 90), so the test takes seconds, not minutes.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress

import pytest
from django.test import Client
from playwright.sync_api import expect

from sync.heartbeat import cluster_state
from tests.e2e.conftest import login
from tests.integration.conftest import start_qcluster, wait_for  # noqa: F401 - a fixture

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

LATE = 6
# The acceptance bound: the banner within the threshold plus 5 s of the cluster stopping.
BANNER_WITHIN = LATE + 5
BANNER = "The synchronization cluster has not run since"
CLAIM = "Statuses refresh by themselves while the cluster works."


def _healthz() -> tuple[int, dict]:
    answer = Client().get("/healthz")
    return answer.status_code, answer.json()


def _banner_comes(page) -> float:
    """Wait for the banner on the open page (no reload); the seconds it took."""
    started = time.monotonic()
    expect(page.get_by_role("alert")).to_contain_text(BANNER, timeout=BANNER_WITHIN * 1000)
    return time.monotonic() - started


def test_a_stopped_cluster_brings_the_banner_and_a_running_one_takes_it_away(
    page, operator, start_qcluster, settings  # noqa: F811 - the fixture imported above
):
    settings.PANEL_CLUSTER_LATE_SECONDS = LATE  # the live server's side
    cluster = start_qcluster(PANEL_CLUSTER_LATE_SECONDS=str(LATE))

    def a_cluster_is_seen():
        """the cluster's first heartbeat"""
        return cluster_state().seen

    wait_for(a_cluster_is_seen, timeout=60)
    assert _healthz() == (200, {"database": "ok", "cluster": "ok"})
    login(page, operator)
    claim = page.locator("#refresh-claim")
    expect(claim).to_have_text(CLAIM)
    expect(page.get_by_role("alert")).to_have_count(0)

    os.killpg(cluster.proc.pid, signal.SIGSTOP)
    try:
        took = _banner_comes(page)
        assert took <= BANNER_WITHIN
        expect(claim).not_to_contain_text("refresh by themselves")
        assert _healthz() == (503, {"database": "ok", "cluster": "late"})
        # every page says it, not only the list
        page.goto("/audit/")
        expect(page.get_by_role("alert")).to_contain_text(BANNER)
        page.goto("/nodes/")
    finally:
        with suppress(ProcessLookupError):
            os.killpg(cluster.proc.pid, signal.SIGCONT)

    # It runs again: a beat at once, and the banner's next poll takes it away.
    expect(page.get_by_role("alert")).to_have_count(0, timeout=10_000)
    expect(claim).to_have_text(CLAIM)
    assert _healthz() == (200, {"database": "ok", "cluster": "ok"})

    cluster.kill()  # the machine dies
    assert _banner_comes(page) <= BANNER_WITHIN
    assert _healthz()[0] == 503

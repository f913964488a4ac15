"""The cluster's heartbeat: written on the database's clock, read by the pages and /healthz.

The real cluster and a real browser are tests/e2e/test_cluster_banner_browser.py; here the
rule (one row per cluster and machine, seen while any is younger than the threshold), the
banner and the claim on the pages, and the beating loop.
"""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.db import DatabaseError
from django.test import Client

from sync import heartbeat
from sync.clock import db_now_plus
from sync.heartbeat import beat, cluster_state, keep_beating
from sync.models import ClusterHeartbeat

LATE = settings.PANEL_CLUSTER_LATE_SECONDS
BANNER = "The synchronization cluster has not run since"
CLAIM = "Statuses refresh by themselves while the cluster works."


def _age(seconds: float, **row) -> None:
    ClusterHeartbeat.objects.filter(**row).update(seen_at=db_now_plus(-seconds))


@pytest.mark.django_db
def test_each_cluster_has_its_row_and_any_fresh_one_is_seen():
    beat("panel", "web1")
    beat("panel", "web2")
    beat("panel", "web2")  # the same cluster again: the same row
    assert ClusterHeartbeat.objects.count() == 2

    _age(LATE + 1, host="web1")
    assert cluster_state().seen

    _age(LATE + 30, host="web2")
    state = cluster_state()
    assert not state.seen
    assert state.last_seen == ClusterHeartbeat.objects.get(host="web1").seen_at


@pytest.mark.django_db
def test_a_long_silent_machine_is_forgotten_by_the_next_beat():
    beat("panel", "gone")
    _age(heartbeat.FORGET_AFTER.total_seconds() + 60, host="gone")
    beat("panel", "here")
    assert list(ClusterHeartbeat.objects.values_list("host", flat=True)) == ["here"]


@pytest.mark.django_db
def test_no_heartbeat_at_all_is_not_seen():
    assert cluster_state() == heartbeat.ClusterState(seen=False, last_seen=None)


@pytest.mark.django_db
def test_the_list_says_the_cluster_is_not_running_and_stops_claiming_to_refresh(operator):
    beat()
    _age(LATE + 1)
    at = ClusterHeartbeat.objects.get().seen_at

    page = operator.get("/nodes/").content.decode()

    assert f'{BANNER} <time datetime="{at.isoformat()}"' in page
    assert f"{at:%H:%M}</time>: statuses below may be out of date." in page
    assert CLAIM not in page
    assert "The cluster is not running" in page


@pytest.mark.django_db
def test_a_page_says_the_cluster_never_ran(operator):
    page = operator.get("/audit/").content.decode()
    assert "The synchronization cluster has not run yet: statuses below may be out of date." in page


@pytest.mark.django_db
def test_while_the_cluster_beats_no_banner_and_the_claim_stands(operator):
    beat()
    page = operator.get("/nodes/").content.decode()
    assert BANNER not in page and "has not run yet" not in page
    assert CLAIM in page


@pytest.mark.django_db
def test_the_login_page_tells_a_stranger_nothing_of_the_cluster():
    page = Client().get("/accounts/login/").content.decode()
    assert "cluster-state" not in page and "has not run" not in page


@pytest.mark.django_db
def test_the_banner_poll_answers_only_a_change(operator):
    beat()
    assert operator.get("/cluster/banner/?since=seen&claim=1").status_code == 204

    _age(LATE + 1)
    answer = operator.get("/cluster/banner/?since=seen&claim=1")
    body = answer.content.decode()
    assert answer.status_code == 200
    assert BANNER in body
    # the list's claim goes out of band, and the new banner asks with its own state
    assert 'id="refresh-claim" class="text-body-secondary small mb-0" hx-swap-oob="true"' in body
    key = cluster_state().key
    assert operator.get(f"/cluster/banner/?since={key}&claim=1").status_code == 204

    beat()  # the cluster runs again: the banner goes
    body = operator.get(f"/cluster/banner/?since={key}").content.decode()
    assert BANNER not in body and "refresh-claim" not in body


def test_a_third_of_the_threshold_between_beats():
    assert heartbeat.beat_every() == LATE / 3


@pytest.mark.django_db(transaction=True)
def test_keep_beating_beats_while_alive_and_survives_a_silent_database(monkeypatch, caplog):
    """A database error is one warning, and the loop goes on to the next beat."""
    calls = []
    real_beat = heartbeat.beat

    def flaky_beat():
        calls.append(1)
        if len(calls) <= 2:
            raise DatabaseError("server has gone away")
        real_beat()

    monkeypatch.setattr(heartbeat, "beat", flaky_beat)
    with caplog.at_level(logging.WARNING, logger="sync.heartbeat"):
        keep_beating(lambda: len(calls) < 4, every=0.01)

    assert len(calls) == 4
    assert cluster_state().seen
    warnings = [r for r in caplog.records if "could not write its heartbeat" in r.getMessage()]
    assert len(warnings) == 1

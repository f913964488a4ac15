"""The health endpoint, and settings from the environment: checked, one line when wrong."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule

from sync.schedule import SWEEP_SCHEDULE_NAME, ensure_sweep_schedule
from tests.conftest import ROOT, process_env, run_manage


def _sweep_due(at) -> None:
    ensure_sweep_schedule()
    Schedule.objects.filter(name=SWEEP_SCHEDULE_NAME).update(next_run=at)


@pytest.mark.django_db
def test_healthz_is_ok_without_login_while_a_cluster_runs_the_schedule():
    _sweep_due(timezone.now() + timedelta(seconds=40))
    answer = Client().get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"database": "ok", "cluster": "ok"}
    assert "no-cache" in answer["Cache-Control"]


@pytest.mark.django_db
def test_healthz_is_503_when_no_cluster_ran_the_schedule_lately():
    _sweep_due(timezone.now() - timedelta(minutes=10))
    answer = Client().get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"database": "ok", "cluster": "late"}  # and nothing more


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return run_manage(*args, env=process_env(**env), timeout=60)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PANEL_LEASE_SECONDS", "abc", "PANEL_LEASE_SECONDS must be a whole number, not 'abc'."),
        ("PANEL_Q_WORKERS", "0", "PANEL_Q_WORKERS must be from 1 to 64, not 0."),
        ("DJANGO_DEBUG", "maybe", "DJANGO_DEBUG must be 1 or 0"),
        ("DATABASE_URL", "nosuch://x", "DATABASE_URL is not a database URL Django knows"),
        ("PANEL_WEB_WORKERS", "-1", "PANEL_WEB_WORKERS must be from 1 to 64, not -1."),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(variable, value, message, tmp_path):
    # runpanel checks the web server's settings too, before it starts anything.
    done = manage("runpanel", "--port", "1", PANEL_DATA_DIR=str(tmp_path), **{variable: value})
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {message}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_reading_the_settings_writes_nothing(tmp_path):
    data_dir = tmp_path / "var"
    env = process_env(PANEL_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="panel.settings")
    env.pop("DJANGO_SECRET_KEY", None)
    code = "from django.conf import settings; settings.INSTALLED_APPS; print(settings.DEBUG)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert not data_dir.exists()

"""The health endpoint, and settings from the environment: checked, one line when wrong."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule

from panel.secretkey import new_secret_key, secret_key_problem
from sync.clock import db_now_plus
from sync.heartbeat import beat
from sync.models import ClusterHeartbeat
from sync.schedule import SWEEP_SCHEDULE_NAME, ensure_sweep_schedule
from tests.conftest import ROOT, process_env, run_manage


def _cluster_beat(seconds_ago: float) -> None:
    """A cluster's heartbeat written ``seconds_ago`` on the database's clock."""
    beat()
    ClusterHeartbeat.objects.update(seen_at=db_now_plus(-seconds_ago))


@pytest.mark.django_db
def test_healthz_is_ok_without_login_while_a_cluster_beats():
    _cluster_beat(settings.PANEL_CLUSTER_LATE_SECONDS - 5)
    answer = Client().get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"database": "ok", "cluster": "ok"}
    assert "no-cache" in answer["Cache-Control"]


@pytest.mark.django_db
def test_healthz_is_503_once_no_cluster_beat_within_the_threshold():
    """Late at PANEL_CLUSTER_LATE_SECONDS, not at the sweep's one-minute schedule plus slack:
    the sweep's Schedule, still due in the future, no longer vouches for a silent cluster."""
    ensure_sweep_schedule()
    Schedule.objects.filter(name=SWEEP_SCHEDULE_NAME).update(
        next_run=timezone.now() + timedelta(seconds=40)
    )
    _cluster_beat(settings.PANEL_CLUSTER_LATE_SECONDS + 1)
    answer = Client().get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"database": "ok", "cluster": "late"}  # and nothing more


@pytest.mark.django_db
def test_healthz_is_503_when_no_cluster_ever_ran():
    answer = Client().get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"database": "ok", "cluster": "late"}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return run_manage(*args, env=process_env(**env), timeout=60)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PANEL_LEASE_SECONDS", "abc", "PANEL_LEASE_SECONDS must be a whole number, not 'abc'."),
        ("PANEL_Q_WORKERS", "0", "PANEL_Q_WORKERS must be from 1 to 64, not 0."),
        ("PANEL_BATCH_SIZE", "0", "PANEL_BATCH_SIZE must be from 1 to 1000, not 0."),
        ("DJANGO_DEBUG", "maybe", "DJANGO_DEBUG must be 1 or 0"),
        ("DATABASE_URL", "nosuch://x", "DATABASE_URL is not a database URL Django knows"),
        ("PANEL_WEB_WORKERS", "-1", "PANEL_WEB_WORKERS must be from 1 to 64, not -1."),
        ("DJANGO_SECRET_KEY", "change-me", "DJANGO_SECRET_KEY is a placeholder"),
        ("DJANGO_SECRET_KEY", "k3y-" * 12, "DJANGO_SECRET_KEY is too weak"),
        ("PANEL_REDIS_URL", "redis://127.0.0.1:6379/10", "PANEL_REDIS_URL has no password"),
        ("PANEL_TRUSTED_PROXIES", "127.0.0.1,nginx", "PANEL_TRUSTED_PROXIES must list"),
        ("PANEL_INSTANCE_NAME", "my panel", "PANEL_INSTANCE_NAME must be 1 to 60 letters"),
        ("PANEL_INSTANCE_NAME", "x" * 61, "PANEL_INSTANCE_NAME must be 1 to 60 letters"),
        ("PANEL_SESSION_HOURS", "0", "PANEL_SESSION_HOURS must be from 1 to 744, not 0."),
        (
            "PANEL_CLUSTER_LATE_SECONDS",
            "2",
            "PANEL_CLUSTER_LATE_SECONDS must be from 3 to 3600, not 2.",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(variable, value, message, tmp_path):
    # runpanel checks the web server's settings too, before it starts anything.
    done = manage("runpanel", "--port", "1", PANEL_DATA_DIR=str(tmp_path), **{variable: value})
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {message}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_web_server_alone_refuses_a_bad_setting_in_one_line(tmp_path):
    """The systemd unit starts gunicorn itself, not through manage.py."""
    env = process_env(PANEL_DATA_DIR=str(tmp_path), DJANGO_SECRET_KEY="change-me")
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "panel/gunicorn.conf.py", "--check-config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: DJANGO_SECRET_KEY is a placeholder")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "key",
    [
        "change-me",
        "changeme",
        "secret",
        "please-change",
        "Please change me to something long, random and secret, at least 50 characters!",
        "aaaabbbbcccc" * 5,  # 60 characters, 3 different ones
        "a1b2c3d4e5" * 4 + "f6g7h8i9",  # 48 characters
        "django-insecure-" + "q7" * 30,  # what startproject makes for development
    ],
)
def test_a_weak_or_example_secret_key_is_refused(key):
    assert secret_key_problem(key)


def test_a_long_random_key_and_the_generated_ones_pass():
    assert secret_key_problem("x" * 49 + "abcd") is None  # Django's own rule: 50+, 5 distinct
    assert all(secret_key_problem(new_secret_key()) is None for _ in range(200))


def test_a_weak_key_file_from_an_upgrade_is_refused_naming_the_file(tmp_path):
    (tmp_path / "secret_key").write_text("short-key\n")
    done = manage("check", PANEL_DATA_DIR=str(tmp_path), DJANGO_SECRET_KEY="")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: The secret key in {tmp_path / 'secret_key'} is too weak")
    assert "short-key" not in done.stderr


def test_a_new_instance_makes_a_key_file_that_passes(tmp_path):
    done = manage("check", PANEL_DATA_DIR=str(tmp_path), DJANGO_SECRET_KEY="")
    assert done.returncode == 0, done.stderr
    assert secret_key_problem((tmp_path / "secret_key").read_text().strip()) is None


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


def test_the_queue_name_is_the_instances_own_and_the_same_on_every_machine_of_it(tmp_path):
    """Machines of one panel share its database (perhaps by other addresses): one queue name.
    Two panels (two databases, two SQLite files) get two names; PANEL_INSTANCE_NAME wins."""
    from panel.env import default_instance_name, env_instance_name

    def server(host: str, name: str) -> dict:
        return {"ENGINE": "django.db.backends.mysql", "HOST": host, "NAME": name}

    def sqlite(path) -> dict:
        return {"ENGINE": "panel.sqlite", "NAME": str(path)}

    one = default_instance_name(server("10.0.0.5", "panel"))
    assert one == default_instance_name(server("db.example.com", "panel"))
    assert one != default_instance_name(server("10.0.0.5", "panel2"))
    assert default_instance_name(sqlite(tmp_path / "a" / "panel.sqlite3")) != (
        default_instance_name(sqlite(tmp_path / "b" / "panel.sqlite3"))
    )
    for database in (server("h", "a weird/name"), sqlite(tmp_path / "x.sqlite3")):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,59}", default_instance_name(database))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PANEL_INSTANCE_NAME", "eu-west.panel_1")
        assert env_instance_name("PANEL_INSTANCE_NAME", server("h", "panel")) == "eu-west.panel_1"

"""The deployment files in deploy/ match the code: what they start exists, what they set parses."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_manage

DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def example_env() -> dict[str, str]:
    lines = (DEPLOY / "env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_every_variable_of_the_example_is_one_the_panel_reads():
    code = "\n".join(p.read_text() for p in (ROOT / "panel").glob("*.py"))
    code += (ROOT / "panel" / "gunicorn.conf.py").read_text()
    for name in example_env():
        assert f'"{name}"' in code, f"{name} is in env.example but the panel never reads it"


def test_the_example_settings_pass_the_checks(tmp_path):
    env = dict(example_env(), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    env.update(PATH="/usr/bin:/bin", PANEL_DATA_DIR=str(tmp_path / "var"))
    done = run_manage("check", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    gunicorn = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", "panel/gunicorn.conf.py", "--check-config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gunicorn.returncode == 0, gunicorn.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_a_unit_starts_what_the_checkout_has(unit):
    text = unit.read_text()
    workdir = Path(re.search(r"^WorkingDirectory=(.+)$", text, re.M).group(1))
    argv = shlex.split(re.search(r"^ExecStart=(.+)$", text, re.M).group(1))
    assert argv[0].startswith(str(workdir / ".venv" / "bin"))
    for arg in argv[1:]:
        if arg.endswith(".py"):
            assert (ROOT / arg).is_file(), f"{unit.name} starts {arg}, which the checkout lacks"
    assert "EnvironmentFile=/etc/cluster-panel/env" in text
    assert f"ReadWritePaths={workdir}/var" in text  # the data folder, and nothing else


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not here")
def test_systemd_accepts_the_units(tmp_path):
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, UNITS)],
        capture_output=True,
        text=True,
    )
    # Missing users and paths of the target machine are fine here; syntax errors are not.
    assert "Unknown" not in done.stderr and "Failed to parse" not in done.stderr, done.stderr


def test_the_package_holds_every_app_of_the_panel():
    """``pip install`` puts in what ``pyproject.toml`` lists: every app of this checkout."""
    import tomllib

    from django.conf import settings

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    included = {pattern.rstrip("*") for pattern in find["find"]["include"]}
    ours = {
        app.split(".")[0] for app in settings.INSTALLED_APPS if (ROOT / app.split(".")[0]).is_dir()
    }
    assert {"panel", "nodes", "sync", "web"} <= ours  # the apps are found where they are
    assert ours <= included, f"pyproject.toml leaves out {sorted(ours - included)}"

"""The deployment files in deploy/ match the code: what they start exists, what they set parses."""

from __future__ import annotations

import os
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
SOCKET_UNIT = DEPLOY / "systemd" / "cluster-panel-web.socket"
NGINX_CONF = DEPLOY / "nginx" / "cluster-panel.conf"
NGINX = "/usr/sbin/nginx"


def unit_setting(path: Path, name: str) -> list[str]:
    return re.findall(rf"^{name}=(.*)$", path.read_text(), re.M)


def nginx_locations() -> list[str]:
    return re.findall(r"^    location .*?^    \}$", NGINX_CONF.read_text(), re.M | re.S)


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
        ["systemd-analyze", "verify", "--man=no", *map(str, UNITS), str(SOCKET_UNIT)],
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


def test_gunicorn_is_reached_only_through_a_socket_that_nginx_alone_may_open():
    """The web unit takes its socket from the socket unit (root:www-data 0660); nginx proxies
    every location there, and the example trusts requests on it as the proxy's."""
    web = DEPLOY / "systemd" / "cluster-panel-web.service"
    assert unit_setting(web, "Requires") == ["cluster-panel-web.socket"]
    (socket_path,) = unit_setting(SOCKET_UNIT, "ListenStream")
    assert socket_path.startswith("/")  # a unix socket, not an address anyone may reach
    assert unit_setting(SOCKET_UNIT, "SocketGroup") == ["www-data"]
    assert unit_setting(SOCKET_UNIT, "SocketMode") == ["0660"]
    passes = re.findall(r"proxy_pass (\S+);", NGINX_CONF.read_text())
    assert passes and set(passes) == {f"http://unix:{socket_path}"}
    assert "unix" in example_env()["PANEL_TRUSTED_PROXIES"].split(",")


def test_nginx_tells_the_panel_the_client_it_saw_on_every_location():
    """The client's own X-Forwarded-For is replaced, never appended to (panel/clientaddr.py)."""
    locations = nginx_locations()
    assert len(locations) >= 2
    for location in locations:
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in location, location
    assert "$proxy_add_x_forwarded_for" not in NGINX_CONF.read_text()


def test_nginx_speaks_current_tls_only_and_hides_its_version():
    text = NGINX_CONF.read_text()
    assert re.findall(r"^\s*ssl_protocols (.*);", text, re.M) == ["TLSv1.2 TLSv1.3"]
    assert re.search(r"^server_tokens off;", text, re.M)


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (make sysdeps)")
def test_nginx_accepts_the_shipped_configuration(tmp_path):
    """``nginx -t`` on the example, with a throwaway certificate in place of Let's Encrypt's."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + ["-nodes", "-subj", "/CN=panel.example.com", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    site = NGINX_CONF.read_text()
    site = re.sub(r"ssl_certificate\s+(\S+);", f"ssl_certificate {cert};", site)
    site = re.sub(r"ssl_certificate_key\s+(\S+);", f"ssl_certificate_key {key};", site)
    (tmp_path / "site.conf").write_text(site)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    include {tmp_path}/site.conf;\n}}\n"
    )
    done = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


# What every unit sets to keep a compromised panel process from the rest of the machine.
HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictNamespaces": "yes",
    "UMask": "0077",
    "SystemCallFilter": "@system-service",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
}
# The exposure `systemd-analyze security` gives the units (0 is best, 10 worst); without the
# sandbox they scored 8.5 ("EXPOSED"). docs/SECURITY.md quotes the figures.
MAX_EXPOSURE = 2.0


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_a_unit_is_sandboxed(unit):
    for name, value in HARDENING.items():
        assert value in unit_setting(unit, name), f"{unit.name} lacks {name}={value}"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not here")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_scores_a_unit_as_little_exposed(unit):
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


# --- Prometheus: the example scrape config and alert rules ----------------------------------

PROMETHEUS = DEPLOY / "prometheus"
ALERT_RULES = PROMETHEUS / "cluster-panel-alerts.yml"


@pytest.fixture
def promtool() -> str:
    """Debian's promtool (the ``prometheus`` package, installed by ``make sysdeps``); in CI,
    where ``.ci/run`` installs it, its absence fails rather than skips."""
    found = shutil.which("promtool")
    if found:
        return found
    reason = "promtool is not installed (make sysdeps installs the prometheus package)"
    if os.environ.get("CI") or os.environ.get("PANEL_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def promtool_ok(promtool: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_example_scrape_config_and_its_rules(promtool, tmp_path):
    """The whole check (the rule file it loads too), with a token file where the example
    expects one."""
    token = tmp_path / "cluster-panel.token"
    token.write_text("panel_abcdefgh_example\n")
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "/etc/prometheus/cluster-panel.token" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/cluster-panel.token", str(token))
    )
    shutil.copy(ALERT_RULES, tmp_path / ALERT_RULES.name)
    out = promtool_ok(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS: 4 rules found" in out


def test_promtool_accepts_the_alert_rules(promtool):
    out = promtool_ok(promtool, "check", "rules", str(ALERT_RULES), cwd=ROOT)
    assert "SUCCESS" in out


def test_the_alerts_fire_on_the_series_the_panel_gives(promtool):
    """``promtool test rules``: a node unreachable for 5 minutes, no cluster heartbeat younger
    than the threshold (or none at all), due work waiting 15 minutes, each fires its alert,
    and not before."""
    promtool_ok(promtool, "test", "rules", "tests/prometheus/alerts_test.yml", cwd=ROOT)

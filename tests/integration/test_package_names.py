"""Package names that apt would read as patterns never reach ``apt-get install``.

apt reads a name that is no package's own as a regular expression: ``lib.`` is "every package
with lib and one more character in its name", ``sysvinit.core`` replaces the init system. The
node is a real sshd whose commands run with a fake ``apt-get`` and ``dpkg-query`` first in
their PATH (as NOTES on fake package managers describe): the fake apt-get records what it was
asked and runs the real one in simulation only (``-s``), never a real install; the fake
dpkg-query says that nothing is installed but what the fake apt-get "installed". The package
lists are the machine's real ones, read with the real ``apt-cache``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from nodes.models import Node, Role
from sync.engine import register_desync, run_nodes
from sync.models import Node2Sync, Outcome, SyncAction, SyncRun
from sync.synchronizers.software import Package
from tests.integration.conftest import unavailable

pytestmark = pytest.mark.django_db

PATTERN_NAMES = ["lib.", "zlib1g.dev", "postgresql.", "g+++"]
REAL_NAMES = ["g++", "libstdc++6", "python3.11"]

FAKE_APT_GET = """\
#!/usr/bin/python3
import json, subprocess, sys
args = sys.argv[1:]
with open({calls!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
if "install" not in args:  # update: the lists stay as they are
    sys.exit(0)
sim = subprocess.run(["/usr/bin/apt-get", "-s", *args], capture_output=True, text=True)
with open({simulation!r}, "a") as f:
    f.write(sim.stdout + sim.stderr)
sys.stdout.write(sim.stdout)
sys.stderr.write(sim.stderr)
if sim.returncode == 0:
    names = [a for a in args[args.index("install") + 1 :] if not a.startswith("-")]
    with open({installed!r}, "a") as f:
        f.write("".join(n + "\\n" for n in names))
sys.exit(sim.returncode)
"""

FAKE_DPKG_QUERY = """\
#!/usr/bin/python3
import sys
try:
    installed = set(open({installed!r}).read().split())
except FileNotFoundError:
    installed = set()
names = [a for a in sys.argv[1:] if not a.startswith("-")]
for name in names:
    if name in installed:
        print(name + "\\tinstall ok installed")
    else:
        print("dpkg-query: no packages found matching " + name, file=sys.stderr)
sys.exit(0 if set(names) <= installed else 1)
"""


class FakeApt:
    """The fake package manager's records: every apt-get call, the simulations' output."""

    def __init__(self, folder: Path) -> None:
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True)
        self.calls_file = folder / "apt-get-calls"
        self.simulation_file = folder / "simulation"
        paths = {
            "calls": str(self.calls_file),
            "simulation": str(self.simulation_file),
            "installed": str(folder / "installed"),
        }
        for name, text in (("apt-get", FAKE_APT_GET), ("dpkg-query", FAKE_DPKG_QUERY)):
            script = self.bin / name
            script.write_text(textwrap.dedent(text).format(**paths))
            script.chmod(0o755)

    @property
    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    @property
    def installs(self) -> list[list[str]]:
        return [call for call in self.calls if "install" in call]

    @property
    def force_command(self) -> str:
        """The node's ForceCommand: what the panel asked for, with the fakes first in PATH."""
        path = f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin"
        return f'env PATH={shlex.quote(path)} sh -c "$SSH_ORIGINAL_COMMAND"'


@pytest.fixture
def fake_apt(tmp_path) -> FakeApt:
    if not shutil.which("apt-cache"):
        pytest.skip("apt-cache is missing: these tests read a Debian machine's package lists")
    listed = subprocess.run(["apt-cache", "pkgnames", "--", "g++"], capture_output=True, text=True)
    if "g++" not in listed.stdout.split():
        unavailable("apt's package lists are empty (run apt-get update; .ci/run does)")
    return FakeApt(tmp_path / "fake-apt")


@pytest.fixture
def apt_node(make_ssh_node, fake_apt) -> Node:
    node, _ = make_ssh_node("apt-node", force_command=fake_apt.force_command)
    Node.objects.filter(pk=node.pk).update(facts={"os": {"id": "debian"}})
    return Node.objects.get(pk=node.pk)


def run_software(node: Node, names: list[str]) -> SyncRun:
    role = Role.objects.create(name="packages")
    node.roles.add(role)
    for name in names:
        Package.objects.create(name=name).roles.add(role)
    action = SyncAction.objects.get(name="software")
    register_desync([node], [action])
    run_nodes([node.pk], action_ids=[action.pk])
    return SyncRun.objects.filter(node=node, action=action).latest("id")


def test_it_never_gives_apt_a_name_it_would_read_as_a_pattern(apt_node, fake_apt):
    run = run_software(apt_node, PATTERN_NAMES)

    assert run.outcome == Outcome.FAILED, run.log
    assert fake_apt.installs == []  # apt-get install was never run, not even simulated
    error = Node2Sync.objects.get(node=apt_node).last_error
    for name in PATTERN_NAMES:
        assert f"{name}: apt knows no package of exactly this name" in run.log, run.log
        assert name in error
    # The lists were refreshed once, in case the names were newer than them.
    assert [call[-1] for call in fake_apt.calls] == ["update"]


def test_it_refuses_a_virtual_package_naming_its_providers(apt_node, fake_apt):
    run = run_software(apt_node, ["awk", "bash"])

    assert run.outcome == Outcome.FAILED, run.log
    assert fake_apt.installs == []  # not even bash: nothing is installed when a name is wrong
    assert "awk: a virtual package, provided by " in run.log
    assert "mawk" in run.log.partition("awk: a virtual package")[2]


def test_it_still_installs_real_names_with_plus_and_dot(apt_node, fake_apt):
    run = run_software(apt_node, REAL_NAMES)

    assert run.outcome == Outcome.SUCCESS, run.log
    [install] = fake_apt.installs
    assert install[-len(REAL_NAMES) :] == REAL_NAMES
    assert "update" not in {call[-1] for call in fake_apt.calls}  # all known: no refresh
    simulated = fake_apt.simulation_file.read_text()
    assert "\nRemv " not in simulated and "E: " not in simulated, simulated
    assert "installing g++ libstdc++6 python3.11" in run.log

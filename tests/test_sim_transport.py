"""The simulated fleet (``nodes/transports/sim.py``) that ``bench/scale.py`` converges: a few
nodes with real role data go from registration to Ready through the engine, and a second
convergence finds everything in place. Here so the benchmark's transport does not rot."""

from __future__ import annotations

import json
from base64 import b64decode

import asyncssh
import pytest

from nodes.choices import NodeStatus, Transport
from nodes.models import Node, Role
from nodes.transports.sim import SimSettings
from sync.engine import register_desync, run_nodes
from sync.models import Node2Sync, Outcome, SyncRun
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.services import Service
from sync.synchronizers.software import Package
from sync.synchronizers.users import ManagedUser

pytestmark = pytest.mark.django_db


def test_a_simulated_fleet_converges_through_the_engine(settings, tmp_path):
    settings.SIM_TRANSPORT = f"dir={tmp_path},rtt_ms=1,command_ms=1"
    role = Role.objects.create(name="web")
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    for name in ("nginx", "htop"):
        Package.objects.create(name=name).roles.add(role)
    conf = ManagedFile.objects.create(path="/etc/nginx/sim.conf", content="listen 80;\n")
    conf.roles.add(role)
    ManagedUser.objects.create(name="alice", authorized_keys=key).roles.add(role)
    nginx = Service.objects.create(name="nginx")
    nginx.roles.add(role)
    nginx.files.add(conf)
    nodes = [
        Node.objects.create(name=f"sim{i}", transport=Transport.SSH, host=f"sim{i}.test")
        for i in range(3)
    ]
    for node in nodes:
        node.roles.add(role)

    register_desync(nodes)
    results = run_nodes([n.pk for n in nodes])

    assert all(r.claimed and not r.failed for r in results), results
    assert not Node2Sync.objects.exists()
    assert set(Node.objects.values_list("status", flat=True)) == {NodeStatus.READY}
    state = json.loads((tmp_path / f"{nodes[0].uuid}.json").read_text())
    assert state["packages"] == ["htop", "nginx"]
    assert state["users"]["alice"]["shell"] == "/bin/bash"
    assert state["services"]["nginx"] == {"enabled": True, "running": True}
    assert b64decode(state["files"]["/etc/nginx/sim.conf"]["data"]) == b"listen 80;\n"
    assert "/home/alice/.ssh/authorized_keys" in state["files"]

    # Again: the node keeps what the first round did, so nothing is installed twice.
    register_desync(nodes)
    run_nodes([n.pk for n in nodes])
    assert not Node2Sync.objects.exists()
    software = SyncRun.objects.filter(action__name="software", outcome=Outcome.SUCCESS)
    assert software.count() == 6
    assert software.order_by("-pk").first().log == "all 2 packages installed"


def test_the_setting_says_what_is_wrong_with_it():
    assert SimSettings.parse("dir=/x,rtt_ms=50,command_ms=5").rtt == 0.05
    for bad in ("rtt_ms=5", "dir=/x,rtt_ms=-1", "dir=/x,speed=3", "dir=/x,rtt_ms=fast"):
        with pytest.raises(ValueError):
            SimSettings.parse(bad)

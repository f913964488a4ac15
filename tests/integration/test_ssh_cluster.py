"""Data changed in the panel reaches real SSH nodes through the running cluster."""

import stat
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction

from nodes.choices import NodeStatus
from nodes.models import Node, Role
from sync.models import Node2Sync
from sync.synchronizers.files import ManagedFile
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.cluster


def test_it_pushes_a_new_managed_file_to_every_node_of_its_role(sshd, start_qcluster, tmp_path):
    web = Role.objects.create(name="web")
    for name in ("web1", "web2", "web3", "db1"):
        server = sshd()
        call_command(
            "addnode", name, "--host", "127.0.0.1", "--port", str(server.port), stdout=StringIO()
        )
    for node in Node.objects.filter(name__startswith="web"):
        node.roles.add(web)
    start_qcluster(PANEL_NODE_STATE_DIR=str(tmp_path / "state"))

    def all_ready():
        """every node to be ready with nothing left to do"""
        return (
            not Node2Sync.objects.exists()
            and not Node.objects.exclude(status=NodeStatus.READY).exists()
        )

    wait_for(all_ready, timeout=90)

    path = tmp_path / "etc" / "motd"
    path.parent.mkdir()
    with transaction.atomic():
        managed = ManagedFile.objects.create(path=str(path), content="Welcome, $USER\n", mode=0o640)
        managed.roles.add(web)
    created = time.monotonic()
    statuses = dict(Node.objects.values_list("name", "status"))
    assert statuses == {
        "web1": "synchronizing",
        "web2": "synchronizing",
        "web3": "synchronizing",
        "db1": "ready",
    }
    assert not Node2Sync.objects.filter(node__name="db1").exists()

    wait_for(all_ready, timeout=30)
    assert time.monotonic() - created < 15
    assert path.read_text() == "Welcome, $USER\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    for name in ("web1", "web2", "web3"):
        uuid = Node.objects.get(name=name).uuid  # the node's folder: a rename keeps it
        manifest = tmp_path / "state" / str(uuid) / "files.json"
        assert str(path) in manifest.read_text()

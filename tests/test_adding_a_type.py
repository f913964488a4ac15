"""The README's "Adding a synchronizer type" works as written: registered, run and shown."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from nodes.models import Role
from sync.engine import run_nodes
from sync.models import Node2Sync, Outcome, SyncAction, SyncRun
from sync.synchronizers import unregister_type, update_syncactions

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Adding a synchronizer type", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture
def motd_type(tmp_path, monkeypatch):
    (tmp_path / "readme_motd.py").write_text(readme_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("readme_motd")
    update_syncactions()
    yield SyncAction.objects.get(name="motd")
    unregister_type("motd")
    sys.modules.pop("readme_motd", None)
    update_syncactions()


def test_the_readme_type_is_registered_run_and_shown(
    motd_type, make_node, settings, tmp_path, operator
):
    settings.MOTD_PATH = str(tmp_path / "motd")
    web, db_role = Role.objects.create(name="web"), Role.objects.create(name="db")
    node, other = make_node("n1"), make_node("n2")
    node.roles.add(web)
    other.roles.add(db_role)
    registered = set(Node2Sync.objects.values_list("node__name", "action__name"))
    assert registered == {("n1", "motd"), ("n2", "motd")}  # each gained a role

    Node2Sync.objects.all().delete()
    web.name = "frontend"
    web.save()
    assert set(Node2Sync.objects.values_list("node__name", "action__name")) == {("n1", "motd")}

    run_nodes([node.pk])
    assert (tmp_path / "motd").read_text() == "Managed by the cluster panel. Roles: frontend.\n"
    run = SyncRun.objects.get(node=node, action=motd_type)
    assert run.outcome == Outcome.SUCCESS

    page = operator.get(f"/nodes/{node.pk}/").content.decode()
    assert "Message of the day" in page

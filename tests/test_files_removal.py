"""A managed file that left the panel is removed, never through a folder a user swapped."""

from __future__ import annotations

import os
import pwd

import pytest

from nodes.models import Role
from sync.engine import run_nodes
from sync.models import Outcome, SyncAction, SyncRun
from sync.synchronizers.files import ManagedFile

pytestmark = pytest.mark.django_db

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def user_folder(tmp_path, settings):
    settings.SYNC_NODE_STATE_DIR = str(tmp_path / "state")
    folder = tmp_path / "home"
    folder.mkdir()
    os.chown(folder, NOBODY.pw_uid, NOBODY.pw_gid)
    return folder


def node_with_a_file_in(folder, make_node) -> tuple:
    """A node whose role manages ``folder``/app.conf for nobody, written there once."""
    role = Role.objects.create(name="web")
    node = make_node()
    node.roles.add(role)
    managed = ManagedFile.objects.create(path=str(folder / "app.conf"), owner="nobody")
    managed.roles.add(role)
    assert files_run(node).outcome == Outcome.SUCCESS
    return node, managed


def files_run(node) -> SyncRun:
    run_nodes([node.pk])
    return SyncRun.objects.filter(node=node, action__name="files").latest("id")


def test_a_file_in_its_owners_folder_is_removed_when_it_leaves(make_node, user_folder):
    node, managed = node_with_a_file_in(user_folder, make_node)
    assert (user_folder / "app.conf").exists()

    managed.delete()
    run = files_run(node)
    assert run.outcome == Outcome.SUCCESS, run.log
    assert not (user_folder / "app.conf").exists()
    assert f"removed {user_folder / 'app.conf'}" in run.log


def test_a_folder_swapped_for_a_link_is_not_followed(make_node, user_folder, tmp_path):
    node, managed = node_with_a_file_in(user_folder, make_node)

    decoy = tmp_path / "root-only"
    decoy.mkdir()
    (decoy / "app.conf").write_text("root's own file\n")
    (user_folder / "app.conf").unlink()
    user_folder.rmdir()
    user_folder.symlink_to(decoy)  # what the folder's owner could do before the removal

    managed.delete()
    run = files_run(node)
    assert (decoy / "app.conf").read_text() == "root's own file\n"
    assert run.outcome == Outcome.SUCCESS, run.log
    assert "not removed" in run.log
    assert SyncAction.objects.filter(name="files").exists()

"""The code's registry is the source of truth for ``syncactions`` and the sweep Schedule."""

import pytest
from django_q.models import Schedule

from nodes.choices import NodeStatus
from sync.engine import register_desync
from sync.models import Node2Sync, SyncAction
from sync.schedule import SWEEP_SCHEDULE_NAME, ensure_sweep_schedule
from sync.synchronizers import REGISTRY, SynchronizerType, register_type, unregister_type
from sync.synchronizers import update_syncactions as update

pytestmark = pytest.mark.django_db


async def _noop(ctx):
    pass


@pytest.fixture
def extra_type():
    t = SynchronizerType("t-extra", "Extra", 99, NodeStatus.READY, 30, _noop)
    register_type(t)
    yield t
    unregister_type(t.name)
    SyncAction.objects.filter(name=t.name).delete()


def test_it_has_a_row_for_every_type_after_migrate():
    assert set(SyncAction.objects.values_list("name", flat=True)) == set(REGISTRY)
    info = SyncAction.objects.get(name="nodeinfo")
    assert (info.priority, info.title) == (10, "Node information")


def test_it_adds_a_new_type(extra_type):
    update()
    row = SyncAction.objects.get(name="t-extra")
    assert (row.priority, row.node_status, row.timeout) == (99, "ready", 30)


def test_it_updates_a_changed_priority(extra_type):
    update()
    register_type(SynchronizerType("t-extra", "Extra", 5, NodeStatus.INSTALLING, 60, _noop))
    update()
    row = SyncAction.objects.get(name="t-extra")
    assert (row.priority, row.node_status, row.timeout) == (5, "installing", 60)
    assert SyncAction.objects.filter(name="t-extra").count() == 1


def test_it_removes_a_type_that_left_the_code_with_its_desynchronizations(extra_type, make_node):
    update()
    node = make_node()
    register_desync([node], SyncAction.objects.filter(name="t-extra"))
    unregister_type("t-extra")
    update()
    assert not SyncAction.objects.filter(name="t-extra").exists()
    assert not Node2Sync.objects.filter(node=node).exists()


def test_it_keeps_one_sweep_schedule():
    ensure_sweep_schedule()
    ensure_sweep_schedule()
    [schedule] = Schedule.objects.filter(name=SWEEP_SCHEDULE_NAME)
    assert schedule.func == "sync.tasks.sweep"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1

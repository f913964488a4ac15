"""The bulk enqueue writes exactly the queue rows ``async_task`` writes.

``sync.queue`` writes many tasks in one INSERT instead of one ``async_task`` each; a django-q
upgrade that changes the package or the row must fail here, not in the cluster.
"""

from datetime import timedelta

import pytest
from django_q.models import OrmQ
from django_q.signals import pre_enqueue
from django_q.signing import SignedPackage
from django_q.tasks import async_task

from sync.queue import enqueue_calls

pytestmark = pytest.mark.django_db

FUNC = "sync.tasks.run_node_sessions"
NOT_COMPARED = {"id", "started"}  # unique per task, and the time it was packed


def _columns(row: OrmQ) -> dict:
    """Every column of the row but its own id, the payload and the lock (compared apart)."""
    return {
        f.attname: getattr(row, f.attname)
        for f in OrmQ._meta.concrete_fields
        if f.attname not in {"id", "payload", "lock"}
    }


def test_a_bulk_row_is_the_row_async_task_writes():
    OrmQ.objects.all().delete()
    async_task(FUNC, [1, 2], task_name="sync")
    [plain] = OrmQ.objects.all()
    enqueue_calls(FUNC, [([1, 2],), ([3],)])
    bulk = list(OrmQ.objects.exclude(pk=plain.pk).order_by("pk"))
    assert len(bulk) == 2
    for row in bulk:
        assert _columns(row) == _columns(plain)
        assert abs(row.lock - plain.lock) < timedelta(seconds=30)
    expected = SignedPackage.loads(plain.payload)
    first, second = (SignedPackage.loads(row.payload) for row in bulk)
    assert first.keys() == expected.keys()
    assert {k: v for k, v in first.items() if k not in NOT_COMPARED} == {
        k: v for k, v in expected.items() if k not in NOT_COMPARED
    }
    assert second["args"] == ([3],)
    assert first["id"] != second["id"] != expected["id"]
    assert type(first["started"]) is type(expected["started"])


def test_a_bulk_enqueue_sends_django_q_signal_for_every_task():
    seen = []

    def handler(sender, task, **kwargs):
        seen.append(task["args"])

    pre_enqueue.connect(handler)
    try:
        enqueue_calls(FUNC, [([1],), ([2],), ([3],)])
    finally:
        pre_enqueue.disconnect(handler)
    assert seen == [([1],), ([2],), ([3],)]
    assert OrmQ.objects.count() == 3

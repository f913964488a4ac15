"""Putting tasks on the django-q queue, many at once.

``async_task`` writes each task as its own INSERT and commit (and, with ``conn_max_age=0``, on
a fresh connection). The sweep of a large fleet and the registration of many nodes enqueue one
task per batch of nodes, 400 for 10,000 nodes: one ``async_task`` each is 20 to 40 times
slower than one INSERT (``bench/enqueue.py``, docs/PERFORMANCE.md), and the sweep's query
count would grow with the fleet.

So ``async_task`` still builds every package (its options, its ``pre_enqueue`` signal, its
signing), but hands it to a broker that holds it back, and the rows are written in one INSERT,
as the ORM broker's own ``enqueue`` writes them (``orm_row``). ``tests/test_queue.py`` checks
that such a row is exactly the row ``async_task`` writes, so a django-q upgrade that changes
either breaks that test, not the panel. Other brokers, and a single task, get ``async_task``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task


class _HeldBack:
    """The ORM broker as ``async_task`` sees it, keeping the packages for one bulk INSERT.

    A wrapper rather than a second broker: making one costs a reconnection with
    ``conn_max_age=0`` (django-q closes old connections whenever it makes a broker).
    """

    def __init__(self, broker: ORM) -> None:
        self.broker = broker
        self.packages: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)

    def enqueue(self, task: str) -> str:
        self.packages.append(task)
        return "(in a bulk insert)"  # what async_task logs as the queue id


def orm_row(list_key: str, package: str, now: datetime) -> OrmQ:
    """The queue row ``ORM.enqueue`` (django_q/brokers/orm.py) writes for a signed package."""
    return OrmQ(key=list_key or Conf.CLUSTER_NAME, payload=package, lock=now)


def enqueue_calls(func: str, arg_lists: Sequence[tuple], task_name: str = "sync") -> None:
    """Enqueue ``func(*args)`` for each ``args`` in ``arg_lists``."""
    broker = get_broker()
    if type(broker) is not ORM or Conf.SYNC or len(arg_lists) == 1:
        for args in arg_lists:
            async_task(func, *args, task_name=task_name)
        return
    held = _HeldBack(broker)
    for args in arg_lists:
        async_task(func, *args, task_name=task_name, broker=held)
    now = timezone.now()
    OrmQ.objects.using(Conf.ORM).bulk_create(
        [orm_row(broker.list_key, package, now) for package in held.packages], batch_size=500
    )

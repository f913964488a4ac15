"""Putting tasks on the django-q queue, many at once.

``async_task`` inserts one row per task into the ORM broker's queue. The sweep of a large
fleet enqueues one task per batch of nodes, so on the ORM broker the tasks are written in one
bulk INSERT, packed exactly as ``async_task`` packs them; other brokers get ``async_task``.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.humanhash import uuid
from django_q.models import OrmQ
from django_q.signing import SignedPackage
from django_q.tasks import async_task


def enqueue_calls(func: str, arg_lists: Sequence[tuple], task_name: str = "sync") -> None:
    """Enqueue ``func(*args)`` for each ``args`` in ``arg_lists``."""
    broker = get_broker()
    if not isinstance(broker, ORM) or Conf.SYNC or len(arg_lists) == 1:
        for args in arg_lists:
            async_task(func, *args, task_name=task_name)
        return
    now = timezone.now()
    rows = []
    for args in arg_lists:
        task = {
            "id": uuid()[1],
            "name": task_name,
            "func": func,
            "args": tuple(args),
            "kwargs": {},
            "started": now,
        }
        if Conf.ACK_FAILURES:
            task["ack_failure"] = True
        rows.append(OrmQ(key=broker.list_key, payload=SignedPackage.dumps(task), lock=now))
    OrmQ.objects.using(Conf.ORM or "default").bulk_create(rows, batch_size=500)

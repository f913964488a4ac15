"""The database server's clock: the one time every worker on every machine shares.

Leases, backoff and "due now" are compared across processes and machines whose clocks differ;
a worker whose clock runs 90 s ahead must not see a live lease as expired, nor push a retry
90 s into the future. So every such time is written and compared inside the SQL, with the
database's own clock, never ``timezone.now()`` of the process that happens to run the query.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import BooleanField, DateTimeField, ExpressionWrapper, Q
from django.db.models.expressions import Combinable

# The clock itself lives at the bottom of the apps (``nodes`` needs it too); its users import
# it from here.
from nodes.clock import DatabaseNow, read_db_now

__all__ = ["DatabaseNow", "db_bool", "db_now", "db_now_plus", "read_db_now"]


def db_now() -> DatabaseNow:
    """An expression for "now" on the database server, for filters and updates."""
    return DatabaseNow()


def db_now_plus(seconds: float) -> Combinable:
    """An expression for "now + seconds" on the database server (a lease's end, a retry)."""
    return ExpressionWrapper(
        DatabaseNow() + timedelta(seconds=seconds), output_field=DateTimeField()
    )


def db_bool(condition: Q) -> ExpressionWrapper:
    """A condition evaluated by the database (on its clock), as a selectable boolean.

    "Is this lease still live?", "is this retry due?" must be answered by the clock that wrote
    the times, so the answer is selected from the database rather than compared in Python.
    """
    return ExpressionWrapper(condition, output_field=BooleanField())

"""The database server's clock: the one time every worker on every machine shares.

Leases, backoff and "due now" are compared across processes and machines whose clocks differ;
a worker whose clock runs 90 s ahead must not see a live lease as expired, nor push a retry
90 s into the future. So every such time is written and compared inside the SQL, with the
database's own clock, never ``timezone.now()`` of the process that happens to run the query.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import BooleanField, DateTimeField, ExpressionWrapper, Func, Q
from django.db.models.expressions import Combinable
from django.utils import timezone


class DatabaseNow(Func):
    """The database server's current time in UTC, as Django stores datetimes.

    Django's own ``Now()`` is ``CURRENT_TIMESTAMP`` on MySQL/MariaDB, which is in the server's
    session time zone; the stored values are UTC, so this uses ``UTC_TIMESTAMP`` there.
    """

    template = "CURRENT_TIMESTAMP"
    output_field = DateTimeField()

    def as_mysql(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="UTC_TIMESTAMP(6)", **extra_context)

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            template="STRFTIME('%%%%Y-%%%%m-%%%%d %%%%H:%%%%M:%%%%f', 'NOW')",
            **extra_context,
        )


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


def read_db_now() -> datetime:
    """The database server's time, read with one query: for rows created in bulk."""
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SELECT UTC_TIMESTAMP(6)")
        else:
            cursor.execute("SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')")
        value = cursor.fetchone()[0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return timezone.make_aware(value, UTC) if timezone.is_naive(value) else value

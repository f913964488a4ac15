"""The database server's clock, at the bottom of the apps: the one time every process shares.

``sync.clock`` builds the engine's times on it; ``nodes`` needs it for "is a synchronizer
running on this node now" (a live lease), which must be judged by the clock that wrote the
lease, not by the clock of the web server that happens to draw the page.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection
from django.db.models import DateTimeField, Func
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

"""Database errors that are worth one more try, and the decorator that tries again.

A fleet's worth of workers writing the same tables meets deadlocks on MariaDB, and a database
restart must not kill every running session: the engine's transactions are short and
idempotent, so running one again is the cheapest correct answer.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger("sync")

# Errors after which the whole transaction was rolled back, so running it again is safe:
# MariaDB deadlock (1213) and lock wait timeout (1205) at once; a lost connection (server
# restarted: 2006 gone away, 2013 lost during query, 2002/2003 cannot connect) after a pause,
# for up to about a minute, on a new connection.
_CONTENTION_ERRORS = {1213, 1205}
_CONNECTION_ERRORS = {2002, 2003, 2006, 2013}
_CONNECTION_RETRY_SECONDS = 60


def retry_on_transient_errors(fn: Callable) -> Callable:
    """Run an engine transaction again after a deadlock or a lost database connection.

    Only outside the caller's own transaction: inside it, the caller's work was rolled back too
    and only the caller can redo it.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        deadline = time.monotonic() + _CONNECTION_RETRY_SECONDS
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except (OperationalError, InterfaceError) as e:
                attempt += 1
                code = e.args[0] if e.args else None
                if connection.in_atomic_block:
                    raise
                if code in _CONTENTION_ERRORS and attempt < 6:
                    time.sleep(0.05 * attempt * random.random())
                elif (
                    code in _CONNECTION_ERRORS or isinstance(e, InterfaceError)
                ) and time.monotonic() < deadline:
                    log.warning("database connection lost (%s); retrying %s", e, fn.__name__)
                    connection.close()
                    time.sleep(min(0.5 * attempt, 5))
                elif "database is locked" in str(e) and attempt < 6:
                    time.sleep(0.1 * attempt)
                else:
                    raise

    return wrapper

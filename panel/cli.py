"""How ``manage.py`` ends when the trouble is the surroundings, not the command: one line on
stderr that says what to do, never a traceback.

- A bad environment variable (``BadSetting``): which one and why, exit 2.
- A MariaDB database that does not exist: its name, server and the statement that creates
  it, exit 2 (``migrate`` on a fresh server is the usual first step that meets it).
- A closed stdout (``manage.py nodes | head -1``): the reader has what it wanted; the rest of
  the output goes nowhere, quietly (exit 1, as Python's documentation advises), instead of
  a BrokenPipeError traceback from the command and another one at exit.

Every command goes through here, so none needs its own handling.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

BAD_ENVIRONMENT = 2
# MariaDB/MySQL's "Unknown database" (ER_BAD_DB_ERROR).
UNKNOWN_DATABASE = 1049


def _closed_stdout() -> int:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def missing_database(error: BaseException) -> str | None:
    """The one line for an "unknown database" error anywhere in ``error``'s chain, else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "args", None) and error.args[0] == UNKNOWN_DATABASE:
            from django.conf import settings

            db = settings.DATABASES["default"]
            name = db.get("NAME", "")
            where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 3306}"
            quoted = name if re.fullmatch(r"\w+", name, re.ASCII) else f"`{name}`"
            return (
                f"the database '{name}' does not exist on {where}: create it with: "
                f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4;"
            )
        error = error.__cause__ or error.__context__
    return None


def main(argv: Sequence[str]) -> None:
    """Run ``manage.py`` with ``argv``; exits as described in the module's docstring."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")
    from django.core.management import execute_from_command_line
    from django.db import OperationalError

    from panel.env import BadSetting

    try:
        execute_from_command_line(list(argv))
    except BadSetting as e:  # a bad environment variable: say which, in one line
        sys.stderr.write(f"error: {e}\n")
        sys.exit(BAD_ENVIRONMENT)
    except BrokenPipeError:
        sys.exit(_closed_stdout())
    except OperationalError as e:
        message = missing_database(e)
        if message is None:
            raise
        sys.stderr.write(f"error: {message}\n")
        sys.exit(BAD_ENVIRONMENT)
    try:
        sys.stdout.flush()  # what is still buffered meets a closed pipe here, not at exit
    except BrokenPipeError:
        sys.exit(_closed_stdout())

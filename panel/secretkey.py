"""The rule a secret key must meet before any process of the panel starts.

The secret key signs the web sessions and every task on the queue: django-q unpickles and runs
whatever a validly signed task names, so whoever knows the key and can reach the queue (a
password-less Redis on the panel's machine, for one) runs code as the panel, whose SSH key is
root on every node. A key from an example file, or one short enough to guess, is refused at
start, not reported by ``check --deploy`` after the fact.

The rule is Django's own (``security.W009``: its constants and its test are reused), plus a
list of the placeholders people paste from examples. Nothing here reads Django's settings:
``panel.settings`` uses it while it is being read.
"""

from __future__ import annotations

import re
import secrets

from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
    _check_secret_key,
)

# How to make a good key, in every message that refuses one (and in deploy/env.example).
MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"

# Texts from examples and tutorials. A key that holds one of them was typed from an example,
# however long it is ("change-me-to-something-long-and-random-..." passes Django's own rule).
PLACEHOLDERS = (
    "change-me",
    "changeme",
    "change_me",
    "change-this",
    "changethis",
    "please-change",
    "replace-me",
    "replaceme",
    "your-secret-key",
    "yoursecretkey",
    "secret-key",
    "secretkey",
    "example",
)
# Keys that are nothing but such a word ("secret", "password"), whatever their case.
PLACEHOLDER_KEYS = frozenset({"secret", "password", "django", "panel", "key", "test", "xxx"})


def secret_key_problem(key: str) -> str | None:
    """What is wrong with ``key`` as the panel's secret key, in words; None when it is fine.

    The key itself never appears in the answer: the answer goes to the console and the logs.
    """
    folded = re.sub(r"[\s_.]+", "-", key.strip().lower())
    if folded in PLACEHOLDER_KEYS or any(word in folded for word in PLACEHOLDERS):
        return "is a placeholder from an example, which anyone can look up"
    if not _check_secret_key(key):
        return (
            f"is too weak: Django wants at least {SECRET_KEY_MIN_LENGTH} characters, at least "
            f"{SECRET_KEY_MIN_UNIQUE_CHARACTERS} different ones, and no "
            f"'{SECRET_KEY_INSECURE_PREFIX}' prefix"
        )
    return None


def new_secret_key() -> str:
    """A random key that meets ``secret_key_problem``'s rule (token_urlsafe(50): 67 chars)."""
    while True:
        key = secrets.token_urlsafe(50)
        if secret_key_problem(key) is None:
            return key

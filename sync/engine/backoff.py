"""How long a failed type waits before its next attempt.

A module of its own: the one failure path (``failures``) waits by it, and tests and the
docs name it.
"""

from __future__ import annotations

import random

from django.conf import settings


def backoff_seconds(attempts: int) -> float:
    """Delay before retry number ``attempts``: exponential, capped, with jitter.

    The jitter ("equal jitter": between half and all of the step) spreads the retries of many
    nodes that failed together, e.g. after a network outage.
    """
    step = min(
        settings.SYNC["backoff_cap_seconds"],
        settings.SYNC["backoff_base_seconds"] * 2 ** (attempts - 1),
    )
    return step / 2 + random.uniform(0, step / 2)

"""Counting the runs that end, for ``/metrics``: per process, in the transaction of the end.

Prometheus wants counters that only go up, summed over every process that ends runs: the
cluster's workers on every machine, the sweep that records a dead worker's runs as lost, the
web server where an admin forces, cancels or skips. prometheus-client's multiprocess mode
sums one machine's processes only, and the run history (``syncrun``) is pruned, so the counts
live in ``runtally`` (``sync.models.RunTally``): each process adds to rows of its own, in the
same transaction that records the runs' end (a rolled-back end counts nothing), with one
``UPDATE ... SET runs = runs + n`` per row, so no worker ever waits on another's row.

The health pass folds the rows of processes quiet for ``FOLD_AFTER`` into the ``worker=""``
rows (the sums unchanged), so the table stays as small as the types, outcomes and buckets.
"""

from __future__ import annotations

import math
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from sync.clock import db_now, db_now_plus
from sync.models import RunTally

# Upper bounds of the duration histogram's buckets, in seconds: a probe takes a fraction of
# a second, an installation minutes, and a type's timeout ends at most at half an hour.
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, math.inf)

# A process that ended no run for this long has its rows folded (it may have stopped; if it
# has not, its next run simply starts a new row).
FOLD_AFTER = timedelta(hours=1)
FOLDED = ""


def bucket_label(bound: float) -> str:
    """A bucket's bound as Prometheus writes it: "0.5", "10.0", "+Inf"."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def bucket_of(seconds: float) -> str:
    """The label of the smallest bucket that holds ``seconds``."""
    return bucket_label(next(b for b in DURATION_BUCKETS if seconds <= b))


def bucket_bound(label: str) -> float:
    """The bucket of today's ``DURATION_BUCKETS`` that holds a stored bound (rows counted
    under other bounds land in the next bound up, so changing the buckets loses no run)."""
    stored = float(label)  # float("+Inf") is inf
    return next(b for b in DURATION_BUCKETS if stored <= b)


def this_process() -> str:
    """The key of this process's rows: its machine and process id."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}"


_gathering = threading.local()


@contextmanager
def counted_together() -> Iterator[None]:
    """Inside the caller's transaction: gather the runs that end within, and write them at
    the end in one UPDATE per row touched, not one per run. For the writes of many node
    sessions committed together (``runs.in_one_transaction``). Should the block raise, what it
    gathered is dropped with the transaction that rolls back."""
    if getattr(_gathering, "ended", None) is not None:  # already gathering
        yield
        return
    _gathering.ended = []
    try:
        yield
        ended = _gathering.ended
        _gathering.ended = None
        _write(ended)
    finally:
        _gathering.ended = None


def count_runs(ended: Iterable[tuple[str, str, float]]) -> None:
    """Add runs that just ended, each ``(type name, outcome, seconds)``, to this process's
    rows, in the caller's transaction: one UPDATE per row touched (an INSERT the first time),
    or at the end of ``counted_together``."""
    gathered = getattr(_gathering, "ended", None)
    if gathered is not None:
        gathered.extend(ended)
        return
    _write(ended)


def _write(ended: Iterable[tuple[str, str, float]]) -> None:
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for action, outcome, seconds in ended:
        seconds = max(0.0, float(seconds))
        group = groups[(action, str(outcome), bucket_of(seconds))]
        group[0] += 1
        group[1] += seconds
    worker = this_process()
    for (action, outcome, le), (runs, seconds) in groups.items():
        _add(worker, action, outcome, le, int(runs), seconds)


def _add(worker: str, action: str, outcome: str, le: str, runs: int, seconds: float) -> None:
    """One UPDATE; the first time, an empty row is put in first (``INSERT ... ON CONFLICT DO
    NOTHING`` / ``INSERT IGNORE``: no savepoint, and a row another thread of this process
    wrote first is simply kept), then the UPDATE again."""
    key = {"worker": worker, "action": action, "outcome": outcome, "le": le}
    more = {"runs": F("runs") + runs, "seconds": F("seconds") + seconds, "updated_at": db_now()}
    if RunTally.objects.filter(**key).update(**more):
        return
    RunTally.objects.bulk_create(
        [RunTally(**key, runs=0, seconds=0.0, updated_at=timezone.now())], ignore_conflicts=True
    )
    RunTally.objects.filter(**key).update(**more)


def fold_quiet_tallies() -> int:
    """Fold the rows of processes that ended no run for ``FOLD_AFTER`` into the ``worker=""``
    rows; return how many rows went. The rows are locked first, so a run that ends meanwhile
    is either in the fold or in a new row of its process, never lost."""
    with transaction.atomic():
        quiet = list(
            RunTally.objects.select_for_update()
            .exclude(worker=FOLDED)
            .filter(updated_at__lt=db_now_plus(-FOLD_AFTER.total_seconds()))
            .values_list("pk", "action", "outcome", "le", "runs", "seconds")
        )
        if not quiet:
            return 0
        sums: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        for _, action, outcome, le, runs, seconds in quiet:
            group = sums[(action, outcome, le)]
            group[0] += runs
            group[1] += seconds
        RunTally.objects.filter(pk__in=[row[0] for row in quiet]).delete()
        for (action, outcome, le), (runs, seconds) in sums.items():
            _add(FOLDED, action, outcome, le, int(runs), seconds)
    return len(quiet)

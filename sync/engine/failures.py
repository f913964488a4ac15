"""What a failed type does to its row and its node: written once.

A run that failed or timed out (``runs.finish_run``) and a run an admin cancelled
(``leases.recover_interrupted_runs``) fail the same way: attempts + 1, the next attempt after
the backoff (on the database's clock), the short error on the row and on the node, and the
condition that says how it failed. A type registered again while it ran (its generation moved
on) goes back to pending and is due at once instead: the newer data may be the fix.
"""

from __future__ import annotations

from nodes.models import Node
from sync import conditions
from sync.clock import db_now, db_now_plus, read_db_now
from sync.engine.backoff import backoff_seconds
from sync.errors import FailureKind
from sync.models import DesyncState, Node2Sync


def fail_desync(
    node_id: int,
    desync_id: int,
    generation: int,
    action_name: str,
    action_title: str,
    error: str,
    kind: FailureKind = FailureKind.FAILED,
    held: bool = False,
) -> None:
    """Record that the run of ``generation`` of this desynchronization failed with ``error``.

    ``held`` (a cancelled run): the row does not come back by itself after a backoff; it is
    held until someone retries or forces it, or its data changes (a new registration). Its
    ``next_attempt_at`` then says when it was held. Called inside the caller's transaction,
    under the node's lease.
    """
    row = Node2Sync.objects.filter(pk=desync_id)
    attempts = (row.values_list("attempts", flat=True).first() or 0) + 1
    failed = dict(attempts=attempts, last_error=error, started_at=None, worker="")
    if held:
        ended = dict(state=DesyncState.HELD, next_attempt_at=db_now())
    else:
        ended = dict(
            state=DesyncState.FAILED, next_attempt_at=db_now_plus(backoff_seconds(attempts))
        )
    if not row.filter(generation=generation).update(**ended, **failed):
        # Registered again while it ran: the newer data may be the fix, run it now.
        row.update(state=DesyncState.PENDING, next_attempt_at=db_now(), **failed)
    Node.objects.filter(pk=node_id).update(
        current_action_id=None, last_error=f"{action_title}: {error}"
    )
    conditions.after_failure(node_id, action_name, action_title, kind, error, read_db_now())

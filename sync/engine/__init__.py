"""The synchronization engine: every rule of the mechanism, in this one package.

Nothing else writes ``node2sync`` or the node lease. The rules:

- Registering a desynchronization is an idempotent upsert; a row that is running gets its
  generation bumped so the finishing run cannot delete the newer desynchronization.
- A node's status is recomputed in the same transaction as every change to its rows.
- One synchronizer per node at a time: a worker runs a node only while it holds the node's
  lease, taken by one conditional UPDATE (rowcount decides), renewed while it works.
- A session runs the node's rows in priority order over one transport, and stops at the first
  failure: order is a dependency, later types wait.
- Failures back off exponentially (capped, jittered); a run past its type's timeout is
  cancelled and recorded as ``timeout``.
- Every time that workers compare (leases, backoff, "due now") is the database server's,
  computed inside the SQL (``sync.clock``): machines' clocks differ, the database's is shared.
- An expired lease (dead worker) is recovered: its rows go back to pending and its runs are
  recorded as ``lost``; a lease taken by force records them as ``forced``.

How the pieces fit, from the data change to the node and back:

- ``registration``: ``register_desync`` writes the rows in the caller's transaction and, on
  commit, ``kick`` enqueues the nodes' sessions (``sync.queue``) in batches;
  ``retry_now`` and ``set_maintenance`` go through the same path.
- ``eligibility``: the one rule that says why a node's work does not start now (maintenance,
  nothing registered, running, backoff), in SQL, used by the sessions and the sweep alike.
- ``sessions``: a django-q task (``sync.tasks``) calls ``run_task_batch``: the nodes it was
  given, then further due nodes while its batch has room; each node session
  claims the node (``leases``), then takes its rows one by one (``runs``: ``start_next_run``,
  ``finish_run_and_start_next``), running each type with ``execution`` over one connection,
  while one heartbeat per event loop renews the leases of all its sessions.
- ``leases``: claim, renew, release; whoever takes a lease next recovers what the previous
  owner left running (``lost``, ``forced``, ``cancelled``).
- ``runs``: one run's bookkeeping, always under the lease; ``backoff`` says how long a failed
  type waits.
- ``operator_actions``: force, cancel and skip, through the leases.
- ``periodic``: the sweep (expired leases, due nodes) and the health pass (probes, ``stuck``,
  run history), run by the Schedule (``sync.schedule``).
- ``transient``: database errors worth another try (deadlocks, a restarted server).

Database bookkeeping is plain synchronous code; the conversation with nodes is coroutines, so
one worker drives many node sessions on one event loop while they wait on the network.
Callers outside the engine import from ``sync.engine`` only; the modules are its inside.
"""

from sync.engine.backoff import backoff_seconds
from sync.engine.eligibility import (
    Hold,
    desync_holds,
    startable,
    store_truth,
    why_not_running,
    with_hold,
    with_row_hold,
    work_line,
)
from sync.engine.execution import EXPECTED_FAILURES, Execution
from sync.engine.leases import (
    claim_node,
    holds_lease,
    new_worker_id,
    recover_expired_leases,
    recover_interrupted_runs,
    release_node,
    renew_lease,
)
from sync.engine.operator_actions import cancel_node, skip_desyncs, take_over_node
from sync.engine.periodic import (
    PROBE_TYPE,
    check_health,
    due_node_ids,
    prune_history,
    refresh_stuck,
    register_probes,
    sweep,
)
from sync.engine.registration import kick, register_desync, retry_now, set_maintenance
from sync.engine.runs import (
    RunTicket,
    finish_run,
    finish_run_and_start_next,
    has_due_work,
    save_progress,
    start_next_run,
)
from sync.engine.sessions import (
    ProgressCallback,
    RunReport,
    SessionResult,
    run_batch,
    run_node_session,
    run_node_sessions,
    run_nodes,
    run_task_batch,
)
from sync.engine.transient import retry_on_transient_errors

__all__ = [
    "EXPECTED_FAILURES",
    "Hold",
    "PROBE_TYPE",
    "Execution",
    "ProgressCallback",
    "RunReport",
    "RunTicket",
    "SessionResult",
    "backoff_seconds",
    "cancel_node",
    "check_health",
    "claim_node",
    "due_node_ids",
    "finish_run",
    "finish_run_and_start_next",
    "has_due_work",
    "holds_lease",
    "kick",
    "new_worker_id",
    "prune_history",
    "recover_expired_leases",
    "recover_interrupted_runs",
    "refresh_stuck",
    "register_desync",
    "register_probes",
    "release_node",
    "renew_lease",
    "retry_now",
    "retry_on_transient_errors",
    "run_batch",
    "run_node_session",
    "run_node_sessions",
    "run_nodes",
    "run_task_batch",
    "save_progress",
    "set_maintenance",
    "skip_desyncs",
    "start_next_run",
    "startable",
    "sweep",
    "take_over_node",
    "why_not_running",
    "store_truth",
    "work_line",
    "desync_holds",
    "with_row_hold",
    "with_hold",
]

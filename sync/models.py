"""The synchronization's tables: the types (``syncactions``), the desynchronizations
(``node2sync``) and the history (``syncrun``), with the rules that read them in SQL: a node's
status from its desynchronizations, the title of the type a node runs now.

The types' own data (packages, files, users, services) is declared with each type in
``sync/synchronizers/``; importing the registry at the end of this module loads those models
with the app's.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from nodes.choices import LookChoices, NodeCondition, NodeStatus
from nodes.models import Node
from sync.actor import ActorKind


class SyncAction(models.Model):
    """A synchronizer type. Rows mirror the code's registry (``sync.synchronizers``)."""

    name = models.SlugField(max_length=50, unique=True)
    title = models.CharField(max_length=100)
    priority = models.IntegerField(help_text="Lower runs first.")
    node_status = models.CharField(max_length=20, choices=NodeStatus)
    timeout = models.PositiveIntegerField(help_text="Seconds a run may take.")
    # What it waits for (``@synchronizer(needs=...)``): a type that did not declare its needs
    # needs every type before it in priority order (the seed's rule); one that did needs the
    # types listed in ``needs`` only. A needed type that is not done holds it back.
    needs_before = models.BooleanField(
        default=True, help_text="Needs every type before it in priority order."
    )
    needs = models.ManyToManyField(
        "self", symmetrical=False, related_name="needed_by", blank=True, db_table="syncaction_needs"
    )

    class Meta:
        db_table = "syncactions"
        ordering = ["priority", "id"]
        verbose_name = "synchronizer type"

    def __str__(self) -> str:
        return self.name


class DesyncState(LookChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    FAILED = "failed", "Failed"
    # Cancelled by someone: it waits for a person (retry, force) or new data, not a backoff.
    HELD = "held", "Held"

    # Icon (static/icons.svg) and CSS class of each value, as in nodes.choices.
    __looks__ = {
        "pending": ("hourglass", "text-secondary-emphasis"),
        "processing": ("spinner", "text-primary-emphasis"),
        "failed": ("x-circle", "text-danger-emphasis"),
        "held": ("x-circle", "text-warning-emphasis"),
    }


class Node2Sync(models.Model):
    """A desynchronization: this node is out of sync for this type. Written only by the engine."""

    node = models.ForeignKey(
        Node, on_delete=models.CASCADE, db_column="node", related_name="desyncs"
    )
    action = models.ForeignKey(
        SyncAction, on_delete=models.CASCADE, db_column="syncactions", related_name="desyncs"
    )
    registered_at = models.DateTimeField()
    state = models.CharField(max_length=10, choices=DesyncState, default=DesyncState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.TextField(blank=True)
    # Bumped when the type is registered again while it runs, so the finishing run can tell
    # that newer data is waiting and must not delete the row.
    generation = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=100, blank=True)

    class Meta:
        db_table = "node2sync"
        verbose_name = "desynchronization"
        constraints = [
            models.UniqueConstraint(fields=["node", "action"], name="node2sync_node_action_uniq"),
        ]
        indexes = [
            # What is due, oldest first (the sweep, a task with room). The time comes first: with
            # the state first, MariaDB answered "does this node have a row running (failed,
            # held)?", asked for every node the engine starts work on (``eligibility``), from
            # this index, reading every row of the fleet in that state, and the rows just
            # finished stay there, marked deleted, until it purges them: the engine slowed
            # with the work it had done.
            models.Index(fields=["next_attempt_at", "state"], name="node2sync_due_at_idx"),
            models.Index(fields=["node", "state"], name="node2sync_node_state_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.node_id}/{self.action_id}"


class Outcome(LookChoices):
    RUNNING = "running", "Running"
    SUCCESS = "success", "Success"
    FAILED = "failed", "Failed"
    TIMEOUT = "timeout", "Timed out"
    FORCED = "forced", "Forced"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"
    LOST = "lost", "Lost"

    # Icon (static/icons.svg) and CSS class of each value, as in nodes.choices.
    __looks__ = {
        "running": ("spinner", "text-primary-emphasis"),
        "success": ("check-circle", "text-success-emphasis"),
        "failed": ("x-circle", "text-danger-emphasis"),
        "timeout": ("clock", "text-warning-emphasis"),
        "forced": ("bolt", "text-warning-emphasis"),
        "cancelled": ("x-circle", "text-warning-emphasis"),
        "skipped": ("check-circle", "text-secondary-emphasis"),
        "lost": ("help-circle", "text-secondary-emphasis"),
    }


class SyncRun(models.Model):
    """One execution of a synchronizer on a node: the history."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, db_column="node", related_name="runs")
    action = models.ForeignKey(
        SyncAction, on_delete=models.CASCADE, db_column="syncactions", related_name="runs"
    )
    worker = models.CharField(max_length=100)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome, default=Outcome.RUNNING)
    generation = models.PositiveIntegerField(default=0)
    log = models.TextField(blank=True)
    # Who ended or dropped it by hand (forced, cancelled, skipped): an admin's user name.
    acted_by = models.CharField(max_length=150, blank=True)
    # While it runs: the command it runs on the node now and the tail of what that command
    # printed so far (for the node page to show).
    current_command = models.CharField(max_length=300, blank=True)
    current_output = models.TextField(blank=True)

    class Meta:
        db_table = "syncrun"
        ordering = ["-started_at", "-id"]
        verbose_name = "synchronizer run"
        indexes = [models.Index(fields=["node", "started_at"], name="syncrun_node_started_idx")]

    def __str__(self) -> str:
        return f"{self.action_id} on {self.node_id}: {self.outcome}"

    @property
    def is_running(self) -> bool:
        return self.outcome == Outcome.RUNNING

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def recompute_status(nodes: QuerySet[Node]) -> int:
    """Set each node's status and desynchronization count from its rows, in one UPDATE (and
    its word and usability in a second: ``nodes.truth``).

    The status is the node status of the registered type with the lowest priority number
    whose node status is not Ready; Ready when there is none. The count (``pending_count``)
    is how many rows the node has, whatever their state. Both are stored so that the list
    page shows and sorts them with no per-row queries, and the engine calls this, and only
    this, in the same transaction that added or removed ``node2sync`` rows.
    """
    changed = nodes.update(**desync_columns())
    # The node's word and usability follow its status and its work (the rule reads the
    # desynchronizations, below this module: imported here, when it runs).
    from sync.engine.eligibility import store_truth

    store_truth(nodes)
    return changed


def desync_columns() -> dict[str, Coalesce]:
    """The node columns that follow its desynchronizations, as expressions over the updated
    node row: its status (``status_expression``) and ``pending_count``, how many rows it has
    (any state), which the list shows and sorts by. Every engine UPDATE that follows a change
    of a node's rows writes them all, so the count has the status's one rule and writers."""
    counted = (
        Node2Sync.objects.filter(node=OuterRef("pk"))
        .order_by()
        .values("node")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return {
        "status": status_expression(),
        "pending_count": Coalesce(Subquery(counted, output_field=IntegerField()), 0),
    }


def status_expression() -> Coalesce:
    """The status ``recompute_status`` sets, as an expression over the updated node row: for
    an engine UPDATE that writes other columns of the node too."""
    blocking = (
        Node2Sync.objects.filter(node=OuterRef("pk"))
        .exclude(action__node_status=NodeStatus.READY)
        .order_by("action__priority", "action_id")
        .values("action__node_status")[:1]
    )
    return Coalesce(Subquery(blocking), Value(NodeStatus.READY))


def with_running_title(nodes: QuerySet[Node]) -> QuerySet[Node]:
    """``nodes`` with ``running_title``: the title of the type each one runs now, if any."""
    title = SyncAction.objects.filter(pk=OuterRef("current_action_id")).values("title")[:1]
    return nodes.annotate(running_title=Coalesce(Subquery(title), Value("")))


class AuditEntry(models.Model):
    """One operator action: who, when, from where, what, on which targets, before and after.

    Written by ``sync.actions`` in the transaction of the change it records. Who and the
    targets are kept as text as well as links, so an entry outlives the user and the nodes it
    names (a deleted node's deletion is the entry most worth keeping).
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_kind = models.CharField(max_length=10, choices=ActorKind)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The user name, or the operating-system user that ran the command, or "cluster".
    actor_name = models.CharField(max_length=150)
    # The client address (the panel's resolver, through the proxy) of a page or admin action.
    address = models.CharField(max_length=45, blank=True)
    action = models.CharField(max_length=50, db_index=True)
    summary = models.CharField(max_length=500, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "auditentry"
        ordering = ["-at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action}"


class AuditTarget(models.Model):
    """A node or a row of managed data an audit entry is about, by id and by name (text: the
    row may be gone)."""

    entry = models.ForeignKey(AuditEntry, on_delete=models.CASCADE, related_name="targets")
    kind = models.CharField(max_length=50)
    object_id = models.BigIntegerField(null=True, blank=True)
    name = models.CharField(max_length=300)

    class Meta:
        db_table = "audittarget"
        indexes = [models.Index(fields=["kind", "name"], name="audittarget_kind_name_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


class ClusterHeartbeat(models.Model):
    """The last sign of life of one django-q cluster: one row per cluster name and machine.

    Written by ``sync.heartbeat`` from the cluster's main process every third of
    ``PANEL_CLUSTER_LATE_SECONDS``, on the database's clock; the pages and ``/healthz`` say
    the cluster is late when no row is younger than that.
    """

    name = models.CharField(max_length=100)
    host = models.CharField(max_length=255)
    seen_at = models.DateTimeField()

    class Meta:
        db_table = "clusterheartbeat"
        constraints = [
            models.UniqueConstraint(fields=["name", "host"], name="clusterheartbeat_name_host")
        ]
        indexes = [models.Index(fields=["seen_at"], name="clusterheartbeat_seen_idx")]

    def __str__(self) -> str:
        return f"{self.name} on {self.host}"


class AlertState(models.Model):
    """The alert side's one row: whether the cluster counts as late now, and when the last
    digest was made. The alerts process locks it for each pass, so two of them (two machines)
    never write the same change or make two digests of one period."""

    cluster_late = models.BooleanField(default=False)
    last_digest_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "alertstate"

    def __str__(self) -> str:
        return "alert state"


class AlertDigest(models.Model):
    """One message listing every change gathered in a period: the same text goes to every
    channel (``AlertDelivery``); its changes point at it."""

    made_at = models.DateTimeField()
    title = models.CharField(max_length=200)
    body = models.TextField()

    class Meta:
        db_table = "alertdigest"
        ordering = ["-made_at", "-id"]
        verbose_name = "alert digest"

    def __str__(self) -> str:
        return f"{self.made_at:%Y-%m-%d %H:%M:%S} {self.title}"


# What ``ConditionChange.condition`` holds for the cluster's own condition (no node).
CLUSTER_LATE = "cluster-late"


class ConditionChange(models.Model):
    """A node entered or left a condition, or the cluster turned late or ran again.

    Written where the condition is saved, in its transaction (``sync.conditions``,
    ``sync.alerts.cluster``): the change exists exactly when the condition does. The alerts
    process gathers the rows without a digest into the next one. The node's name is kept as
    text, so the row outlives the node.
    """

    at = models.DateTimeField()
    node = models.ForeignKey(
        Node,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_column="node",
        related_name="condition_changes",
    )
    node_name = models.CharField(max_length=63, blank=True)
    # A NodeCondition value, or CLUSTER_LATE.
    condition = models.CharField(max_length=30)
    # True: entered (a failing node failing in another type counts), False: left.
    entered = models.BooleanField()
    message = models.CharField(max_length=500, blank=True)
    digest = models.ForeignKey(
        AlertDigest, null=True, blank=True, on_delete=models.SET_NULL, related_name="changes"
    )

    class Meta:
        db_table = "conditionchange"
        ordering = ["-at", "-id"]
        verbose_name = "condition change"

    def __str__(self) -> str:
        verb = "entered" if self.entered else "left"
        return f"{self.node_name or 'cluster'} {verb} {self.condition}"

    @property
    def is_cluster(self) -> bool:
        return self.condition == CLUSTER_LATE

    @property
    def condition_label(self) -> str:
        """ "unreachable", "host key changed"; a condition this code does not know by its name."""
        if self.is_cluster:
            return "late"
        try:
            return NodeCondition(self.condition).label.lower()
        except ValueError:
            return self.condition

    @property
    def state_text(self) -> str:
        """Where the node (or the cluster) stands after this change, as the digest and the
        pages say it: "is unreachable: <why>", "is no longer failing", "runs again"."""
        if self.is_cluster and not self.entered:
            return "runs again"
        if not self.entered:
            return f"is no longer {self.condition_label}"
        said = f": {self.message}" if self.message else ""
        return f"is {self.condition_label}{said}"


class DeliveryState(LookChoices):
    PENDING = "pending", "Waiting to be sent"
    SENT = "sent", "Sent"

    __looks__ = {
        "pending": ("hourglass", "text-warning-emphasis"),
        "sent": ("check-circle", "text-success-emphasis"),
    }


class AlertDelivery(models.Model):
    """The outbox: one digest to one channel, and how its delivery goes.

    A channel is known by the SHA-256 of its URL (the URL holds passwords and tokens, so it
    is never stored) and shown by its label, the URL with those masked. A receiver that is
    down is tried again with backoff for as long as it takes; a channel's digests go out in
    order, so a newer one waits behind an older one not yet delivered.
    """

    digest = models.ForeignKey(AlertDigest, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=64)
    label = models.CharField(max_length=300)
    state = models.CharField(max_length=10, choices=DeliveryState, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.CharField(max_length=300, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "alertdelivery"
        ordering = ["digest_id", "id"]
        verbose_name = "alert delivery"
        verbose_name_plural = "alert deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["digest", "channel"], name="alertdelivery_digest_channel"
            )
        ]
        indexes = [models.Index(fields=["state", "channel"], name="alertdelivery_state_idx")]

    def __str__(self) -> str:
        return f"digest {self.digest_id} to {self.label}: {self.state}"

    @property
    def state_choice(self) -> DeliveryState:
        return DeliveryState(self.state)


class RunTally(models.Model):
    """How many runs ended, per process, type, outcome and duration bucket: ``/metrics``'s
    run counters and duration histogram (``sync.engine.tally``).

    Counted in the database, not in a process's memory: runs end in the cluster's workers, on
    any machine, and in the web server (a forced or skipped run); ``/metrics`` is served by
    any web process and must add all of them up. The history (``syncrun``) cannot serve: it is
    pruned, and a counter must never go down. One row per writing process (``worker``), so
    workers never wait on each other's row; the health pass folds the rows of processes quiet
    for a while into the ``worker=""`` rows, keeping every sum.
    """

    # The process that counted the runs ("host:pid"); "" for the folded rows of past ones.
    worker = models.CharField(max_length=100, blank=True)
    # The type's name, not a key: the count outlives a type removed from the code.
    action = models.CharField(max_length=50)
    outcome = models.CharField(max_length=10, choices=Outcome)
    # The histogram bucket of these runs' durations, as Prometheus writes its bound ("+Inf").
    le = models.CharField(max_length=10)
    runs = models.BigIntegerField(default=0)
    seconds = models.FloatField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "runtally"
        constraints = [
            models.UniqueConstraint(
                fields=["worker", "action", "outcome", "le"], name="runtally_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.outcome} <= {self.le}: {self.runs}"


class ApiToken(models.Model):
    """A user's key to the JSON API (``/api/v1/``), shown once when made, stored as a digest.

    The token is ``panel_<prefix>_<secret>``: the prefix finds the row, the SHA-256 of the
    whole token is compared in constant time (the secret has 256 bits, so a plain hash is
    enough: nothing to stretch). ``read_only`` narrows the user's rights to looking; a token
    never has more than its user (``sync.tokens.TokenRights``). Revoking keeps the row, so
    the audit trail's "by alice (token ci)" still names a token that existed.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=50)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    read_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "apitoken"
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def scope(self) -> str:
        return "read-only" if self.read_only else "read-write"


# The types' own models live with each type (sync/synchronizers/): load them with the app's.
from sync.synchronizers import load_builtin_types  # noqa: E402

load_builtin_types()

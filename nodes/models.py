import ipaddress
import re
import uuid
from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import ExpressionWrapper, Q
from django.utils import timezone

from nodes.choices import NodeCondition, NodeShown, NodeStatus, Transport
from nodes.clock import DatabaseNow, read_db_now
from nodes.truth import node_truth

# Patterns end in \Z, not $: Python's $ also matches before a trailing newline.
node_name_validator = RegexValidator(
    r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?\Z",
    "Use lower-case letters, digits, dots and hyphens (like a host name).",
)


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
# An IPv6 scope id names an interface: what Linux allows in one (IFNAMSIZ is 16 with the NUL).
_SCOPE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")


def validate_host(value: str) -> None:
    """A host name (RFC 1123) or an IP address: nothing else may reach the resolver."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        scope = getattr(address, "scope_id", None)
        if scope is None or _SCOPE_ID.match(scope):
            return
        raise ValidationError(
            "The IPv6 scope id after % must be an interface name (letters, digits, _ . -).",
            code="invalid_host",
        )
    labels = value.split(".")
    if labels[-1].isdigit():
        # 256.1.1.1 or 10.1: no top-level domain is all digits (RFC 3696), so no resolver
        # would ever find it; it is a mistyped IP address.
        raise ValidationError(
            f"{value} is not an IP address or a resolvable name (IPv4 is four numbers 0-255).",
            code="invalid_host",
        )
    if len(value) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValidationError(
            "Enter a host name (letters, digits, hyphens and dots) or an IP address.",
            code="invalid_host",
        )


def node_at_address(node: "Node") -> "Node | None":
    """Another SSH node the panel reaches at ``node``'s host and port, if any (host names
    compared without case, as DNS does). Two rows for one sshd would run every type twice
    there, each with its own manifests."""
    if node.transport != Transport.SSH or not node.host or node.port is None:
        return None
    others = Node.objects.filter(transport=Transport.SSH, host__iexact=node.host, port=node.port)
    if node.pk is not None:
        others = others.exclude(pk=node.pk)
    return others.only("name").first()


def validate_address_free(node: "Node") -> None:
    """Refuse a host:port another SSH node already has, naming that node."""
    other = node_at_address(node)
    if other is not None:
        raise ValidationError(
            {"host": f"{node.host}:{node.port} is already the node {other.name}."},
            code="address_taken",
        )


username_validator = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z",
    "Enter a user name: letters, digits, '_', '.', '-', starting with a letter or '_'.",
)


class Role(models.Model):
    """What a node is for (web, mail, dns, db); links nodes to the data they need."""

    name = models.SlugField(max_length=50, unique=True)

    class Meta:
        db_table = "role"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class NodeQuerySet(models.QuerySet):
    def processing(self) -> models.QuerySet:
        """The nodes a synchronizer runs on now: the one SQL twin of ``Node.is_processing``."""
        return self.filter(processing_q())

    def drop_connections(self) -> int:
        """Have every worker drop its warm connection to these nodes (``Node.connection_
        generation``): their address, user or pinned key changed, or they went into
        maintenance. Call it in the transaction of that change."""
        return self.update(connection_generation=models.F("connection_generation") + 1)


class NodeManager(models.Manager.from_queryset(NodeQuerySet)):
    """Every node loaded through ``Node.objects`` knows whether its lease is live, as the
    database's clock says (``lease_live``): ``is_processing`` then costs no query."""

    def get_queryset(self) -> NodeQuerySet:
        return super().get_queryset().annotate(lease_live=lease_live())


class Node(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[node_name_validator])
    # The node's identity where the panel keeps state on the node itself (its manifests of
    # what it put there): a rename must not make the panel forget what it has to clean up.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    transport = models.CharField(max_length=10, choices=Transport, default=Transport.SSH)
    host = models.CharField(max_length=255, blank=True, validators=[validate_host])
    port = models.PositiveIntegerField(
        default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    username = models.CharField(max_length=32, default="root", validators=[username_validator])
    host_key = models.TextField(blank=True, help_text="Pinned SSH host key (OpenSSH format).")
    # Which of the panel's keys this node accepts (its SHA256 fingerprint), so that during a
    # key rotation the nodes not reached yet keep the old key (``nodes.keyrotation``).
    # Empty: the panel's current key. Written only by the rotation.
    panel_key = models.CharField(
        max_length=100,
        blank=True,
        editable=False,
        help_text="Fingerprint of the panel's SSH key this node accepts (empty: the current key).",
    )
    roles = models.ManyToManyField(Role, blank=True, related_name="nodes", db_table="node_roles")
    maintenance = models.BooleanField(default=False)
    # The panel's own server: its roles land where the database and the key to every node
    # live, so only superusers change it (``sync.rights``). Set for local nodes, and for SSH
    # nodes whose pinned key is one of this machine's own host keys (``sync.panelhost``).
    is_panel_host = models.BooleanField(
        "panel's own server",
        default=False,
        help_text="The panel runs on this node: only superusers may change it or give it roles.",
    )

    status = models.CharField(max_length=20, choices=NodeStatus, default=NodeStatus.READY)
    last_error = models.TextField(blank=True)
    # Whether the node has an error, kept by the database itself (a stored generated column,
    # so no writer of ``last_error`` has to remember it): the fleet's counts read it from the
    # narrow counts index below instead of every row's error text.
    has_error = models.GeneratedField(
        expression=~Q(last_error=""), output_field=models.BooleanField(), db_persist=True
    )
    last_sync_at = models.DateTimeField(null=True, blank=True)
    # Conditions beside the status (what is wrong), derived by the engine from synchronizer
    # results and stored here so lists need no extra queries: a list of {type, since,
    # message} from the most severe down, and the most severe one's type for counts/filters.
    conditions = models.JSONField(default=list, blank=True)
    condition = models.CharField(max_length=20, choices=NodeCondition, blank=True)
    # What the node is, in the word its Status cell leads with, and whether it may serve users
    # (``nodes.truth``: one rule from the status, the conditions, maintenance and whether its
    # work can go on). Stored, written by the engine with every change of those, so the list,
    # its filters and counts, the commands and the API read one truth and no rule of their own.
    shown = models.CharField(
        max_length=20,
        choices=NodeShown,
        default=NodeShown.READY,
        db_index=True,
        editable=False,
    )
    usable = models.BooleanField(default=True, db_index=True, editable=False)
    # The last time the panel reached the node, and the first failed attempt since then:
    # "unreachable" means no contact for longer than a grace period, not one lost packet.
    last_contact_at = models.DateTimeField(null=True, blank=True)
    contact_failed_since = models.DateTimeField(null=True, blank=True)
    facts = models.JSONField(default=dict, blank=True)
    # The facts a placement decision sorts and filters by, as columns (the JSON above keeps
    # everything the node said): written with ``facts`` by the facts types
    # (``nodes.facts.fact_columns``), so the list sorts 10,000 nodes by memory on an index-free
    # column read, not by parsing JSON per row. ``booted_at`` rather than an uptime: it stays
    # true between two collections.
    os_name = models.CharField("operating system", max_length=255, blank=True, editable=False)
    kernel = models.CharField(max_length=255, blank=True, editable=False)
    cpus = models.PositiveIntegerField("CPUs", null=True, blank=True, editable=False)
    memory_mb = models.PositiveBigIntegerField(
        "memory (MiB)", null=True, blank=True, editable=False
    )
    disk_free_mb = models.PositiveBigIntegerField(
        "disk free (MiB)", null=True, blank=True, editable=False
    )
    booted_at = models.DateTimeField("up since", null=True, blank=True, editable=False)
    facts_at = models.DateTimeField("facts collected", null=True, blank=True, editable=False)
    # How many desynchronizations the node has (any state), kept by the engine in the same
    # UPDATE as the status (``sync.models.recompute_status``), so that the list sorts by it
    # without counting ``node2sync`` for every node.
    pending_count = models.PositiveIntegerField(default=0, editable=False)

    # Bumped (``Node.objects.drop_connections``) when what a connection to the node was opened
    # for no longer holds: address, user or pinned key changed, maintenance turned on. A
    # worker keeps a node's SSH connection warm between sessions (``transports.warm``) only
    # while its generation is the one it connected with, so every worker process drops it.
    connection_generation = models.PositiveIntegerField(default=0, editable=False)

    # The lease: who runs this node's synchronizers, until when. Written only by the engine.
    # Deliberately not indexed: on MariaDB an index on the expiry makes a claim lock other
    # nodes' index records and deadlock with them.
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # The synchronizer type running now (a ``syncactions`` id), written by the engine. A plain
    # id, not a foreign key: the inventory sits below the synchronization and never refers
    # to it (docs/ARCHITECTURE.md, "Apps").
    current_action_id = models.BigIntegerField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)

    objects = NodeManager()

    class Meta:
        db_table = "node"
        ordering = ["name"]
        # The list sorted by pending count, either way, with the name as its tie-breaker
        # (``sync.fleet.StableOrderingFilter``): read from an index, not a sort of the fleet.
        indexes = [
            models.Index(fields=["pending_count", "name"], name="node_pending_idx"),
            models.Index(fields=["-pending_count", "name"], name="node_pending_desc_idx"),
            # Every column the fleet's counts group by (``sync.fleet.fleet_counts``): the
            # counts of 10,000 nodes read this index alone, not the table's wide rows. The
            # lease is deliberately left out (see ``lease_until``).
            models.Index(
                fields=["status", "shown", "usable", "maintenance", "condition", "has_error"],
                name="node_counts_idx",
            ),
            # The nodes running now, counted apart (``processing_q`` reads the lease, which no
            # index holds): few, found without reading the fleet. MariaDB databases have had
            # this index, unnamed, since the column was a foreign key; migration 0014 names it.
            models.Index(fields=["current_action_id"], name="node_running_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    # The columns the node's truth (``shown``, ``usable``) is computed from.
    TRUTH_INPUTS = frozenset({"status", "condition", "maintenance"})

    def save(self, *args, **kwargs) -> None:
        """A save that writes the status, the conditions or maintenance writes ``shown`` and
        ``usable`` with them, by the one rule (``nodes.truth``), so no direct save (a test's,
        a shell's) leaves a node in maintenance usable. Whether its work can go on is the
        engine's to say (``sync.engine.eligibility.store_truth``): kept as last stored."""
        update_fields = kwargs.get("update_fields")
        if update_fields is None or self.TRUTH_INPUTS & set(update_fields):
            truth = node_truth(
                self.status, self.condition, self.maintenance, self.shown != NodeShown.WAITING
            )
            self.shown, self.usable = truth.shown.value, truth.usable
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "shown", "usable"}
        super().save(*args, **kwargs)

    @property
    def address(self) -> str:
        if self.transport == Transport.LOCAL:
            return "local"
        return f"{self.username}@{self.host}:{self.port}"

    def clean(self) -> None:
        validate_address_free(self)

    @property
    def status_choice(self) -> NodeStatus:
        return NodeStatus(self.status)

    @property
    def condition_choice(self) -> NodeCondition | None:
        """The most severe condition, if any (what the Status cell shows beside the status)."""
        return NodeCondition(self.condition) if self.condition else None

    @property
    def condition_message(self) -> str:
        return self.conditions[0]["message"] if self.conditions else ""

    @property
    def condition_line(self) -> str:
        """The most severe condition as one line for people: ``Label: message``, or the
        message alone when it already starts by naming the condition (the transports' texts
        begin "host key changed: ...", "unreachable: ..."; a failing type's "Units failing:
        ..."), so no page reads "Unreachable: unreachable: ..."."""
        condition = self.condition_choice
        if condition is None:
            return ""
        message = self.condition_message.strip()
        head, sep, _ = message.partition(": ")
        if sep and head.lower().endswith(str(condition.label).lower()):
            return message[:1].upper() + message[1:]
        return f"{condition.label}: {message}" if message else str(condition.label)

    def has_condition(self, condition: NodeCondition) -> bool:
        return any(c["type"] == condition for c in self.conditions)

    @property
    def shown_choice(self) -> NodeShown:
        return NodeShown(self.shown)

    @property
    def shows_status(self) -> bool:
        """The cell leads with the status itself (Ready, or the status of work going on),
        not with what stops the node."""
        return self.shown in NodeStatus.values

    @property
    def shown_line(self) -> str:
        """The Status cell's lead, the word with what it is about: "Unreachable since 06:24",
        "Failing: Software packages", "Host key changed", "Maintenance", "Ready"."""
        shown = self.shown_choice
        item = next((c for c in self.conditions if c.get("type") == shown.value), None)
        if shown == NodeShown.UNREACHABLE and item and item.get("since"):
            return f"{shown.label} since {_clock_time(item['since'])}"
        if shown == NodeShown.FAILING and item and item.get("title"):
            return f"{shown.label}: {item['title']}"
        return str(shown.label)

    def refresh_from_db(self, *args, **kwargs) -> None:
        # The lease may have changed: its liveness is asked again (see ``is_processing``).
        self.__dict__.pop("lease_live", None)
        super().refresh_from_db(*args, **kwargs)

    @property
    def is_processing(self) -> bool:
        """A synchronizer runs on the node now: it is leased, the lease is live, a type runs.

        "Live" on the database's clock, which wrote the lease: a web server whose clock is
        ahead would show a running node idle (and one behind, a dead worker's node busy).
        """
        if self.current_action_id is None or self.lease_until is None:
            return False
        live = self.__dict__.get("lease_live")
        if live is None:  # not loaded through Node.objects: ask the database's clock
            live = self.lease_until > read_db_now()
        return bool(live)


def _clock_time(iso: str) -> str:
    """A condition's ``since`` for people: 06:24 today, "4 Dec 06:24" before."""
    try:
        when = timezone.localtime(datetime.fromisoformat(iso))
    except (TypeError, ValueError):
        return iso
    if when.date() == timezone.localdate():
        return when.strftime("%H:%M")
    return f"{when.day} {when:%b %H:%M}"


def lease_live() -> ExpressionWrapper:
    """Whether the node's lease is live now, on the database's clock, as a selectable value."""
    return ExpressionWrapper(Q(lease_until__gt=DatabaseNow()), output_field=models.BooleanField())


def has_condition_q(condition: str) -> Q:
    """``Node.has_condition`` in SQL: the condition holds, as the most severe one or beside a
    worse one. The stored JSON is matched on its ``"type": "..."`` pair as Django writes it
    (``json.dumps``), never on the bare word: a message is text from the node, and a message
    that reads "Stuck" must not put the node in the ``stuck`` list."""
    return Q(condition=condition) | Q(conditions__icontains=f'"type": "{condition}"')


def processing_q() -> Q:
    """ "Is this node processing" in SQL (lists, counts, filters): ``Node.is_processing``'s twin."""
    return Q(current_action_id__isnull=False, lease_until__gt=DatabaseNow())

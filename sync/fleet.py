"""The nodes list's queries: search, filters and sorting (django-filter), the table's rows and
the fleet's counts.

Below the pages so that the pages and the API share them (NetBox's one filterset per model).
Invalid values (an unknown status or role, a bad sort key) are shown as form errors and
otherwise ignored: a hand-edited URL gets the unfiltered list, never a 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import django_filters
from django import forms
from django.db import router
from django.db.models import (
    Count,
    Exists,
    F,
    Func,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Cast, Coalesce

from nodes.choices import NodeCondition, NodeShown, NodeStatus
from nodes.models import Node, Role, has_condition_q, processing_q
from sync.engine.compiled import compiled, fetch, many, select_sql
from sync.engine.eligibility import with_hold
from sync.models import DesyncState, Node2Sync, with_running_title


class YesNoWidget(django_filters.widgets.BooleanWidget):
    """true/false in the URL, "Any" when unset."""

    def __init__(self, attrs=None) -> None:
        super().__init__(attrs)
        self.choices = [("", "Any"), ("true", "Yes"), ("false", "No")]


class StableOrderingFilter(django_filters.OrderingFilter):
    """Sorting with the name as the tie-breaker, so pages never repeat or skip a node."""

    def filter(self, qs: QuerySet, value) -> QuerySet:
        qs = super().filter(qs, value)
        if value:
            qs = qs.order_by(*qs.query.order_by, "name")
        return qs


# (model field or annotation, URL value, column label); the list page builds its sortable
# headers from this.
SORTABLE = [
    ("name", "name", "Name"),
    ("host", "address", "Address"),
    ("status", "status", "Status"),
    ("pending_count", "pending", "Pending"),
    ("last_error", "error", "Last error"),
    ("last_sync_at", "synced", "Last sync"),
    # The facts placement sorts by, stored columns (``nodes.facts``). Nodes without facts
    # come first ascending and last descending, on SQLite and MariaDB alike.
    ("os_name", "os", "OS"),
    ("kernel", "kernel", "Kernel"),
    ("cpus", "cpus", "CPUs"),
    ("memory_mb", "memory", "Memory"),
    ("disk_free_mb", "disk", "Disk free"),
    ("booted_at", "booted", "Booted"),
]


def _role_choices() -> list[tuple[str, str]]:
    # A callable, so the roles are read when the choices are used (validating a role asked
    # for, drawing the form), not when the filter is made.
    return [(name, name) for name in Role.objects.order_by("name").values_list("name", flat=True)]


class NodeFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search", max_length=100)
    status = django_filters.ChoiceFilter(
        choices=NodeStatus.choices, empty_label="Any status", label="Status"
    )
    condition = django_filters.ChoiceFilter(
        choices=NodeCondition.choices,
        empty_label="Any condition",
        label="Condition",
        method="filter_condition",
    )
    shown = django_filters.ChoiceFilter(
        choices=NodeShown.choices, empty_label="Any", label="Shown as"
    )
    usable = django_filters.BooleanFilter(label="Usable", widget=YesNoWidget)
    role = django_filters.ChoiceFilter(
        field_name="roles__name", choices=_role_choices, empty_label="Any role", label="Role"
    )
    has_error = django_filters.BooleanFilter(
        method="filter_has_error", label="Has an error", widget=YesNoWidget
    )
    maintenance = django_filters.BooleanFilter(label="Maintenance", widget=YesNoWidget)
    processing = django_filters.BooleanFilter(
        method="filter_processing", label="Running now", widget=YesNoWidget
    )
    sort = StableOrderingFilter(
        fields=[(field, param) for field, param, _ in SORTABLE],
        field_labels={field: label for field, _, label in SORTABLE},
        label="Sort by",
    )

    class Meta:
        model = Node
        fields: list[str] = []

    def __init__(self, *args, role_names: Sequence[str] | None = None, **kwargs) -> None:
        """``role_names``: the roles, when the caller has read them already (the list page
        reads them once for the filter and the bulk bar)."""
        super().__init__(*args, **kwargs)
        self.form.fields["q"].widget = forms.SearchInput(
            attrs={"placeholder": "Name or host", "autocomplete": "off"}
        )
        if role_names is not None:
            self.form.fields["role"].choices = [(name, name) for name in role_names]

    def get_form_class(self) -> type[forms.Form]:
        """The form's class, made once: django-filter makes a class and its ten fields for
        every request (half a millisecond of the list page); each form still gets its own
        copy of the fields, so a change to one form's (the search widget, the roles offered)
        stays its own."""
        made = type(self).__dict__.get("_form_class")
        if made is None:
            made = super().get_form_class()
            type(self)._form_class = made
        return made

    def search(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip()
        if not value:
            return qs
        return qs.filter(Q(name__icontains=value) | Q(host__icontains=value))

    def filter_has_error(self, qs: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return qs
        return qs.exclude(last_error="") if value else qs.filter(last_error="")

    def filter_condition(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        """Nodes that have the condition, as the most severe one or beside a worse one."""
        if not value:
            return qs
        return qs.filter(has_condition_q(value))

    def filter_processing(self, qs: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return qs
        return qs.processing() if value else qs.exclude(processing_q())

    @property
    def active_filters(self) -> bool:
        """Whether any filter (not the sort) narrows the list, for the "Reset" link."""
        self.form.errors  # noqa: B018 - validates the form, which sets cleaned_data
        data = getattr(self.form, "cleaned_data", {})
        return any(
            value not in (None, "", [])
            for key, value in data.items()
            if key != "sort" and key in self.form.fields
        )


# --- The table and the counts ---------------------------------------------------------------


def table_queryset() -> QuerySet[Node]:
    """The nodes with everything their row shows, in a fixed number of queries.

    The page polls every second while the cluster works, so nothing here may grow with the
    fleet: the desynchronization count is stored on the node (the engine keeps it, so sorting
    by it reads one column), the failed count a subquery of the page's rows only, the roles
    one prefetch, the running type a join; the JSON facts and the host key are not loaded.
    ``hold`` (why its work does not start now, ``sync.engine.with_hold``) words the Status
    cell's synchronizer part.
    """
    failed = (
        Node2Sync.objects.filter(node=OuterRef("pk"), state=DesyncState.FAILED)
        .order_by()
        .values("node")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        with_hold(with_running_title(Node.objects))
        .prefetch_related("roles")
        .defer("facts", "host_key")
        .annotate(failed_count=Coalesce(Subquery(failed, output_field=IntegerField()), 0))
        .order_by("name")
    )


# What a row of the table shows, and what its live refresh and its cache compare: the node's
# columns (``address`` is transport, user, host and port; ``is_processing`` the running type and
# the lease) and ``table_queryset``'s annotations but ``hold``'s parts.
TABLE_COLUMNS = (
    "id",
    "name",
    "transport",
    "host",
    "port",
    "username",
    "maintenance",
    "status",
    "last_error",
    "last_sync_at",
    "conditions",
    "condition",
    "shown",
    "usable",
    "last_contact_at",
    "os_name",
    "kernel",
    "cpus",
    "memory_mb",
    "disk_free_mb",
    "booted_at",
    "pending_count",
    "lease_until",
    "current_action_id",
)
TABLE_ANNOTATIONS = ("lease_live", "running_title", "failed_count", "hold")


def table_rows(ids: Sequence[int]) -> list[Node]:
    """The nodes of ``ids``, in that order, as ``table_queryset`` gives them, with their roles
    by name in ``row_roles``: the page's rows, in two queries.

    The statement is ``table_queryset``'s, selecting only what a row shows, built by Django
    once per process for a few page sizes (``many``) and run with the ids after: building and
    compiling that expression (the engine's rule of why work waits, ``with_hold``) cost Django
    about twelve milliseconds a request, more than the database takes to answer it. ``hold``
    is selected without ``next_desync_id`` and ``next_at``, which no row shows (each a pass
    over the node's desynchronizations). The roles are read as pairs, not prefetched:
    Django's prefetch makes a queryset and a manager per node, two milliseconds for fifty.
    """
    if not ids:
        return []
    alias = router.db_for_read(Node)

    def build(marks: list) -> tuple[str, Sequence]:
        query = (
            table_queryset()
            .using(alias)
            .filter(pk__in=marks)
            .order_by()
            .values_list(*TABLE_COLUMNS, *TABLE_ANNOTATIONS)
        )
        return select_sql(query)

    def build_roles(marks: list) -> tuple[str, Sequence]:
        # The name by a subquery, not a join: joined, MariaDB may start from the roles and
        # read every node's links (it did, with the table's statistics of a fleet added in
        # bulk), instead of the page's links by node.
        name = Role.objects.filter(pk=OuterRef("role_id")).values("name")
        query = (
            Node.roles.through.objects.using(alias)
            .filter(node_id__in=marks)
            .order_by()
            .values_list("node_id", "role_id", Subquery(name))
        )
        return select_sql(query)

    sql, params = many(("table-rows", alias), build, ("i", list(ids)))
    found = {node.pk: node for node in Node.objects.raw(sql, params).using(alias)}
    nodes = [found[pk] for pk in ids if pk in found]
    for node in nodes:
        node.row_roles = []
    roles_sql = many(("table-roles", alias), build_roles, ("i", list(ids)))
    pairs = sorted(fetch(alias, *roles_sql), key=lambda pair: pair[2])
    for node_id, role_id, name in pairs:
        if node_id in found:
            found[node_id].row_roles.append(Role(pk=role_id, name=name))
    return nodes


@dataclass(frozen=True)
class FleetCounts:
    total: int
    by_status: list[tuple[NodeStatus, int]]
    # By the word each Status cell leads with (``Node.shown``): what the counters show.
    by_shown: list[tuple[NodeShown, int]]
    usable: int
    processing: int
    failing: int
    maintenance: int
    waiting: bool
    by_condition: list[tuple[NodeCondition, int]]

    @property
    def by_word(self) -> list[tuple[NodeShown, int]]:
        """The counters of the words a Status cell leads with when nothing stops the node
        (Ready, a status of work going on; Waiting when some node waits for a person). What
        stops nodes is counted by condition and maintenance, as their cells say it."""
        words = {*NodeStatus.values, NodeShown.WAITING.value}
        return [
            (shown, n)
            for shown, n in self.by_shown
            if shown.value in words and (n or shown.value != NodeShown.WAITING)
        ]

    @property
    def active(self) -> bool:
        """Work runs or waits to run somewhere: the page should watch closely."""
        return bool(self.processing or self.waiting)


# The columns the counts group by: all of them in one narrow index (``node_counts_idx``).
_COUNTED = ("status", "shown", "usable", "maintenance", "condition", "has_error")


def _counts_statement(alias: str) -> tuple[str, list]:
    """The counts' SQL: built by Django once per process and database, run as it is after."""

    def build(marks: list) -> tuple[str, Sequence]:
        # Neither correlated with the counted rows, so the database evaluates each once; the
        # nodes running now are few and found through the index on the running type.
        running = Subquery(
            Node.objects.filter(processing_q())
            .order_by()
            .annotate(n=Func(F("pk"), function="COUNT"))
            .values("n")
        )
        work_waits = Exists(
            Node2Sync.objects.filter(
                state__in=[DesyncState.PENDING, DesyncState.PROCESSING], node__maintenance=False
            )
        )
        query = (
            Node.objects.using(alias)
            .order_by()
            .values(*_COUNTED)
            .annotate(
                n=Count("pk"),
                n_processing=Max(running, output_field=IntegerField()),
                n_waiting=Max(Cast(work_waits, IntegerField())),
            )
            .values_list(*_COUNTED, "n", "n_processing", "n_waiting")
        )
        return select_sql(query)

    return compiled(("fleet-counts", alias), "", build)([])


def fleet_counts() -> FleetCounts:
    """Counts per status and word and the rest of the summary line, in one query.

    The nodes are grouped by the stored columns the counters read (``_COUNTED``), which one
    narrow index holds, so 10,000 nodes cost an index scan of a few milliseconds, not a read
    of every wide row; nothing is cached, so every number is true when the query runs.

    ``waiting`` says whether a node outside maintenance has pending or running rows: the
    cluster is about to work. Failed rows waiting for their backoff do not count, or the page
    would poll every second for up to 15 minutes; the slow watcher catches their retry. It is
    a yes/no question, asked with one uncorrelated EXISTS: a per-node count would join every
    desynchronization.
    """
    alias = router.db_for_read(Node)
    groups = fetch(alias, *_counts_statement(alias))
    by_status = dict.fromkeys(NodeStatus.values, 0)
    by_shown = dict.fromkeys(NodeShown.values, 0)
    by_condition = dict.fromkeys(NodeCondition.values, 0)
    total = usable = failing = maintenance = processing = 0
    waiting = False
    for status, shown, is_usable, in_maintenance, condition, has_error, n, running, waits in groups:
        total += n
        by_status[status] = by_status.get(status, 0) + n
        by_shown[shown] = by_shown.get(shown, 0) + n
        if condition:
            by_condition[condition] = by_condition.get(condition, 0) + n
        usable += n if is_usable else 0
        maintenance += n if in_maintenance else 0
        failing += n if has_error else 0
        processing, waiting = running or 0, bool(waits)
    return FleetCounts(
        total=total,
        by_status=[(s, by_status[s.value]) for s in NodeStatus],
        by_shown=[(s, by_shown[s.value]) for s in NodeShown],
        usable=usable,
        processing=processing,
        failing=failing,
        maintenance=maintenance,
        waiting=waiting,
        by_condition=[(c, by_condition[c.value]) for c in NodeCondition],
    )

"""The nodes list's queries: search, filters and sorting (django-filter), the table's rows and
the fleet's counts.

Below the pages so that the pages and the API share them (NetBox's one filterset per model).
Invalid values (an unknown status or role, a bad sort key) are shown as form errors and
otherwise ignored: a hand-edited URL gets the unfiltered list, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass

import django_filters
from django import forms
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from nodes.choices import NodeCondition, NodeShown, NodeStatus
from nodes.models import Node, Role, has_condition_q, processing_q
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
    role = django_filters.ModelChoiceFilter(
        field_name="roles",
        queryset=Role.objects.order_by("name"),
        to_field_name="name",
        empty_label="Any role",
        label="Role",
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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.form.fields["q"].widget = forms.SearchInput(
            attrs={"placeholder": "Name or host", "autocomplete": "off"}
        )

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


def fleet_counts() -> FleetCounts:
    """Counts per status and the rest of the summary line, in one aggregate query.

    ``waiting`` says whether a node outside maintenance has pending or running rows: the
    cluster is about to work. Failed rows waiting for their backoff do not count, or the page
    would poll every second for up to 15 minutes; the slow watcher catches their retry. It is
    a yes/no question, asked with one uncorrelated EXISTS: a per-node count would join every
    desynchronization.
    """
    # Aggregate names must not shadow field names ("maintenance" is both), hence "n_".
    aggregates = {f"n_{s.value}": Count("pk", filter=Q(status=s.value)) for s in NodeStatus}
    aggregates.update({f"s_{s.name}": Count("pk", filter=Q(shown=s.value)) for s in NodeShown})
    aggregates["n_usable"] = Count("pk", filter=Q(usable=True))
    aggregates.update(
        n_total=Count("pk"),
        n_processing=Count("pk", filter=processing_q()),
        n_failing=Count("pk", filter=~Q(last_error="")),
        n_maintenance=Count("pk", filter=Q(maintenance=True)),
    )
    # By the most severe condition of each node: the Status cell shows the same one.
    aggregates.update(
        {f"c_{c.name}": Count("pk", filter=Q(condition=c.value)) for c in NodeCondition}
    )
    # Not correlated with the counted row, so the database evaluates it once.
    work_waits = Exists(
        Node2Sync.objects.filter(
            state__in=[DesyncState.PENDING, DesyncState.PROCESSING], node__maintenance=False
        )
    )
    aggregates["n_waiting"] = Count("pk", filter=Q(work_waits))
    row = Node.objects.order_by().aggregate(**aggregates)
    return FleetCounts(
        total=row["n_total"],
        by_status=[(s, row[f"n_{s.value}"]) for s in NodeStatus],
        by_shown=[(s, row[f"s_{s.name}"]) for s in NodeShown],
        usable=row["n_usable"],
        processing=row["n_processing"],
        failing=row["n_failing"],
        maintenance=row["n_maintenance"],
        waiting=row["n_waiting"] > 0,
        by_condition=[(c, row[f"c_{c.name}"]) for c in NodeCondition],
    )

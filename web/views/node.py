"""A node's page (``/nodes/<id>/``) and its live endpoint.

The page polls while the node works (``web.polling``). A poll must be cheap when nothing
changed, and a node's page can hold twenty logs of twenty thousand characters each: so it
reads a few small rows (``NodeSnapshot``), compares their fingerprint with the page's, and
only renders the fragments (and reads the run history they show) when it differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, Max, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import MD5
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.timezone import localtime
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseStopPolling

from nodes.access import VIEW, require_perms
from nodes.keys import safe_fingerprint
from nodes.models import Node
from sync.alerts.history import node_changes
from sync.engine.eligibility import desync_holds, why_waiting, with_hold
from sync.models import (
    AlertDelivery,
    ConditionChange,
    DesyncState,
    Node2Sync,
    Outcome,
    SyncAction,
    SyncRun,
    with_running_title,
)
from sync.rights import is_panel_host, may_manage_panel_host
from web.forms import ResyncForm
from web.offers import offers
from web.polling import LivePoll, fingerprint
from web.views.shortcuts import node_or_404

RUNS_PAGE_SIZE = 20


def _node_queryset() -> QuerySet[Node]:
    """The node with its running type's title, its roles, and its run history's size.

    The run count and newest run id are subqueries on the node's row (an index on the node
    serves them), so that telling a new or pruned run costs no query of its own.
    """
    runs = SyncRun.objects.filter(node=OuterRef("pk")).order_by().values("node")
    # The Alerts card's news, told the same way: a new change, a change taken into a digest,
    # an attempt to deliver a digest that names the node (every attempt counts one).
    changes = ConditionChange.objects.filter(node=OuterRef("pk")).order_by().values("node")
    deliveries = (
        AlertDelivery.objects.filter(digest__changes__node=OuterRef("pk"))
        .order_by()
        .values("digest__changes__node")
    )
    return (
        with_hold(with_running_title(Node.objects))
        .prefetch_related("roles")
        .annotate(
            runs_count=Subquery(
                runs.annotate(n=Count("pk")).values("n"), output_field=IntegerField()
            ),
            runs_newest=Subquery(runs.annotate(m=Max("pk")).values("m")),
            alerts_newest=Subquery(changes.annotate(m=Max("pk")).values("m")),
            alerts_digested=Subquery(
                changes.annotate(n=Count("digest")).values("n"), output_field=IntegerField()
            ),
            alerts_attempts=Subquery(
                deliveries.annotate(n=Sum("attempts")).values("n"), output_field=IntegerField()
            ),
            # When the running type's timeout ends it at the latest (what maintenance's box
            # says a run "still finishing" may take).
            running_started=Subquery(
                SyncRun.objects.filter(node=OuterRef("pk"), outcome=Outcome.RUNNING)
                .order_by("-pk")
                .values("started_at")[:1]
            ),
            running_timeout=Subquery(
                SyncAction.objects.filter(pk=OuterRef("current_action_id")).values("timeout")[:1]
            ),
        )
    )


@dataclass
class NodeSnapshot:
    """What the node page shows, read cheaply: the node, its desynchronizations, and the
    progress of its running runs (hashes of their output and log, not the texts)."""

    node: Node
    desyncs: list[Node2Sync]
    running: list[tuple] = field(default_factory=list)

    @classmethod
    def read(cls, pk: int) -> NodeSnapshot:
        """Four small queries: the node (with its run counts), roles, desyncs, running runs."""
        node = node_or_404(pk, _node_queryset())
        desyncs = list(desync_holds(node))
        node.running_until = (
            node.running_started + timedelta(seconds=node.running_timeout)
            if node.running_started and node.running_timeout
            else None
        )
        now = timezone.now()
        for desync in desyncs:
            desync.is_due = desync.next_attempt_at <= now
            desync.state_choice = DesyncState(desync.state)
            desync.why = why_waiting(desync)
        running = list(
            SyncRun.objects.filter(node=node, outcome=Outcome.RUNNING)
            .order_by("pk")
            .values_list("pk", "current_command", MD5("current_output"), MD5("log"))
        )
        return cls(node, desyncs, running)

    @property
    def active(self) -> bool:
        """A type runs on the node, or work waits for it: the page polls every second."""
        node = self.node
        waiting = not node.maintenance and any(
            d.state not in (DesyncState.FAILED, DesyncState.HELD) for d in self.desyncs
        )
        return node.is_processing or waiting

    @property
    def fingerprint(self) -> str:
        """Every value the live fragments draw, the node's whole row included.

        Of what the clock changes, only what the fragments show in words: "due now",
        "3 minutes ago", the spinner of a lease that expired. A running run's elapsed time is
        counted in the browser, or its page would be redrawn every second.
        """
        node = self.node
        return fingerprint(
            [getattr(node, f.attname) for f in Node._meta.concrete_fields],
            node.running_title,
            node.hold,
            node.is_processing,
            timesince(node.last_sync_at) if node.last_sync_at else "",
            timesince(node.last_contact_at) if node.last_contact_at else "",
            [role.name for role in node.roles.all()],
            node.runs_count,
            node.runs_newest,
            (node.alerts_newest, node.alerts_digested, node.alerts_attempts),
            self.running,
            [
                (d.pk, d.action_id, d.state, d.attempts, d.next_attempt_at, d.is_due)
                + (d.last_error, d.generation, d.action.title, d.action.priority, d.why)
                for d in self.desyncs
            ],
        )


def _mib(value: object) -> str:
    return filesizeformat(value * 1024 * 1024) if isinstance(value, int) else ""


def fact_lines(node: Node) -> list[tuple[str, str]]:
    """The node's facts for people: the OS by name, sizes in human units (1024-based, as
    ``df -h``), uptime as a duration. Lines the node did not report are left out; the raw
    keys stay in the API (``facts``)."""
    facts = node.facts if isinstance(node.facts, dict) else {}
    if not facts and node.facts_at is None:
        return []
    kernel = node.kernel
    if kernel and facts.get("arch"):
        kernel = f"{kernel} ({facts['arch']})"
    memory = _mib(node.memory_mb)
    if memory and _mib(facts.get("memory_available_mb")):
        memory += f" ({_mib(facts['memory_available_mb'])} available)"
    disk = _mib(node.disk_free_mb)
    if disk:
        disk += " free"
        if _mib(facts.get("disk_total_mb")):
            disk += f" of {_mib(facts['disk_total_mb'])}"
    up = ""
    if node.booted_at:
        booted = localtime(node.booted_at)
        up = f"{timesince(booted, depth=2)} (booted {booted:%Y-%m-%d %H:%M})"
    lines = [
        ("Host name", str(facts.get("hostname") or "")),
        ("Operating system", node.os_name),
        ("Kernel", kernel),
        ("CPUs", str(node.cpus) if node.cpus is not None else ""),
        ("Memory", memory),
        ("Disk (/)", disk),
        ("Up", up),
        ("Collected", f"{timesince(node.facts_at, depth=1)} ago" if node.facts_at else ""),
    ]
    return [(label, value) for label, value in lines if value]


def _page_context(request: HttpRequest, snapshot: NodeSnapshot) -> dict:
    """What the page and its live fragments draw: the snapshot and the run history's page."""
    node = snapshot.node
    runs = Paginator(
        SyncRun.objects.filter(node=node).select_related("action").order_by("-started_at", "-id"),
        RUNS_PAGE_SIZE,
    ).get_page(request.GET.get("runs_page"))
    now = timezone.now()
    for run in runs.object_list:
        run.outcome_choice = Outcome(run.outcome)
        if run.is_running:
            run.elapsed = (now - run.started_at).total_seconds()
    facts = fact_lines(node)
    locked = is_panel_host(node) and not may_manage_panel_host(request.user)
    return {
        "node": node,
        "desyncs": snapshot.desyncs,
        "runs": runs,
        "facts": facts,
        "host_key_fingerprint": safe_fingerprint(node.host_key) if node.host_key else "",
        "active": snapshot.active,
        "resync_form": ResyncForm(auto_id="resync_%s"),
        # Edit, delete and accepting a key are for superusers on the panel's own server:
        # hidden here, refused by the views whatever is posted (sync.rights).
        "panel_host_locked": locked,
        "offers": offers(node, snapshot.desyncs, locked),
        # What was sent about the node (three queries): only when the page or a changed
        # fragment is drawn, like the run history.
        "alert_changes": node_changes(node),
    }


def _live_url(node: Node) -> str:
    return reverse("nodes:detail_live", args=[node.pk])


@require_GET
@require_perms(VIEW)
def node_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Facts, desynchronizations in priority order, run history with logs, actions, and the
    alerts sent about it."""
    snapshot = NodeSnapshot.read(pk)
    context = _page_context(request, snapshot)
    poll = LivePoll(request, _live_url(snapshot.node))
    context["poller"] = poll.element(snapshot.fingerprint, snapshot.active)
    return render(request, "nodes/detail.html", context)


@require_GET
@require_perms(VIEW)
def node_detail_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The node page's poll: its status, summary, desynchronizations, runs, facts and alerts."""
    try:
        snapshot = NodeSnapshot.read(pk)
    except Http404:
        # Deleted meanwhile: say so once and stop polling.
        return HttpResponseStopPolling(render_to_string("nodes/_node_gone.html", {}, request))

    def fragments() -> str:
        context = {**_page_context(request, snapshot), "oob": True}
        return render_to_string("nodes/_detail_live.html", context, request)

    poll = LivePoll(request, _live_url(snapshot.node))
    return poll.answer(snapshot.fingerprint, snapshot.active, fragments)

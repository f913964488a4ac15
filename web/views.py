"""The cluster nodes pages: the list, a node's page, the add and edit forms, the actions.

Thin views: the engine (``sync.engine``) does every change to synchronization state, the
forms validate, ``nodes.access`` decides who may act. Every action is a POST (CSRF) that
answers with a message and a redirect, so a reload never repeats it.

Live refresh: the list and the node page each hold one invisible poller element. While work
is running or waiting it polls every second (every 10 s in a hidden tab) and the answer swaps
only the changed cells out of band; when the cluster is idle the answer is 286 (htmx stops)
and the poller is replaced by a slow watcher (every 10 s) that answers 204 until something
changes, then brings the fast polling back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page, Paginator
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from nodes.access import (
    ADD,
    CHANGE,
    DELETE,
    LOCAL_REFUSED,
    VIEW,
    check_perms,
    has_perms,
    may_manage_local,
    require_perms,
)
from nodes.choices import NodeCondition, NodeStatus, Transport
from nodes.hostkeys import (
    HostKeyChange,
    HostKeyMismatch,
    check_login,
    scan_host_key,
)
from nodes.keys import fingerprint, panel_public_key, safe_fingerprint
from nodes.models import Node, processing_q
from nodes.transports import TransportError
from sync.engine import (
    cancel_node,
    register_desync,
    retry_now,
    set_maintenance,
    skip_desyncs,
    take_over_node,
)
from sync.inventory import accept_host_key, add_node
from sync.models import DesyncState, Node2Sync, SyncRun, with_running_title
from web.filters import SORTABLE, NodeFilter
from web.forms import (
    AcceptKeyForm,
    BulkActionForm,
    MaintenanceForm,
    NodeAddForm,
    NodeEditForm,
    ResyncForm,
)

PAGE_SIZE = 50
RUNS_PAGE_SIZE = 20
# Fast while something runs (the spinner must show within 2 s of a run starting), slower in
# a hidden tab; the watcher is the cheap check once the cluster is idle.
FAST_TRIGGER = (
    "every 1s [document.visibilityState=='visible'], every 10s [document.visibilityState=='hidden']"
)
WATCH_TRIGGER = "every 10s"
FAST, WATCH = "fast", "watch"
_POLL_PARAMS = ("mode", "since", "ids")
_MAX_ID = 2**63 - 1


# --- Queries --------------------------------------------------------------------------------


def table_queryset() -> QuerySet[Node]:
    """The nodes with everything their row shows, in a fixed number of queries.

    The page polls every second while the cluster works, so nothing here may grow with the
    fleet: the desynchronization counts are subqueries, the roles one prefetch, the running
    type a join; the JSON facts and the host key are not loaded.
    """
    rows = Node2Sync.objects.filter(node=OuterRef("pk")).order_by().values("node")
    pending = rows.annotate(n=Count("pk")).values("n")
    failed = rows.filter(state=DesyncState.FAILED).annotate(n=Count("pk")).values("n")
    return (
        with_running_title(Node.objects)
        .prefetch_related("roles")
        .defer("facts", "host_key")
        .annotate(
            pending_count=Coalesce(Subquery(pending, output_field=IntegerField()), 0),
            failed_count=Coalesce(Subquery(failed, output_field=IntegerField()), 0),
        )
        .order_by("name")
    )


@dataclass(frozen=True)
class FleetCounts:
    total: int
    by_status: list[tuple[NodeStatus, int]]
    processing: int
    failing: int
    maintenance: int
    waiting: bool
    by_condition: list[tuple[NodeCondition, int]]

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
        processing=row["n_processing"],
        failing=row["n_failing"],
        maintenance=row["n_maintenance"],
        waiting=row["n_waiting"] > 0,
        by_condition=[(c, row[f"c_{c.name}"]) for c in NodeCondition],
    )


def _node_or_404(pk: int, queryset: QuerySet[Node] | None = None) -> Node:
    """The node, or 404 for any id that names none (also ids too big for the database)."""
    if pk > _MAX_ID:
        raise Http404("No such node.")
    try:
        return (queryset if queryset is not None else with_running_title(Node.objects)).get(pk=pk)
    except Node.DoesNotExist:
        raise Http404("No such node.") from None


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


# --- Live refresh ---------------------------------------------------------------------------


def _poller(request: HttpRequest, url: str, mode: str, since: str, ids: str, oob: bool) -> str:
    """The invisible element that polls ``url``; the current filters and page ride along."""
    params = request.GET.copy()
    for key in _POLL_PARAMS:
        params.pop(key, None)
    params["mode"], params["since"] = mode, since
    if ids:
        params["ids"] = ids
    return render_to_string(
        "nodes/_poller.html",
        {
            "url": f"{url}?{params.urlencode()}",
            "trigger": FAST_TRIGGER if mode == FAST else WATCH_TRIGGER,
            "mode": mode,
            "oob": oob,
        },
    )


def _live_response(
    request: HttpRequest,
    url: str,
    render_body: Callable[[], str],
    digest: str,
    active: bool,
    ids: str,
) -> HttpResponse:
    """Answer a poll: 204 when nothing changed, 286 when the fast poll should stop.

    Every other answer carries the changed fragments (swapped out of band) and a new poller
    in the right mode, which replaces the one that asked. The fragments are rendered only
    then: most polls of a busy fleet's page change nothing and cost no rendering.
    """
    mode = WATCH if request.GET.get("mode") == WATCH else FAST
    unchanged = request.GET.get("since") == digest
    if active:
        if unchanged and mode == FAST:
            return HttpResponse(status=204)
        return HttpResponse(render_body() + _poller(request, url, FAST, digest, ids, oob=True))
    if mode == FAST:
        # Nothing runs or waits: htmx swaps these last fragments, then stops this poller;
        # the watcher it is replaced with notices new work.
        return HttpResponseStopPolling(
            render_body() + _poller(request, url, WATCH, digest, ids, oob=True)
        )
    if unchanged:
        return HttpResponse(status=204)
    return HttpResponse(render_body() + _poller(request, url, WATCH, digest, ids, oob=True))


def _list_digest(context: dict, list_changed: bool) -> str:
    """What the list's live fragments show, hashed from the data rather than the HTML.

    The same fields ``_list_live.html`` draws: the counts, and per node the Status cell and
    the changing cells. Hashing data lets a poll that changes nothing skip rendering.
    """
    return _digest(
        context["counts"],
        list_changed,
        *[
            (
                n.pk,
                n.status,
                n.is_processing,
                n.current_action_id,
                n.maintenance,
                n.pending_count,
                n.failed_count,
                n.last_error,
                n.last_sync_at,
                n.conditions,
            )
            for n in context["nodes"]
        ],
    )


# --- The list -------------------------------------------------------------------------------


def _list_context(request: HttpRequest) -> dict:
    filterset = NodeFilter(request.GET or None, queryset=table_queryset())
    page: Page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    nodes = list(page.object_list)
    sort = request.GET.get("sort", "") if "sort" not in filterset.form.errors else ""
    columns = []
    for _, param, label in SORTABLE:
        if sort == param:
            direction, next_sort = "ascending", f"-{param}"
        elif sort == f"-{param}":
            direction, next_sort = "descending", param
        else:
            direction, next_sort = "", param
        if not sort and param == "name":
            direction, next_sort = "ascending", "-name"
        columns.append({"param": param, "label": label, "aria_sort": direction, "next": next_sort})
    user = request.user
    return {
        "filter": filterset,
        "page": page,
        "nodes": nodes,
        "counts": fleet_counts(),
        "columns": {c["param"]: c for c in columns},
        "can_bulk": user.has_perm(CHANGE) or user.has_perm(DELETE),
        "ids_digest": _digest(*[n.pk for n in nodes]),
    }


def _list_live_body(request: HttpRequest, context: dict, list_changed: bool = False) -> str:
    reload_url = ""
    if list_changed:
        query = request.GET.copy()
        for key in _POLL_PARAMS:
            query.pop(key, None)
        reload_url = reverse("nodes:list") + (f"?{query.urlencode()}" if query else "")
    return render_to_string(
        "nodes/_list_live.html",
        {**context, "list_changed": list_changed, "reload_url": reload_url},
        request,
    )


@require_GET
@require_perms(VIEW)
def node_list(request: HttpRequest) -> HttpResponse:
    """The fleet: counts per status, filters, the table, bulk actions for operators."""
    context = _list_context(request)
    mode = FAST if context["counts"].active else WATCH
    url = reverse("nodes:live")
    digest = _list_digest(context, False)
    context["poller"] = _poller(request, url, mode, digest, context["ids_digest"], False)
    return render(request, "nodes/list.html", context)


@require_GET
@require_perms(VIEW)
def node_list_live(request: HttpRequest) -> HttpResponse:
    """The list's poll: status cells, counts and the other changing cells, out of band.

    Checkboxes are never sent, so a selection survives every refresh. When nodes were added
    to or removed from the page the client shows, a notice offers a reload instead of
    reshuffling rows under the user's pointer.
    """
    context = _list_context(request)
    ids = request.GET.get("ids", "")
    changed = bool(ids) and ids != context["ids_digest"]
    return _live_response(
        request,
        reverse("nodes:live"),
        lambda: _list_live_body(request, context, list_changed=changed),
        _list_digest(context, changed),
        context["counts"].active,
        ids,
    )


# --- A node's page --------------------------------------------------------------------------


def _node_active(node: Node, desyncs: list[Node2Sync]) -> bool:
    lease_live = node.lease_until is not None and node.lease_until > timezone.now()
    waiting = any(d.state != DesyncState.FAILED for d in desyncs) and not node.maintenance
    return node.is_processing or lease_live or waiting


def _detail_context(request: HttpRequest, node: Node) -> dict:
    desyncs = list(
        Node2Sync.objects.filter(node=node)
        .select_related("action")
        .order_by("action__priority", "action_id")
    )
    now = timezone.now()
    for desync in desyncs:
        desync.is_due = desync.next_attempt_at <= now
    runs = Paginator(
        SyncRun.objects.filter(node=node).select_related("action").order_by("-started_at", "-id"),
        RUNS_PAGE_SIZE,
    ).get_page(request.GET.get("runs_page"))
    for run in runs.object_list:
        if run.is_running:
            run.elapsed = (now - run.started_at).total_seconds()
    host_key_fingerprint = safe_fingerprint(node.host_key) if node.host_key else ""
    facts = [
        (key, value if isinstance(value, str | int | float) else json.dumps(value))
        for key, value in sorted((node.facts or {}).items())
    ]
    return {
        "node": node,
        "desyncs": desyncs,
        "runs": runs,
        "facts": facts,
        "host_key_fingerprint": host_key_fingerprint,
        "active": _node_active(node, desyncs),
        "resync_form": ResyncForm(auto_id="resync_%s"),
    }


def _detail_queryset() -> QuerySet[Node]:
    return with_running_title(Node.objects).prefetch_related("roles")


@require_GET
@require_perms(VIEW)
def node_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Facts, desynchronizations in priority order, run history with logs, and actions."""
    node = _node_or_404(pk, _detail_queryset())
    context = _detail_context(request, node)
    # Rendered as the poll renders it, so that the first poll can answer "unchanged".
    body = render_to_string("nodes/_detail_live.html", {**context, "oob": True}, request)
    mode = FAST if context["active"] else WATCH
    url = reverse("nodes:detail_live", args=[node.pk])
    context["poller"] = _poller(request, url, mode, _digest(body), "", False)
    return render(request, "nodes/detail.html", context)


@require_GET
@require_perms(VIEW)
def node_detail_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The node page's poll: its status, summary, desynchronizations and runs."""
    try:
        node = _node_or_404(pk, _detail_queryset())
    except Http404:
        # Deleted meanwhile: say so once and stop polling.
        return HttpResponseStopPolling(render_to_string("nodes/_node_gone.html", {}, request))
    context = _detail_context(request, node)
    body = render_to_string("nodes/_detail_live.html", {**context, "oob": True}, request)
    url = reverse("nodes:detail_live", args=[node.pk])
    return _live_response(request, url, lambda: body, _digest(body), context["active"], "")


# --- Redirects after actions ----------------------------------------------------------------


def _back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    """Back to the page the action came from (``next``), if it is ours; else ``default``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return HttpResponseRedirect(target)
    return HttpResponseRedirect(default)


def _form_error_text(form) -> str:
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


def _maintenance_note(node: Node) -> str:
    if node.maintenance:
        return " The node is in maintenance: the work waits until maintenance ends."
    return ""


# --- Actions on one node --------------------------------------------------------------------


@require_POST
@require_perms(CHANGE)
def node_resync(request: HttpRequest, pk: int) -> HttpResponse:
    """Synchronize again: register every type, or one, for the node."""
    node = _node_or_404(pk)
    form = ResyncForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Nothing registered: {_form_error_text(form)}")
        return redirect(node_url(node))
    action = form.cleaned_data["action"]
    count = register_desync([node], [action] if action else None)
    what = f"“{action.title}”" if action else f"{count} synchronizer types"
    messages.success(
        request,
        f"Registered {what} for {node.name}; the cluster runs them now.{_maintenance_note(node)}",
    )
    return _back(request, node_url(node))


@require_POST
@require_perms(CHANGE)
def node_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Retry now: the node's failed desynchronizations stop waiting for their backoff."""
    node = _node_or_404(pk)
    count = retry_now([node])
    if count:
        messages.success(
            request,
            f"{count} desynchronization(s) of {node.name} are due now.{_maintenance_note(node)}",
        )
    else:
        messages.info(request, f"Nothing is waiting on {node.name}: it is in sync.")
    return _back(request, node_url(node))


@require_POST
@require_perms(CHANGE)
def node_force(request: HttpRequest, pk: int) -> HttpResponse:
    """Force completion: take the node from a worker that hangs (``nodesync --force``).

    The interrupted run is recorded as forced, its type goes back to pending and the cluster
    runs it again.
    """
    node = _node_or_404(pk, with_running_title(Node.objects))
    was_held = node.lease_until is not None and node.lease_until > timezone.now()
    running = node.running_title if node.is_processing else ""
    if not take_over_node(node, by=request.user.get_username()[:30]):
        messages.error(request, f"Could not take {node.name} over; try again.")
    elif was_held:
        what = f"the run of “{running}”" if running else "its session"
        messages.success(
            request,
            f"Forced completion on {node.name}: {what} was stopped and recorded as forced; "
            "the cluster runs the type again.",
        )
    else:
        messages.info(
            request,
            f"Nothing was running on {node.name}; its waiting work is handed to the cluster.",
        )
    return _back(request, node_url(node))


def _acting_user(request: HttpRequest) -> str:
    """Who acted, as the run history records it."""
    return request.user.get_username()[:100]


@require_POST
@require_perms(CHANGE)
def node_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel: end the running synchronizer now; its type fails and waits for its retry."""
    node = _node_or_404(pk)
    ended = cancel_node(node, by=_acting_user(request))
    if ended:
        messages.success(
            request,
            f"Cancelled {', '.join(ended)} on {node.name}: recorded as cancelled by you. The "
            "type waits for its next attempt; “Retry now” runs it at once.",
        )
    else:
        messages.info(request, f"Nothing is running on {node.name}.")
    return _back(request, node_url(node))


@require_POST
@require_perms(CHANGE)
def node_skip(request: HttpRequest, pk: int) -> HttpResponse:
    """Skip: drop desynchronizations without running them, for work done by hand."""
    node = _node_or_404(pk)
    form = ResyncForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Cannot skip: {_form_error_text(form)}")
        return _back(request, node_url(node))
    action = form.cleaned_data["action"]
    skipped = skip_desyncs(node, [action.pk] if action else None, by=_acting_user(request))
    if skipped:
        messages.success(
            request,
            f"Skipped {', '.join(skipped)} on {node.name} without running: recorded as "
            "skipped by you.",
        )
    else:
        messages.info(request, f"Nothing to skip on {node.name}.")
    return _back(request, node_url(node))


@require_POST
@require_perms(CHANGE)
def node_maintenance(request: HttpRequest, pk: int) -> HttpResponse:
    node = _node_or_404(pk)
    form = MaintenanceForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say whether maintenance goes on or off.")
        return redirect(node_url(node))
    on = form.cleaned_data["on"]
    set_maintenance([node], on)
    if on and node.is_processing:
        messages.success(
            request,
            f"{node.name} is in maintenance: the run of “{node.running_title}” is "
            "finishing, then the panel runs nothing there (Cancel ends it now).",
        )
    elif on:
        messages.success(request, f"{node.name} is in maintenance: the panel runs nothing there.")
    else:
        messages.success(request, f"Maintenance of {node.name} ended; its waiting work runs now.")
    return _back(request, node_url(node))


@require_http_methods(["GET", "POST"])
@require_perms(CHANGE)
def node_accept_key(request: HttpRequest, pk: int) -> HttpResponse:
    """Accept the host key an SSH node presents now (a reinstalled node), after a look.

    GET scans the key and shows old and new fingerprints; the page carries the whole key.
    The POST pins exactly that key, if its fingerprint is the one confirmed and the node
    proves it holds it (``accept_host_key``): never the result of a scan nobody saw.
    """
    node = _node_or_404(pk)
    if node.transport != Transport.SSH:
        messages.info(request, f"{node.name} is a local node: it has no host key.")
        return redirect(node_url(node))
    error = ""
    if request.method == "POST":
        form = AcceptKeyForm(request.POST)
        if form.is_valid():
            try:
                change = accept_host_key(node, form.cleaned_data["key"])
            except HostKeyMismatch as e:
                error = f"{e} Check the fingerprint the node presents now before you accept it."
            except TransportError as e:
                messages.error(request, f"Cannot accept the host key of {node.name}: {e}")
                return redirect(node_url(node))
            else:
                _say_accepted(request, node, change)
                return redirect(node_url(node))
        else:
            error = f"{_form_error_text(form)} Nothing was pinned."
    # A fresh scan, to show (and carry) the key presented now; it is pinned only once the
    # admin confirms it with another POST.
    try:
        presented = scan_host_key(node.host, node.port)
    except TransportError as e:
        messages.error(request, f"Cannot read the host key of {node.name}: {e}")
        return redirect(node_url(node))
    return render(
        request,
        "nodes/accept_key.html",
        {
            "node": node,
            "old_fingerprint": safe_fingerprint(node.host_key),
            "new_fingerprint": fingerprint(presented),
            "key": presented,
            "error": error,
        },
    )


def _say_accepted(request: HttpRequest, node: Node, change: HostKeyChange) -> None:
    if change.changed:
        messages.success(
            request,
            f"Accepted the new host key of {node.name}: old {change.old_fingerprint}, "
            f"new {change.new_fingerprint}. Its waiting synchronizers run now.",
        )
    else:
        messages.info(
            request,
            f"The host key of {node.name} was already {change.new_fingerprint}; "
            "its waiting synchronizers run now.",
        )


def _local_refused(request: HttpRequest, node: Node) -> HttpResponse:
    """403 with the reason: the generic page would tell an operator to become one."""
    return render(
        request, "nodes/local_refused.html", {"node": node, "reason": LOCAL_REFUSED}, status=403
    )


@require_http_methods(["GET", "POST"])
@require_perms(DELETE)
def node_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """A confirmation page (GET), then the deletion (POST)."""
    node = _node_or_404(pk, with_running_title(Node.objects))
    if request.method == "POST":
        name = node.name
        node.delete()
        messages.success(request, f"Deleted the node {name}.")
        return redirect("nodes:list")
    return render(request, "nodes/confirm_delete.html", {"nodes": [node], "single": True})


def node_url(node: Node) -> str:
    return reverse("nodes:detail", args=[node.pk])


# --- Bulk actions ---------------------------------------------------------------------------


@require_POST
@require_perms(VIEW)
def node_bulk(request: HttpRequest) -> HttpResponse:
    """Synchronize again, maintenance on/off, or delete (after a confirmation page).

    The permission depends on the action, so it is checked once the action is known; a user
    who may do none of them gets 403 before anything is read.
    """
    user = request.user
    if not (has_perms(user, CHANGE) or has_perms(user, DELETE)):
        raise PermissionDenied
    list_url = reverse("nodes:list")
    form = BulkActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_error_text(form))
        return _back(request, list_url)
    action = form.cleaned_data["action"]
    check_perms(user, DELETE if action == BulkActionForm.DELETE else CHANGE)
    nodes = form.nodes()
    if not nodes:
        messages.warning(request, "None of the selected nodes exists any more.")
        return _back(request, list_url)
    names = _names(nodes)
    if action == BulkActionForm.DELETE:
        if not form.cleaned_data["confirm"]:
            return render(
                request,
                "nodes/confirm_delete.html",
                {"nodes": nodes, "single": False, "next": request.POST.get("next", "")},
            )
        Node.objects.filter(pk__in=[n.pk for n in nodes]).delete()
        messages.success(request, f"Deleted {len(nodes)} node(s): {names}.")
    elif action == BulkActionForm.RESYNC:
        register_desync(nodes)
        messages.success(
            request, f"Registered every synchronizer type for {len(nodes)} node(s): {names}."
        )
    else:
        on = action == BulkActionForm.MAINTENANCE_ON
        set_maintenance(nodes, on)
        state = "on" if on else "off"
        messages.success(request, f"Maintenance {state} for {len(nodes)} node(s): {names}.")
    return _back(request, list_url)


def _names(nodes: list[Node], limit: int = 10) -> str:
    names = [n.name for n in nodes[:limit]]
    more = len(nodes) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


# --- Add and edit ---------------------------------------------------------------------------


def _panel_key() -> str:
    try:
        return panel_public_key()
    except OSError as e:
        return f"(the panel's key cannot be read: {e})"


def _key_step(presented: str, host: str, port: int, previous: str = "") -> dict:
    """What the confirmation step shows about a scanned host key."""
    return {
        "line": presented,
        "type": presented.split()[0] if presented else "",
        "fingerprint": fingerprint(presented),
        "target": f"{host}:{port}",
        "previous": safe_fingerprint(previous) if previous else "",
    }


def _check_host_key(form, host: str, port: int) -> tuple[str, dict | None]:
    """The host key step shared by add and edit: (key to pin, or '', and what to show).

    No key confirmed yet for this host and port: scan it and show it (nothing pinned yet).
    A key confirmed (carried by the form, parsed there): scan again; a different key is
    reported and shown for a new confirmation, the same one means the confirmed key is
    returned for pinning. The caller then logs in with only that key trusted
    (``check_login``), so a server that does not hold it is refused before anything is
    saved. Unreachable hosts are form errors.
    """
    try:
        presented = scan_host_key(host, port)
    except TransportError as e:
        form.add_error("host", f"Cannot reach {host}:{port}: {e}")
        return "", None
    confirmed = form.confirmed_for(host, port)
    if not confirmed:
        return "", _key_step(presented, host, port)
    if confirmed != presented:
        form.add_error(
            None,
            f"The host key of {host}:{port} changed since it was shown: it was "
            f"{safe_fingerprint(confirmed)}, the node now presents {fingerprint(presented)}. "
            "Check the new fingerprint and confirm again.",
        )
        return "", _key_step(presented, host, port, previous=confirmed)
    return confirmed, None


@require_http_methods(["GET", "POST"])
@require_perms(ADD)
def node_add(request: HttpRequest) -> HttpResponse:
    """Add a node in two steps for SSH: show the host key's fingerprint, then confirm.

    The confirming POST scans the key again (a different key is reported, not pinned),
    logs in with the confirmed key pinned, then saves the node with that key and registers
    every type. Local nodes (the panel's own server) are for superusers only (the form).
    """
    key_step = None
    if request.method == "POST":
        form = NodeAddForm(request.POST, user=request.user)
        if form.is_valid():
            node: Node = form.save(commit=False)
            roles = form.cleaned_data["roles"]
            ready = node.transport == Transport.LOCAL
            if not ready:
                node.host_key, key_step = _check_host_key(form, node.host, node.port)
                if node.host_key:
                    try:
                        check_login(node)
                        ready = True
                    except TransportError as e:
                        form.add_error(None, f"The panel cannot log in: {e}")
                        key_step = _key_step(node.host_key, node.host, node.port)
            if ready:
                try:
                    count = add_node(node, roles)
                except ValidationError as e:
                    form.add_error(None, " ".join(e.messages))
                except IntegrityError:
                    # Another admin saved the same name between the check and the insert.
                    form.add_error("name", "A node with this name was just added.")
                else:
                    messages.success(
                        request,
                        f"Added the node {node.name} ({node.address}); registered {count} "
                        "synchronizer types, the cluster runs them now.",
                    )
                    return redirect(node_url(node))
    else:
        form = NodeAddForm(user=request.user)
    return render(
        request,
        "nodes/node_form.html",
        {"form": form, "key_step": key_step, "panel_key": _panel_key(), "adding": True},
    )


@require_http_methods(["GET", "POST"])
@require_perms(CHANGE)
def node_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Name, roles, maintenance; host, port and user of SSH nodes.

    A new host or port means a new host key to confirm (as when adding); a new user must
    log in before it is saved. Only the edited columns are written: the engine writes the
    node's status and lease at the same time. Local nodes are for superusers only: their
    roles put files, users and packages on the panel's own server.
    """
    node = _node_or_404(pk)
    if node.transport == Transport.LOCAL and not may_manage_local(request.user):
        return _local_refused(request, node)
    title = node.name  # the form changes node.name before it may fail validation
    key_step = None
    if request.method == "POST":
        form = NodeEditForm(request.POST, instance=node)
        if form.is_valid():
            node = form.instance
            ready = True
            fields = ["name"]
            if node.transport == Transport.SSH:
                fields += ["host", "port", "username"]
                if form.address_changed:
                    node.host_key, key_step = _check_host_key(form, node.host, node.port)
                    fields.append("host_key")
                    ready = bool(node.host_key)
                if ready and (form.address_changed or form.username_changed):
                    try:
                        check_login(node)
                    except TransportError as e:
                        form.add_error(None, f"The panel cannot log in: {e}")
                        ready = False
                        if form.address_changed:
                            key_step = _key_step(node.host_key, node.host, node.port)
            if ready:
                try:
                    with transaction.atomic():
                        node.save(update_fields=fields)
                        # A change of roles registers its types (sync.triggers, m2m_changed).
                        node.roles.set(form.cleaned_data["roles"])
                        if form.maintenance_changed:
                            set_maintenance([node], form.cleaned_data["maintenance"])
                        if form.address_changed or form.username_changed:
                            retry_now([node])  # what failed on the old address may work now
                except IntegrityError:
                    # Another admin took the name between the form's check and the save.
                    form.add_error("name", "A node with this name was just saved.")
                else:
                    messages.success(request, f"Saved the node {node.name}.")
                    return redirect(node_url(node))
    else:
        form = NodeEditForm(instance=node)
    return render(
        request,
        "nodes/node_form.html",
        {
            "form": form,
            "key_step": key_step,
            "panel_key": _panel_key(),
            "adding": False,
            "node": node,
            "title": title,
        },
    )

"""What operators do to nodes: the actions on one node, accepting a host key, deleting, and
the bulk actions of the list.

The engine (``sync.engine``) does every change to synchronization state; these views only
validate, call it and say what happened. Every action is a POST (CSRF) answered with a
message and a redirect (``go_back``), so a reload never repeats it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from nodes.access import CHANGE, DELETE, VIEW, check_perms, has_perms, require_perms
from nodes.choices import Transport
from nodes.hostkeys import HostKeyChange, HostKeyMismatch, scan_host_key
from nodes.keys import fingerprint, safe_fingerprint
from nodes.models import Node
from nodes.transports import TransportError
from sync import actions
from sync.models import with_running_title
from sync.rights import NodeChange, node_change_refusals
from web.forms import AcceptKeyForm, BulkActionForm, MaintenanceForm, ResyncForm
from web.views.shortcuts import (
    acting_user,
    form_error_text,
    go_back,
    node_or_404,
    node_url,
    refused_page,
)

# What an action tells the user: a message level (django.contrib.messages) and its text.
Said = tuple[int, str]
NodeAction = Callable[[HttpRequest, Node], Said]


def node_action(
    queryset: Callable[[], QuerySet[Node]] | None = None,
) -> Callable[[NodeAction], Callable[..., HttpResponse]]:
    """Make ``act(request, node) -> (level, text)`` an action view on one node.

    The shape every such action shares, in one place: POST only, the Operators' permission,
    the node loaded (404 when it is gone; ``queryset`` when the message needs more than the
    row), then ``act``, whose message is shown on the page the action came from (``next``)
    or on the node's page.
    """

    def decorate(act: NodeAction) -> Callable[..., HttpResponse]:
        @require_POST
        @require_perms(CHANGE)
        @functools.wraps(act)
        def view(request: HttpRequest, pk: int) -> HttpResponse:
            node = node_or_404(pk, queryset() if queryset else None)
            level, text = act(request, node)
            messages.add_message(request, level, text)
            return go_back(request, node_url(node))

        return view

    return decorate


def _with_running_title() -> QuerySet[Node]:
    return with_running_title(Node.objects)


def _maintenance_note(node: Node) -> str:
    if node.maintenance:
        return " The node is in maintenance: the work waits until maintenance ends."
    return ""


# --- Actions on one node --------------------------------------------------------------------


@node_action()
def node_resync(request: HttpRequest, node: Node) -> Said:
    """Synchronize again: register every type, or one, for the node."""
    form = ResyncForm(request.POST)
    if not form.is_valid():
        return messages.ERROR, f"Nothing registered: {form_error_text(form)}"
    action = form.cleaned_data["action"]
    result = actions.register_work(acting_user(request), [node], [action] if action else None)
    what = f"“{action.title}”" if action else f"{result.count} synchronizer types"
    return (
        messages.SUCCESS,
        f"Registered {what} for {node.name}; the cluster runs them now.{_maintenance_note(node)}",
    )


@node_action()
def node_retry(request: HttpRequest, node: Node) -> Said:
    """Retry now: the node's failed desynchronizations stop waiting for their backoff."""
    result = actions.retry_work(acting_user(request), [node])
    if not result.count:
        return messages.INFO, f"Nothing is waiting on {node.name}: it is in sync."
    return (
        messages.SUCCESS,
        f"{result.count} desynchronization(s) of {node.name} are due now.{_maintenance_note(node)}",
    )


@node_action()
def node_force(request: HttpRequest, node: Node) -> Said:
    """Force completion: take the node from a worker that hangs (``nodesync --force``).

    The interrupted run is recorded as forced, its type goes back to pending and the cluster
    runs it again. The message names the runs the engine recorded as forced.
    """
    done = actions.force_work(acting_user(request), node).first
    if done.outcome == "busy":
        return messages.ERROR, f"Could not take {node.name} over; try again."
    if not done.titles:
        return (
            messages.INFO,
            f"Nothing was running on {node.name}; its waiting work is handed to the cluster.",
        )
    what = ", ".join(f"“{title}”" for title in done.titles)
    return (
        messages.SUCCESS,
        f"Forced completion on {node.name}: the run of {what} was stopped and recorded as "
        "forced; the cluster runs the type again.",
    )


@node_action()
def node_cancel(request: HttpRequest, node: Node) -> Said:
    """Cancel: end the running synchronizer now; its type fails and waits for its retry."""
    ended = actions.cancel_work(acting_user(request), node).first.titles
    if not ended:
        return messages.INFO, f"Nothing is running on {node.name}."
    return (
        messages.SUCCESS,
        f"Cancelled {', '.join(ended)} on {node.name}: recorded as cancelled by you. The "
        "type waits for its next attempt; “Retry now” runs it at once.",
    )


@node_action()
def node_skip(request: HttpRequest, node: Node) -> Said:
    """Skip: drop desynchronizations without running them, for work done by hand."""
    form = ResyncForm(request.POST)
    if not form.is_valid():
        return messages.ERROR, f"Cannot skip: {form_error_text(form)}"
    action = form.cleaned_data["action"]
    skipped = actions.skip_work(acting_user(request), node, [action] if action else None)
    if not skipped.first.titles:
        return messages.INFO, f"Nothing to skip on {node.name}."
    return (
        messages.SUCCESS,
        f"Skipped {', '.join(skipped.first.titles)} on {node.name} without running: recorded "
        "as skipped by you.",
    )


@node_action()
def node_maintenance(request: HttpRequest, node: Node) -> Said:
    """Maintenance on or off; a run already going on finishes (the message says so)."""
    form = MaintenanceForm(request.POST)
    if not form.is_valid():
        return messages.ERROR, "Say whether maintenance goes on or off."
    on, stop = form.cleaned_data["on"], form.cleaned_data["stop"]
    done = actions.set_maintenance(acting_user(request), [node], on, stop_running=stop).first
    if on and done.titles and stop:
        return (
            messages.SUCCESS,
            f"{node.name} is in maintenance: the run of “{done.titles[0]}” was stopped, and "
            "the panel runs nothing there.",
        )
    if on and done.titles:
        return (
            messages.SUCCESS,
            f"{node.name} is in maintenance: the run of “{done.titles[0]}” is "
            "finishing, then the panel runs nothing there (Cancel ends it now).",
        )
    if on:
        return messages.SUCCESS, f"{node.name} is in maintenance: the panel runs nothing there."
    return messages.SUCCESS, f"Maintenance of {node.name} ended; its waiting work runs now."


# --- Accepting a host key, deleting ---------------------------------------------------------


@require_http_methods(["GET", "POST"])
@require_perms(CHANGE)
def node_accept_key(request: HttpRequest, pk: int) -> HttpResponse:
    """Accept the host key an SSH node presents now (a reinstalled node), after a look.

    GET scans the key and shows old and new fingerprints; the page carries the whole key.
    The POST pins exactly that key, if its fingerprint is the one confirmed and the node
    proves it holds it (``accept_host_key``): never the result of a scan nobody saw.
    """
    node = node_or_404(pk)
    if node.transport != Transport.SSH:
        messages.info(request, f"{node.name} is a local node: it has no host key.")
        return redirect(node_url(node))
    # Who may accept a key at all (the panel's own server, the data its roles carry) is
    # known before any scan; whether the key is this machine's own once it is read.
    if refusals := node_change_refusals(request.user, node, NodeChange(accepting_key=True)):
        return refused_page(request, node, refusals[0].message)
    error = ""
    if request.method == "POST":
        form = AcceptKeyForm(request.POST)
        if form.is_valid():
            key = form.cleaned_data["key"]
            if refusals := node_change_refusals(
                request.user, node, NodeChange(accepting_key=True, host_key=key)
            ):
                return refused_page(request, node, refusals[0].message)
            try:
                accepted = actions.accept_host_key(acting_user(request), node, key)
            except HostKeyMismatch as e:
                error = f"{e} Check the fingerprint the node presents now before you accept it."
            except TransportError as e:
                messages.error(request, f"Cannot accept the host key of {node.name}: {e}")
                return redirect(node_url(node))
            else:
                _say_accepted(request, node, accepted.extra["change"])
                return redirect(node_url(node))
        else:
            error = f"{form_error_text(form)} Nothing was pinned."
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


@require_http_methods(["GET", "POST"])
@require_perms(DELETE)
def node_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """A confirmation page (GET), then the deletion (POST)."""
    node = node_or_404(pk, _with_running_title())
    if refusals := node_change_refusals(request.user, node, NodeChange(deleting=True)):
        return refused_page(request, node, refusals[0].message)
    if request.method == "POST":
        actions.delete_nodes(acting_user(request), [node])
        messages.success(request, f"Deleted the node {node.name}.")
        return redirect("nodes:list")
    return render(request, "nodes/confirm_delete.html", {"nodes": [node], "single": True})


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
        messages.error(request, form_error_text(form))
        return go_back(request, list_url)
    action = form.cleaned_data["action"]
    check_perms(user, DELETE if action == BulkActionForm.DELETE else CHANGE)
    nodes = form.nodes()
    if not nodes:
        messages.warning(request, "None of the selected nodes exists any more.")
        return go_back(request, list_url)
    names = _names([n.name for n in nodes])
    if action == BulkActionForm.DELETE:
        kept = [n for n in nodes if node_change_refusals(user, n, NodeChange(deleting=True))]
        if kept:
            messages.error(
                request,
                f"Nothing was deleted: only a superuser may delete the panel's own server "
                f"({_names([n.name for n in kept])}).",
            )
            return go_back(request, list_url)
        if not form.cleaned_data["confirm"]:
            return render(
                request,
                "nodes/confirm_delete.html",
                {"nodes": nodes, "single": False, "next": request.POST.get("next", "")},
            )
        deleted = actions.delete_nodes(acting_user(request), nodes)
        names = _names([n.name for n in deleted.nodes])
        messages.success(request, f"Deleted {deleted.count} node(s): {names}.")
    elif action in BulkActionForm.ROLE_ACTIONS:
        return _bulk_roles(request, form, nodes, list_url)
    elif action == BulkActionForm.RESYNC:
        actions.register_work(acting_user(request), nodes)
        messages.success(
            request, f"Registered every synchronizer type for {len(nodes)} node(s): {names}."
        )
    else:
        stop = action == BulkActionForm.MAINTENANCE_STOP
        on = stop or action == BulkActionForm.MAINTENANCE_ON
        done = actions.set_maintenance(acting_user(request), nodes, on, stop_running=stop)
        state = "on" if on else "off"
        running = [o for o in done.nodes if o.titles]
        ran = (
            f" Stopped the running type on {len(running)} of them."
            if stop and running
            else f" A running type finishes on {len(running)} of them."
            if running
            else ""
        )
        messages.success(request, f"Maintenance {state} for {len(nodes)} node(s): {names}.{ran}")
    return go_back(request, list_url)


def _bulk_roles(
    request: HttpRequest, form: BulkActionForm, nodes: list[Node], list_url: str
) -> HttpResponse:
    """Give or take one role for the selected nodes: first a confirmation that says what will
    happen (how many nodes will synchronize what, as the watches count it), then the action."""
    role = form.cleaned_data["role"]
    giving = form.cleaned_data["action"] == BulkActionForm.GIVE_ROLE
    give, take = ([role], []) if giving else ([], [role])
    acting = acting_user(request)
    try:
        # The rehearsal refuses as the action would (the rights to deliver a role's data).
        rehearsed = actions.change_roles(acting, nodes, give, take, dry_run=True)
    except PermissionDenied as e:
        messages.error(request, f"No role was changed: {e}")
        return go_back(request, list_url)
    if not form.cleaned_data["confirm"]:
        same = {o.node_id for o in rehearsed.nodes if o.outcome == "unchanged"}
        return render(
            request,
            "nodes/confirm_roles.html",
            {
                "nodes": nodes,
                "role": role,
                "giving": giving,
                "changing": [n for n in nodes if n.pk not in same],
                "unchanged": [n for n in nodes if n.pk in same],
                "effect": rehearsed.extra["effect"],
                "next": request.POST.get("next", ""),
            },
        )
    done = actions.change_roles(acting, nodes, give, take)
    changed = [o.name for o in done.nodes if o.outcome != "unchanged"]
    verb = f"Gave the role {role.name} to" if giving else f"Took the role {role.name} from"
    if not changed:
        had = "lacked" if giving else "had"
        messages.info(request, f"Nothing changed: no selected node {had} the role {role.name}.")
        return go_back(request, list_url)
    messages.success(
        request,
        f"{verb} {len(changed)} node(s): {_names(changed)}. {done.extra['effect'].sentence()}",
    )
    return go_back(request, list_url)


def _names(all_names: list[str], limit: int = 10) -> str:
    names = all_names[:limit]
    more = len(all_names) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")

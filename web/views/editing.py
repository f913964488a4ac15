"""Adding and editing a node, with the host key steps they share.

An SSH node is saved only once its host key was shown, confirmed, scanned again unchanged,
and the panel logged in with only that key trusted: a node that is not the one confirmed is
refused before anything is written. Adding and saving go through the actions
(``sync.actions.add_node``, ``edit_node``), as the ``addnode`` command does.
"""

from __future__ import annotations

from dataclasses import replace

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods

from nodes.access import ADD, CHANGE, require_perms
from nodes.choices import Transport
from nodes.hostkeys import check_login, scan_host_keys
from nodes.keys import fingerprint, panel_public_key, safe_fingerprint
from nodes.models import Node
from nodes.onboarding import install_key_command, install_key_with_password
from nodes.transports import TransportError
from sync import actions
from sync.rights import NodeChange, node_change_refusals
from web.forms import (
    HostKeyStepMixin,
    KeyCommandForm,
    NodeAddForm,
    NodeEditForm,
    NodeLinesForm,
    RightsMixin,
)
from web.views.shortcuts import acting_user, node_or_404, node_url, refused_page


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


def _check_host_key(form: HostKeyStepMixin, host: str, port: int) -> tuple[str, dict | None]:
    """The host key step shared by add and edit: (key to pin, or '', and what to show).

    No key confirmed yet for this host and port: scan it and show it (nothing pinned yet).
    A key confirmed (carried by the form, parsed there): scan again; a different key is
    reported and shown for a new confirmation, the same one means the confirmed key is
    returned for pinning. The caller then logs in with only that key trusted
    (``check_login``), so a server that does not hold it is refused before anything is
    saved. Unreachable hosts are form errors. The scan and the comparison are
    ``sync.actions.scan_confirmed_key``, which ``addnode`` and ``acceptkey`` use too.
    """
    confirmed = form.confirmed_for(host, port)
    try:
        presented = actions.scan_confirmed_key(host, port, key=confirmed)
    except TransportError as e:
        # The transport's text already names the address ("unreachable: H:P refused ..."):
        # lead with the page's words once, never "Cannot reach H:P: unreachable: H:P ...".
        reason = str(e).removeprefix("unreachable: ")
        if not reason.startswith(f"{host}:{port}"):
            reason = f"{host}:{port}: {reason}"
        form.add_error("host", f"Cannot reach {reason}")
        return "", None
    except actions.KeyNotConfirmed as e:
        form.add_error(
            None,
            f"The host key of {host}:{port} changed since it was shown: it was "
            f"{e.confirmed_fingerprint}, the node now presents {fingerprint(e.presented)}. "
            "Check the new fingerprint and confirm again.",
        )
        return "", _key_step(e.presented, host, port, previous=confirmed)
    if not confirmed:
        return "", _key_step(presented, host, port)
    return confirmed, None


def _key_refused(form: RightsMixin, node: Node, change: NodeChange, key_step: dict | None) -> bool:
    """The rules that need the scanned key (is it the panel's own server?), asked as soon as
    the key is known: before it is shown for confirmation, and again before anything is saved."""
    key = change.host_key or (key_step or {}).get("line", "")
    if not key:
        return False
    return form.refuse(node_change_refusals(form.user, node, replace(change, host_key=key)))


def _key_command(request: HttpRequest) -> dict:
    """The one-line command of the add page, for the user and addresses asked in the query."""
    form = KeyCommandForm(request.GET or None)
    user, only_from = "root", ""
    if form.is_bound and form.is_valid():
        user = form.cleaned_data["user"] or "root"
        only_from = form.cleaned_data["only_from"]
    try:
        command = install_key_command(user, only_from)
    except (OSError, ValueError) as e:
        command = f"(the panel's key cannot be read: {e})"
    return {"command_form": form, "key_command": command}


def _form_page(request: HttpRequest, form: HostKeyStepMixin, key_step: dict | None, **extra):
    if extra.get("adding"):
        extra.update(_key_command(request))
    return render(
        request,
        "nodes/node_form.html",
        {"form": form, "key_step": key_step, "panel_key": _panel_key(), **extra},
    )


@sensitive_variables("password")
def _install_key(form: NodeAddForm, node: Node) -> str:
    """Install the panel's key with the form's one-time password (the host key confirmed,
    ``node.host_key``, is the only one the connection trusts); the login used, or "" with a
    form error. The password is used here once and is no longer in the form's data after."""
    login = form.cleaned_data["install_login"] or node.username
    password = form.cleaned_data.pop("install_password")
    try:
        install_key_with_password(node, login, password, form.cleaned_data["install_from"])
    except TransportError as e:
        form.add_error("install_password", f"The panel's key was not installed: {e}")
        return ""
    finally:
        del password
    return login


@require_http_methods(["GET", "POST"])
@require_perms(ADD)
@sensitive_post_parameters("install_password")
def node_add(request: HttpRequest) -> HttpResponse:
    """Add a node in two steps for SSH: show the host key's fingerprint, then confirm.

    The confirming POST scans the key again (a different key is reported, not pinned),
    logs in with the confirmed key pinned, then saves the node with that key and registers
    every type. Local nodes (the panel's own server) are for superusers only (the form).
    """
    key_step = None
    if request.method != "POST":
        return _form_page(request, NodeAddForm(user=request.user), key_step, adding=True)
    form = NodeAddForm(request.POST, user=request.user)
    installed_as = ""
    if form.is_valid():
        node: Node = form.save(commit=False)
        ready = node.transport == Transport.LOCAL
        if not ready:
            node.host_key, key_step = _check_host_key(form, node.host, node.port)
            change = NodeChange(adding=True, roles=tuple(form.cleaned_data["roles"]))
            if _key_refused(form, node, replace(change, host_key=node.host_key), key_step):
                node.host_key, key_step = "", None
            if node.host_key and form.cleaned_data["install_password"]:
                installed_as = _install_key(form, node)
                if not installed_as:
                    node.host_key, key_step = "", _key_step(node.host_key, node.host, node.port)
            if node.host_key:
                try:
                    check_login(node)
                    ready = True
                except TransportError as e:
                    form.add_error(None, f"The panel cannot log in: {e}")
                    key_step = _key_step(node.host_key, node.host, node.port)
        if ready:
            try:
                added = actions.add_node(
                    acting_user(request),
                    node,
                    form.cleaned_data["roles"],
                    key_installed_as=installed_as,
                )
            except ValidationError as e:
                form.add_error(None, " ".join(e.messages))
            except IntegrityError:
                # Another admin saved the same name between the check and the insert.
                form.add_error("name", "A node with this name was just added.")
            else:
                messages.success(
                    request,
                    f"Added the node {node.name} ({node.address}); registered {added.count} "
                    "synchronizer types, the cluster runs them now.",
                )
                return redirect(node_url(node))
    return _form_page(request, form, key_step, adding=True)


@require_http_methods(["GET", "POST"])
@require_perms(CHANGE)
def node_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Name, roles, maintenance; host, port and user of SSH nodes.

    A new host or port means a new host key to confirm (as when adding); a new user must
    log in before it is saved. Only the edited columns are written: the engine writes the
    node's status and lease at the same time. Local nodes are for superusers only: their
    roles put files, users and packages on the panel's own server.
    """
    node = node_or_404(pk)
    if refusals := node_change_refusals(request.user, node, NodeChange()):
        return refused_page(request, node, refusals[0].message)
    title = node.name  # the form changes node.name before it may fail validation
    key_step = None
    if request.method != "POST":
        form = NodeEditForm(instance=node, user=request.user)
        return _form_page(request, form, key_step, adding=False, node=node, title=title)
    form = NodeEditForm(request.POST, instance=node, user=request.user)
    if form.is_valid():
        node = form.instance
        ready = True
        fields = ["name"]
        if node.transport == Transport.SSH:
            fields += ["host", "port", "username"]
            if form.address_changed:
                node.host_key, key_step = _check_host_key(form, node.host, node.port)
                change = NodeChange(roles=tuple(form.cleaned_data["roles"]), address=True)
                if _key_refused(form, node, replace(change, host_key=node.host_key), key_step):
                    node.host_key, key_step = "", None
                fields.append("host_key")  # the action flags the panel's own server
                ready = bool(node.host_key)
            if ready and (form.address_changed or form.username_changed):
                try:
                    check_login(node)
                except TransportError as e:
                    form.add_error(None, f"The panel cannot log in: {e}")
                    ready = False
                    if form.address_changed:
                        key_step = _key_step(node.host_key, node.host, node.port)
        if ready and _save_edit(request, form, node, fields):
            messages.success(request, f"Saved the node {node.name}.")
            return redirect(node_url(node))
    return _form_page(request, form, key_step, adding=False, node=node, title=title)


def _save_edit(request: HttpRequest, form: NodeEditForm, node: Node, fields: list[str]) -> bool:
    """Write the edited columns, roles and maintenance together (the edit action); False (a
    form error) when another admin took the name meanwhile."""
    try:
        actions.edit_node(
            acting_user(request),
            node,
            fields,
            roles=form.cleaned_data["roles"],
            maintenance=form.cleaned_data["maintenance"],
            stop_running=form.cleaned_data.get("stop_running", False),
        )
    except IntegrityError:
        # Another admin took the name between the form's check and the save.
        form.add_error("name", "A node with this name was just saved.")
        return False
    return True


# --- Many nodes at once ---------------------------------------------------------------------


def _scan_rows(form: NodeLinesForm) -> list[dict]:
    """Every line's key, scanned at once, as the confirmation page shows it: the fingerprint,
    or why it cannot be read, or why this user may not add that node (the panel's own
    server). Only keys that may be added are carried to the confirming POST."""
    keys = scan_host_keys([e.address for e in form.entries])
    roles = tuple(form.cleaned_data["roles"])
    rows = []
    for entry in form.entries:
        answer = keys[entry.address]
        row = {"entry": entry, "key": "", "fingerprint": "", "type": "", "problem": ""}
        if isinstance(answer, TransportError):
            row["problem"] = f"Cannot be reached: {answer}"
        else:
            node = _with_key(entry.node(), answer)
            change = NodeChange(adding=True, roles=roles, host_key=answer)
            if refusals := node_change_refusals(form.user, node, change):
                row["problem"] = f"Refused: {refusals[0].message}"
            else:
                row.update(key=answer, fingerprint=fingerprint(answer), type=answer.split()[0])
        rows.append(row)
    return rows


def _with_key(node: Node, key: str) -> Node:
    node.host_key = key
    return node


@require_http_methods(["GET", "POST"])
@require_perms(ADD)
def node_add_many(request: HttpRequest) -> HttpResponse:
    """Add many SSH nodes from lines of ``name host[:port] [user]``.

    The first POST checks every line (a form error names each wrong line: nothing is scanned
    then), scans every host key at once and shows them all on one page, with the hosts that
    cannot be reached and why. The confirming POST adds the nodes whose keys were shown
    (``sync.actions.add_nodes``: each key scanned again and refused if it changed, the login
    checked, then one transaction); the others are listed as not added.
    """
    if request.method != "POST":
        return render(request, "nodes/add_many.html", {"form": NodeLinesForm(user=request.user)})
    form = NodeLinesForm(request.POST, user=request.user)
    if not form.is_valid():
        return render(request, "nodes/add_many.html", {"form": form})
    if not form.confirming:
        rows = _scan_rows(form)
        return render(
            request,
            "nodes/add_many.html",
            {
                "form": form,
                "rows": rows,
                "scanned": form.cleaned_data["lines"],
                "confirmable": sum(1 for r in rows if r["key"]),
            },
        )
    keys = form.cleaned_data["confirmed"]
    nodes = [_with_key(e.node(), keys[e.address]) for e in form.entries if e.address in keys]
    skipped = [e for e in form.entries if e.address not in keys]
    done = actions.add_nodes(acting_user(request), nodes, form.cleaned_data["roles"])
    added = [o for o in done.nodes if o.outcome == "added"]
    if added:
        names = ", ".join(o.name for o in added)
        messages.success(
            request,
            f"Added {len(added)} node(s): {names}; registered {done.count} synchronizer types, "
            "the cluster runs them now.",
        )
    for outcome in [o for o in done.nodes if o.outcome != "added"][:20]:
        messages.error(request, f"Not added: {outcome.name}: {outcome.outcome}")
    if skipped:
        names = ", ".join(e.name for e in skipped)
        messages.warning(request, f"Not added (no key shown for them): {names}.")
    return redirect("nodes:list")

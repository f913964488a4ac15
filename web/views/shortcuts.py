"""What every node view needs: the node by its id, its URL, and the way back after an action."""

from __future__ import annotations

from django import forms
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect

from nodes.models import Node
from sync.actor import Actor, actor_for_request

# Ids beyond a signed 64-bit integer cannot name a row: the URL pattern accepts any digits.
_MAX_ID = 2**63 - 1


def node_or_404(pk: int, queryset: QuerySet[Node] | None = None) -> Node:
    """The node, or 404 for any id that names none (also ids too big for the database)."""
    if pk > _MAX_ID:
        raise Http404("No such node.")
    try:
        return (queryset if queryset is not None else Node.objects).get(pk=pk)
    except Node.DoesNotExist:
        raise Http404("No such node.") from None


def node_url(node: Node) -> str:
    return reverse("nodes:detail", args=[node.pk])


def go_back(request: HttpRequest, default: str) -> HttpResponse:
    """After an action: back to the page it came from (``next``) if ours, else ``default``.

    A redirect, so that a reload never repeats the action; an htmx request gets the same
    target as ``HX-Redirect``, since htmx would otherwise swap the whole page into its target.
    """
    target = request.POST.get("next") or request.GET.get("next") or ""
    if not target or not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = default
    if getattr(request, "htmx", False):
        return HttpResponseClientRedirect(target)
    return HttpResponseRedirect(target)


def form_error_text(form: forms.BaseForm) -> str:
    """A form's errors as one sentence, for a message (action forms have no page of their own)."""
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


def acting_user(request: HttpRequest) -> Actor:
    """Who acts, and from where: what every action (``sync.actions``) takes."""
    return actor_for_request(request)


def refused_page(request: HttpRequest, node: Node, reason: str) -> HttpResponse:
    """403 with the reason: the generic page would tell an operator to become one."""
    return render(request, "nodes/local_refused.html", {"node": node, "reason": reason}, status=403)

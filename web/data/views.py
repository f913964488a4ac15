"""The four generic views of the data pages: list, detail, edit (add too) and delete.

Each is given its kind (``web.data.kinds``) in the URLconf. Rights are asked on the server:
the model's view permission to look, add/change/delete to act; a secret file is changed only
by who may view it, and data that reaches the panel's own server only by superusers
(``sync.rights``, asked before the form is shown and again by the action).

A save or a deletion is confirmed first: the action runs as a dry run and the page says what
it will do ("3 nodes will synchronize files"); the second POST, carrying the digest of the
very data confirmed, makes it. Changed data since the confirmation means a new confirmation.
"""

from __future__ import annotations

import hashlib

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import IntegrityError, models
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View

from nodes.models import Role
from sync.actions.data import delete_data, save_data
from sync.rights import stored_data_refusals
from web.data.kinds import KINDS, DataKind, url_of
from web.views.shortcuts import acting_user

PAGE_SIZE = 50
_MAX_ID = 2**63 - 1
SEARCH_CHARS = 100


def confirmation_digest(data) -> str:
    """The digest of a form's POST (without its token and the digest itself): a confirmation
    holds for exactly the data that was shown confirmed."""
    items = sorted(
        (key, values)
        for key, values in data.lists()
        if key not in ("csrfmiddlewaretoken", "confirmed")
    )
    return hashlib.sha256(repr(items).encode()).hexdigest()


def change_refusals(user, row: models.Model | None) -> list[str]:
    """Why ``user`` may not change or delete the stored ``row`` at all (``sync.rights``)."""
    return [] if row is None else stored_data_refusals(user, row)


class KindView(View):
    """A view of one kind: its permission checked before anything else."""

    kind: DataKind | None = None
    verb = "view"

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.has_perm(self.kind.perm(self.verb)):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_object(self, pk: int) -> models.Model:
        if pk > _MAX_ID:
            raise Http404(f"No such {self.kind.singular}.")
        row = self.kind.queryset().filter(pk=pk).first()
        if row is None:
            raise Http404(f"No such {self.kind.singular}.")
        return row

    def context(self, **extra) -> dict:
        return {"kind": self.kind, "kinds": KINDS, **extra}

    def refused(self, request: HttpRequest, row, reasons: list[str]) -> HttpResponse:
        context = self.context(row=row, reasons=reasons)
        return render(request, "data/refused.html", context, status=403)


class ObjectListView(KindView):
    """Searchable (``q``), filtered by role (``role``), paginated."""

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest) -> HttpResponse:
        kind = self.kind
        rows = kind.queryset()
        query = request.GET.get("q", "").strip()[:SEARCH_CHARS]
        if query:
            rows = kind.search(rows, query, request.user)
        role = None
        if role_name := request.GET.get("role", "").strip()[:50]:
            role = Role.objects.filter(name=role_name).first()
            rows = kind.filter_role(rows, role) if role else rows.none()
        page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
        columns = kind.columns()
        table = [(row, [(c.label, c.cell(row)) for c in columns]) for row in page.object_list]
        context = self.context(
            page=page,
            columns=columns,
            table=table,
            query=query,
            role_name=role_name,
            roles=Role.objects.order_by("name").values_list("name", flat=True),
            filtered=bool(query or role_name),
            may_add=request.user.has_perm(kind.perm("add")),
        )
        return render(request, "data/list.html", context)


class ObjectView(KindView):
    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        row = self.get_object(pk)
        user = request.user
        may_change = user.has_perm(self.kind.perm("change"))
        refusals = change_refusals(user, row) if may_change else []
        context = self.context(
            row=row,
            facts=self.kind.facts(row, user),
            sections=self.kind.sections(row, user),
            content=self.kind.content(row, user),
            may_change=may_change and not refusals,
            may_delete=user.has_perm(self.kind.perm("delete")) and not refusals,
            refusals=refusals,
        )
        return render(request, "data/detail.html", context)


class ObjectEditView(KindView):
    """Add (no ``pk``) or edit: form, then its confirmation, then the action."""

    verb = "change"

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if "pk" not in kwargs:
            self.verb = "add"
        return super().dispatch(request, *args, **kwargs)

    def page(self, request, form, row, status: int = 200, **extra) -> HttpResponse:
        context = self.context(form=form, row=row, adding=row is None, **extra)
        return render(request, "data/edit.html", context, status=status)

    def get(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        row = self.get_object(pk) if pk is not None else None
        if reasons := change_refusals(request.user, row):
            return self.refused(request, row, reasons)
        return self.page(request, self.kind.form(request.user, instance=row), row)

    def post(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        row = self.get_object(pk) if pk is not None else None
        if reasons := change_refusals(request.user, row):
            return self.refused(request, row, reasons)
        form = self.kind.form(request.user, request.POST, instance=row)
        if not form.is_valid():
            return self.page(request, form, row)
        digest = confirmation_digest(request.POST)
        confirmed = request.POST.get("confirmed") == digest
        try:
            result = save_data(acting_user(request), form, dry_run=not confirmed)
        except PermissionDenied as e:
            form.add_error(None, str(e) or "You may not make this change.")
            return self.page(request, form, row, status=403)
        except IntegrityError:
            form.add_error(None, "Another change was saved meanwhile; check the form again.")
            return self.page(request, form, row)
        effect = result.extra["effect"]
        if not confirmed:
            return self.page(request, form, row, effect=effect, digest=digest)
        saved = result.extra["row"]
        verb = "Added" if row is None else "Saved"
        messages.success(request, f"{verb} {self.kind.singular} {saved}. {effect.sentence()}")
        return redirect(url_of(saved))


class ObjectDeleteView(KindView):
    """GET: what deleting will do (a dry run of the action); POST: delete."""

    verb = "delete"

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        row = self.get_object(pk)
        if reasons := change_refusals(request.user, row):
            return self.refused(request, row, reasons)
        try:
            result = delete_data(acting_user(request), [row], dry_run=True)
        except PermissionDenied as e:
            return self.refused(request, row, [str(e)])
        effect = result.extra["effect"]
        context = self.context(row=row, effect=effect, removal=self.kind.removal([row], effect))
        return render(request, "data/delete.html", context)

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        row = self.get_object(pk)
        if reasons := change_refusals(request.user, row):
            return self.refused(request, row, reasons)
        name = str(row)
        try:
            result = delete_data(acting_user(request), [row])
        except PermissionDenied as e:
            return self.refused(request, row, [str(e)])
        effect = result.extra["effect"]
        messages.success(request, f"Deleted {self.kind.singular} {name}. {effect.sentence()}")
        return redirect(reverse(f"data:{self.kind.slug}_list"))

"""The audit trail page (``/audit/``): who did what, when, from where, on which nodes or data.

Read-only users see it too: it shows what was done, never a secret (entries hold names,
fingerprints and checksums, not content; a secret row's not even its checksum). The before
and after of managed data are shown only to users who may view that data. Filters are a GET
form; a bad value is shown as a form error and ignored, never a 500.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from nodes.access import VIEW, require_perms
from sync.audit import entries, may_see_changes
from web.forms import AuditFilterForm

PAGE_SIZE = 50


@require_GET
@require_perms(VIEW)
def audit_list(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_filters() if form.is_bound else {}
    paginator = Paginator(entries(**filters).select_related(None), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    rows = list(page.object_list)
    for entry in rows:
        entry.changes_shown = may_see_changes(request.user, entry)
    return render(
        request,
        "audit/list.html",
        {"form": form, "page": page, "entries": rows, "filtered": bool(filters)},
    )

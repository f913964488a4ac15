"""The audit trail page (``/audit/``): who did what, when, from where, on which nodes or data.

Read-only users see it too: it shows what was done, never a secret (entries hold names,
fingerprints and checksums, not content; a secret row's not even its checksum). The before
and after of managed data are shown only to users who may view that data. Filters are a GET
form; a bad value is shown as a form error and ignored, never a 500.
"""

from __future__ import annotations

from django.conf import settings
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from nodes.access import VIEW, require_perms
from sync.alerts.history import channel_labels, digests
from sync.audit import entries, may_see_changes
from web.forms import AuditFilterForm

PAGE_SIZE = 50
DIGESTS_PAGE_SIZE = 20
# The audit page shows the newest alert digests above the actions; the alerts page has all.
LATEST_DIGESTS = 3


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
    node = filters.get("node", "")
    return render(
        request,
        "audit/list.html",
        {
            "form": form,
            "page": page,
            "entries": rows,
            "filtered": bool(filters),
            "digests": list(digests(node=node)[:LATEST_DIGESTS]),
            "node": node,
        },
    )


@require_GET
@require_perms(VIEW)
def audit_alerts(request: HttpRequest) -> HttpResponse:
    """The alert digests that were made, newest first, and what became of each on each
    channel; ``?node=NAME``: only those naming that node."""
    node = request.GET.get("node", "").strip()[:63]
    page = Paginator(digests(node=node), DIGESTS_PAGE_SIZE).get_page(request.GET.get("page"))
    channels, channel_problem = channel_labels()
    return render(
        request,
        "audit/alerts.html",
        {
            "page": page,
            "digests": list(page.object_list),
            "node": node,
            "channels": channels,
            "channel_problem": channel_problem,
            "digest_seconds": settings.PANEL_ALERT_DIGEST_SECONDS,
        },
    )

"""``/metrics`` for Prometheus: what ``sync.metrics`` reads, to a token or an allowed address.

Node names and the fleet's troubles are not for anyone who reaches the panel, and Prometheus
sends no login cookie. So the page opens to a client whose address is in
``PANEL_METRICS_ALLOW`` (the panel's one resolver, ``panel.clientaddr``, through the trusted
proxies: a header a client writes itself moves nothing), or to an API token
(``Authorization: Bearer panel_...``, ``sync.tokens``; a read-only one does) whose rights let
it view nodes. Anyone else gets 403; wrong tokens count towards the API's throttle of
guessing (``api.auth``), 429 past it.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder

from api.auth import GUESS_LIMIT, client_address, count_guess, guesses
from panel.clientaddr import in_networks
from sync.metrics import PanelCollector
from sync.tokens import TokenRights, find_token

VIEW_NODES = "nodes.view_node"


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """Why the request may not read the metrics (a 403 or 429 answer), or None."""
    address = client_address(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not scheme and in_networks(address, settings.PANEL_METRICS_ALLOW):
        return None
    if not scheme:
        return _plain(
            403,
            "Send an API token (Authorization: Bearer ...) or list this client's "
            "address in PANEL_METRICS_ALLOW.",
        )
    if guesses(address) >= GUESS_LIMIT:
        return _plain(429, "Too many wrong tokens from this address: try again later.")
    row = find_token(token.strip()) if scheme.lower() == "bearer" else None
    if row is None:
        count_guess(address)
        return _plain(403, "The token is not valid (revoked, or never made).")
    if not TokenRights(row.user, row.read_only).has_perm(VIEW_NODES):
        return _plain(403, "The token's user may not view nodes.")
    return None


def _plain(status: int, text: str) -> HttpResponse:
    return HttpResponse(text + "\n", status=status, content_type="text/plain; charset=utf-8")


@login_not_required
@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if (refusal := _refusal(request)) is not None:
        return refusal
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(PanelCollector()), content_type=content_type)

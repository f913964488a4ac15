"""Parts of the list page rendered once for what they show, then taken from each process's
memory (``CACHES["rows"]``, beside the rows, ``web.rows``).

The list page polls and is reloaded often, and most of its parts (the filter form, the counts,
the sortable headers, the pagination) are the same from one view to the next, while each costs
a few hundred microseconds to a few milliseconds of template rendering. Each is kept under
everything it is drawn from (the caller names it: the query, the counts' values, the roles
offered...), the language and the time zone: a new value is another key, so a fragment is
never shown stale and nothing has to be invalidated.
"""

from __future__ import annotations

import hashlib

from django.core.cache import caches
from django.http import HttpRequest
from django.template.loader import get_template
from django.utils import timezone, translation
from django.utils.safestring import SafeString, mark_safe

from web.rows import CACHE


def cached_fragment(
    template_name: str, context: dict, drawn_from: object, request: HttpRequest | None = None
) -> SafeString:
    """``template_name`` rendered with ``context`` (and ``request``, for tags that read it),
    or the same rendering kept from before.

    ``drawn_from`` must hold every value the template reads (its ``repr`` is the key): leaving
    one out would show one view's fragment in another."""
    zone = timezone.get_current_timezone_name()
    text = repr((template_name, drawn_from, translation.get_language(), zone))
    key = "fragment:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    cache = caches[CACHE]
    html = cache.get(key)
    if html is None:
        html = get_template(template_name).render(context, request)
        cache.set(key, html)
    return mark_safe(html)  # noqa: S308 - a rendered template


def query_of(request: HttpRequest) -> list[tuple[str, list[str]]]:
    """The request's query, in a stable order, for a fragment's key."""
    return sorted(request.GET.lists())

"""The list's rows, each rendered once for what it shows and then taken from a cache.

Fifty rows of the Cluster nodes table are most of the list page's time (a Status cell, roles,
an error cut at a word, the facts: some sixty template nodes a row), while between two views
of a large fleet's first page few rows change. A row's HTML is a function of the node's
loaded values alone (``nodes/_row.html`` is included with ``only``): so it is cached under a
hash of every value the node was loaded with (its fields, the annotations the table query
adds, its roles), whether the viewer gets the selection boxes, the language and time zone,
and the current minute, so texts relative to now ("3 days ago") are at most a minute old.
A new value of any of them is another key: a row is never shown stale, and nothing has to be
invalidated. The cache is each process's own memory (``CACHES["rows"]``, bounded).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

from django.core.cache import caches
from django.template.loader import get_template
from django.utils import timezone, translation
from django.utils.safestring import SafeString, mark_safe

from nodes.models import Node

ROW_TEMPLATE = "nodes/_row.html"
CACHE = "rows"


def _row_key(node: Node, can_bulk: bool, salt: str) -> str:
    loaded = [
        (k, v) for k, v in node.__dict__.items() if not k.startswith("_") and k != "row_roles"
    ]
    roles = [(r.pk, r.name) for r in node.row_roles]  # read with the rows (sync.fleet)
    text = repr((loaded, roles, can_bulk, salt))
    return "row:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def render_rows(nodes: Iterable[Node], can_bulk: bool) -> SafeString:
    """The table's rows for ``nodes``, rendering only those not seen with these values."""
    nodes = list(nodes)
    salt = (
        f"{int(time.time() // 60)}:{translation.get_language()}:"
        f"{timezone.get_current_timezone_name()}"
    )
    keys = [_row_key(node, can_bulk, salt) for node in nodes]
    cache = caches[CACHE]
    found = cache.get_many(keys)
    missing = {}
    template = get_template(ROW_TEMPLATE)
    for node, key in zip(nodes, keys, strict=True):
        if key not in found:
            found[key] = missing[key] = template.render({"node": node, "can_bulk": can_bulk})
    if missing:
        cache.set_many(missing)
    return mark_safe("".join(found[key] for key in keys))  # noqa: S308 - rendered templates

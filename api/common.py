"""What every endpoint shares: the acting token's actor, the rights check, a node by id, the
error responses the schema declares, and a page of a queryset."""

from __future__ import annotations

import math

from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from ninja import Router

from api.errors import ApiError
from api.schemas import Error
from nodes.access import check_perms
from nodes.models import Node
from sync.actor import Actor

# The refusals every operation may answer, declared so the schema tells clients (and
# schemathesis checks) what each looks like.
REFUSALS = {
    400: Error,
    401: Error,
    403: Error,
    404: Error,
    409: Error,
    422: Error,
    429: Error,
}

MAX_PAGE_SIZE = 500

# One router for every operation: ninja gives each router its own URL patterns, so two
# routers serving one path (GET and POST /nodes) would hide one method behind the other.
router = Router()


def actor(request: HttpRequest, *perms: str) -> Actor:
    """The token's actor, after checking it holds ``perms`` (the pages' permission rules,
    asked of the token's rights: the lesser of the user's and the token's scope)."""
    acting: Actor = request.actor
    check_perms(acting.subject, *perms)
    return acting


def node_or_404(pk: int, queryset: QuerySet[Node] | None = None) -> Node:
    try:
        return (queryset if queryset is not None else Node.objects).get(pk=pk)
    except Node.DoesNotExist:
        raise Http404("No such node.") from None


def page_of(qs: QuerySet, page: int, page_size: int) -> dict:
    """One page of ``qs``: its items, the count and the number of pages (a page past the end
    is empty, not an error)."""
    count = qs.count()
    pages = max(1, math.ceil(count / page_size))
    start = (page - 1) * page_size
    return {
        "count": count,
        "page": page,
        "pages": pages,
        "items": list(qs[start : start + page_size]),
    }


def bad(field: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, message, field)

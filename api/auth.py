"""Who calls the API: a bearer token (``sync.tokens``), never a session cookie.

No cookie means no CSRF to defend against: a page on another site cannot make a browser send
the ``Authorization`` header. Every request is authenticated here (the panel's login
middleware leaves ``/api/`` alone: it would redirect to the login page), answered 401 in JSON
without a valid token, 403 when a read-only token asks to write, and 429 when its client
address guessed wrong too often (``panel.clientaddr``'s resolver, through the trusted
proxies; counted in the panel's database cache, so every worker process sees the same count).
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils.module_loading import import_string
from ninja.security import HttpBearer

from sync.actor import Actor
from sync.models import ApiToken
from sync.tokens import find_token

# Wrong tokens a client address may present per window before it is refused without a look.
GUESS_LIMIT = 20
GUESS_WINDOW = 300  # seconds
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class TooManyGuesses(Exception):
    """The address presented too many wrong tokens lately (429)."""


def client_address(request: HttpRequest) -> str:
    """The client's address by the panel's one resolver (the one the login lockout uses)."""
    return import_string(settings.AXES_CLIENT_IP_CALLABLE)(request) or ""


def _guess_key(address: str) -> str:
    return f"api-token-guesses:{address}"


def guesses(address: str) -> int:
    """Wrong tokens the address presented in the current window."""
    return cache.get(_guess_key(address), 0)


def count_guess(address: str) -> None:
    """One more wrong token from the address (in the shared cache: every process sees it)."""
    key = _guess_key(address)
    if not cache.add(key, 1, GUESS_WINDOW):
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, GUESS_WINDOW)


class TokenAuth(HttpBearer):
    """``Authorization: Bearer panel_...``: sets ``request.actor`` for the action layer."""

    def __call__(self, request: HttpRequest):
        address = client_address(request)
        if guesses(address) >= GUESS_LIMIT:
            raise TooManyGuesses
        request.api_address = address
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        row = find_token(token)
        if row is None:
            count_guess(request.api_address)
            return None
        if row.read_only and request.method not in SAFE_METHODS:
            raise PermissionDenied("This token is read-only: it may not change anything.")
        request.actor = Actor.for_token(row, address=request.api_address)
        return row

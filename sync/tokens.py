"""API tokens: making one, finding the token a request presents, and what it may do.

A token is ``panel_<prefix>_<secret>`` (a random 8-character prefix, a 256-bit secret). Only
the prefix and the SHA-256 of the whole token are stored (``sync.models.ApiToken``): the
database's reader learns nothing that opens the API, and the plain token is shown once. A
token's rights are the lesser of its user's and its scope: ``TokenRights`` answers the
permission questions of ``nodes.access`` and ``sync.rights`` as the user would, except that
a read-only token holds only ``view_*`` permissions and is never a superuser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.utils import timezone

from sync.models import ApiToken

PREFIX = "panel_"
# Longer than any token made here: a header of megabytes is not hashed.
MAX_TOKEN_LENGTH = 100


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token_text() -> tuple[str, str]:
    """A fresh token and its lookup prefix."""
    prefix = secrets.token_hex(4)
    return f"{PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def split_prefix(token: str) -> str:
    """The lookup prefix of a presented token ("" when it has not the shape of one)."""
    if len(token) > MAX_TOKEN_LENGTH or not token.startswith(PREFIX):
        return ""
    prefix, sep, secret = token[len(PREFIX) :].partition("_")
    return prefix if sep and secret and len(prefix) == 8 else ""


def find_token(token: str) -> ApiToken | None:
    """The live token row ``token`` opens (not revoked, its user active), or None.

    The digest is compared in constant time; the last-used time is written at most once a
    minute, so a busy script does not write a row per request.
    """
    prefix = split_prefix(token)
    if not prefix:
        return None
    row = (
        ApiToken.objects.select_related("user")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )
    if row is None or not hmac.compare_digest(row.digest, digest(token)):
        return None
    if not row.user.is_active:
        return None
    now = timezone.now()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now
    return row


class TokenRights:
    """The rights the rules ask for a token's requests: the user's, narrowed by its scope.

    Quacks like the user for ``has_perm`` and ``is_superuser``, which is all the rules of
    ``nodes.access`` and ``sync.rights`` ask.
    """

    is_active = True
    is_authenticated = True

    def __init__(self, user, read_only: bool) -> None:
        self.user = user
        self.read_only = read_only

    @property
    def is_superuser(self) -> bool:
        return bool(self.user.is_superuser) and not self.read_only

    @property
    def is_staff(self) -> bool:
        return bool(self.user.is_staff) and not self.read_only

    def _allowed(self, perm: str) -> bool:
        return not self.read_only or perm.partition(".")[2].startswith("view_")

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return self._allowed(perm) and self.user.has_perm(perm, obj)

    def has_perms(self, perms, obj: object = None) -> bool:
        return all(self.has_perm(p, obj) for p in perms)

    def get_username(self) -> str:
        return self.user.get_username()

    @property
    def pk(self):
        return self.user.pk

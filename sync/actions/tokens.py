"""Making and revoking API tokens, with their audit entries.

A user makes and revokes their own tokens (the account page); ``manage.py apitoken`` makes
them for anyone (the machine's administrator). The plain token is returned once, in
``extra["token"]``, and never stored or written to the trail.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from sync.actions.results import Act, ActionResult
from sync.actor import Actor, ActorKind
from sync.audit import Target, record
from sync.models import ApiToken
from sync.tokens import digest, new_token_text

NAME_MAX = ApiToken._meta.get_field("name").max_length


def _check_owner(actor: Actor, user) -> None:
    """A person acts on their own tokens only; a command on anyone's."""
    if actor.kind == ActorKind.USER and getattr(actor.user, "pk", None) != user.pk:
        raise PermissionDenied("You may only make and revoke your own API tokens.")


def _target(token: ApiToken) -> Target:
    return Target("API token", token.pk, f"{token.user.get_username()}: {token.name}")


def create_token(actor: Actor, user, name: str, read_only: bool = False) -> ActionResult:
    """A new token for ``user``; ``extra["token"]`` is the plain token, to show once.

    Raises ValidationError (no name, too long, or a live token of that user has it) or
    PermissionDenied (another user's token asked at a page).
    """
    _check_owner(actor, user)
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise ValidationError({"name": f"A token needs a name of 1 to {NAME_MAX} characters."})
    if not user.is_active:
        raise ValidationError({"user": f"The user {user.get_username()} is not active."})
    text, prefix = new_token_text()
    with transaction.atomic():
        if ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
            raise ValidationError({"name": f"{user.get_username()} already has a token {name}."})
        token = ApiToken.objects.create(
            user=user, name=name, prefix=prefix, digest=digest(text), read_only=read_only
        )
        entry = record(
            actor,
            Act.TOKEN_CREATE,
            [_target(token)],
            summary=f"Made the {token.scope} API token {name} for {user.get_username()}.",
            after={"name": name, "prefix": prefix, "scope": token.scope},
        )
    return ActionResult(Act.TOKEN_CREATE, entry.pk, (), extra={"token": text, "row": token})


def revoke_token(actor: Actor, token: ApiToken) -> ActionResult:
    """Revoke ``token`` now: its next request is refused (401). Revoking twice is harmless."""
    _check_owner(actor, token.user)
    with transaction.atomic():
        was = token.revoked_at
        if was is None:
            token.revoked_at = timezone.now()
            ApiToken.objects.filter(pk=token.pk).update(revoked_at=token.revoked_at)
        entry = record(
            actor,
            Act.TOKEN_REVOKE,
            [_target(token)],
            summary=f"Revoked the API token {token.name} of {token.user.get_username()}."
            if was is None
            else f"The API token {token.name} was already revoked.",
        )
    return ActionResult(Act.TOKEN_REVOKE, entry.pk, (), extra={"row": token})

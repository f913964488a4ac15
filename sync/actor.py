"""Who acts: a person at a page or the admin, ``manage.py`` run by someone, or the cluster.

Every action (``sync.actions``) takes an ``Actor``: the rights rules (``sync.rights``) ask its
``subject``, the audit trail records its kind, name, user and address, and the run history
keeps the short ``label`` it has always shown ("By admin.").
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field

from django.conf import settings
from django.db import models
from django.http import HttpRequest
from django.utils.module_loading import import_string


class ActorKind(models.TextChoices):
    USER = "user", "User"
    COMMAND = "command", "Command"
    CLUSTER = "cluster", "Cluster"


class _Everything:
    """A command's or the cluster's rights: every right, like a superuser.

    The machine's administrator runs ``manage.py`` (they hold the database and the key
    anyway); the cluster acts on rules already checked when the work was asked for.
    Commands still pass through the same rules, so a rule that one day depends on more than
    permissions is asked for them too.
    """

    is_superuser = True
    is_active = True
    is_authenticated = True
    is_staff = True

    def __init__(self, name: str) -> None:
        self.name = name

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return True

    def has_perms(self, perms, obj: object = None) -> bool:
        return True

    def get_username(self) -> str:
        return self.name


@dataclass(frozen=True)
class Actor:
    """The acting party of one action."""

    kind: str
    name: str
    user: object | None = field(default=None, compare=False)
    address: str = ""
    via: str = ""  # the command's name, or "token NAME", for the history's label
    # What the rights rules ask instead of ``user`` (an API token's narrower rights).
    rights: object | None = field(default=None, compare=False)

    @classmethod
    def for_user(cls, user, address: str = "") -> Actor:
        return cls(ActorKind.USER, user.get_username(), user=user, address=address)

    @classmethod
    def for_token(cls, token, address: str = "") -> Actor:
        """A user acting through an API token (``sync.models.ApiToken``): the audit entry
        names the user and the token ("alice (token ci)"), the rules ask the token's rights,
        never more than the user's (``sync.tokens.TokenRights``)."""
        from sync.tokens import TokenRights  # sync.tokens imports the models, which import us

        user = token.user
        return cls(
            ActorKind.USER,
            user.get_username(),
            user=user,
            address=address,
            via=f"token {token.name}",
            rights=TokenRights(user, read_only=token.read_only),
        )

    @classmethod
    def command(cls, command: str) -> Actor:
        """``manage.py COMMAND`` run by the operating-system user running it."""
        return cls(ActorKind.COMMAND, _os_user(), via=command)

    @classmethod
    def cluster(cls) -> Actor:
        return cls(ActorKind.CLUSTER, "cluster")

    @property
    def subject(self):
        """Whom the rights rules ask: the user, or every right for a command or the cluster."""
        if self.kind == ActorKind.USER:
            return self.rights if self.rights is not None else self.user
        return _Everything(self.label)

    @property
    def label(self) -> str:
        """How the run history names who acted: the user name, "root (nodesync)", or
        "alice (token ci)"."""
        if self.via:
            return f"{self.name} ({self.via})"
        return self.name


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's random uid)
        return f"uid {os.getuid()}"


def actor_for_request(request: HttpRequest) -> Actor:
    """The logged-in user of ``request`` and where they are, by the panel's one client-address
    resolver (the one django-axes asks, ``AXES_CLIENT_IP_CALLABLE``): behind the proxy,
    ``REMOTE_ADDR`` is the proxy's."""
    resolver = getattr(settings, "AXES_CLIENT_IP_CALLABLE", None)
    address = import_string(resolver)(request) if resolver else request.META.get("REMOTE_ADDR", "")
    return Actor.for_user(request.user, address=address or "")

"""Who may do what on the web pages, decided on the server with Django permissions.

Two groups are created after every ``migrate``: **Operators** act on nodes (change, add,
delete) and **Read-only** users only look. Templates hide what a user may not do, but the
views check again, so a hand-made POST from a read-only user gets 403 like any other.

The rules that look further than a permission (the panel's own server, the data a user may
send to a node) are the synchronization's: ``sync.rights``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.apps import apps as global_apps
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

VIEW = "nodes.view_node"
CHANGE = "nodes.change_node"
ADD = "nodes.add_node"
DELETE = "nodes.delete_node"

OPERATORS = "Operators"
READ_ONLY = "Read-only"

# The fleet's data: roles and the rows the synchronizer types carry (app label, model name).
DATA_MODELS = [
    ("nodes", "role"),
    ("sync", "managedfile"),
    ("sync", "manageduser"),
    ("sync", "package"),
    ("sync", "service"),
]

# Group name -> (app label, codename) of each permission it holds.
GROUP_PERMISSIONS: dict[str, list[tuple[str, str]]] = {
    OPERATORS: [
        ("nodes", "view_node"),
        ("nodes", "add_node"),
        ("nodes", "change_node"),
        ("nodes", "delete_node"),
        ("nodes", "view_role"),
        # Placing nodes in roles is the operators' job, and giving a role delivers its data
        # (sync.rights), so they see the data of roles; a secret file's content stays with
        # ``view_secret_managedfile``, which no group holds by default.
        ("sync", "view_managedfile"),
        ("sync", "view_manageduser"),
        ("sync", "view_package"),
        ("sync", "view_service"),
        # The fleet's data is theirs to keep: roles and what they carry, on the panel's own
        # pages (sync.actions.data; what reaches the panel's own server stays superusers').
        *[
            (app, f"{verb}_{model}")
            for app, model in DATA_MODELS
            for verb in ("add", "change", "delete")
        ],
    ],
    # Read-only users look at the data too (paths, modes, owners, roles, plain content); a
    # secret file's content needs ``view_secret_managedfile``.
    READ_ONLY: [("nodes", "view_node"), *[(app, f"view_{model}") for app, model in DATA_MODELS]],
}

View = Callable[..., HttpResponse]


def can_view(user) -> bool:
    """Seeing the pages needs ``view_node``; ``change_node`` implies it, as in the admin."""
    return user.has_perm(VIEW) or user.has_perm(CHANGE)


def has_perms(user, *perms: str) -> bool:
    """Whether ``user`` holds every one of ``perms`` (``VIEW`` also passes with ``CHANGE``)."""
    return all(can_view(user) if perm == VIEW else user.has_perm(perm) for perm in perms)


def check_perms(user, *perms: str) -> None:
    """Raise PermissionDenied (403) unless ``user`` holds every one of ``perms``."""
    if not has_perms(user, *perms):
        raise PermissionDenied


def require_perms(*perms: str) -> Callable[[View], View]:
    """Answer 403 unless the user holds every one of ``perms`` (all of them, not any).

    Used on every view: login is already enforced by ``LoginRequiredMiddleware``, this is the
    second gate that tells readers from operators.
    """

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            check_perms(request.user, *perms)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def ensure_groups(using: str = "default", apps=global_apps, **kwargs) -> None:
    """Create the Operators and Read-only groups with their permissions; safe to run again.

    Connected to ``post_migrate`` (``NodesConfig.ready``). Permissions an admin added to a
    group by hand are kept: this only adds what is missing.
    """
    try:
        group_model = apps.get_model("auth", "Group")
        permission_model = apps.get_model("auth", "Permission")
    except LookupError:
        return  # auth is not installed (or not migrated yet in this state)
    for group_name, wanted in GROUP_PERMISSIONS.items():
        group, _ = group_model.objects.using(using).get_or_create(name=group_name)
        codenames = [codename for _, codename in wanted]
        labels = {label for label, _ in wanted}
        perms = permission_model.objects.using(using).filter(
            content_type__app_label__in=labels, codename__in=codenames
        )
        group.permissions.add(*perms)

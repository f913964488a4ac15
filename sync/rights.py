"""Who may change which node and deliver which data: each rights rule is one function here.

The pages, the admin and the commands call these (and the action layer will), so a rule is
written once and no door forgets it. Two rules:

- **The panel's own server** (``is_panel_host``: a local node, or an SSH node pinning one of
  this machine's host keys): its roles put files, users and packages on the host that holds
  the database and the key to every node, so only superusers change it, give it roles, delete
  it, accept a key for it, or point a node at it (its host and port, or a key that proves to
  be this machine's own). Looking at it, synchronizing it again and its maintenance stay
  with operators: they change nothing that lands there.
- **Data that lands on the panel's own server**: a row of managed data that the panel's own
  server receives, and any change of data or of a role (its rows, its links, a deletion) that
  the watches find concerns that server, is changed by superusers only, for the same reason;
  ``stored_data_refusals`` asks it of the row, ``data_panel_host_refusals`` of the nodes a
  change concerns, as ``sync.watching`` counts them.
- **Data a user may deliver**: a node receives the data of its roles (files, users, packages,
  services: whatever the synchronizer types carry). Giving a node a role, adding a node with
  roles, moving an SSH node (host, port, user) or accepting a new key for it sends that data
  to a machine the user chose, so each needs the view permission of every kind of data those
  roles carry, and ``view_secret`` where a secret file is among them.

Each rule takes the ``subject`` of the acting ``sync.actor.Actor``: a user, or every right for
a command or the cluster. The permission constants and the groups stay with the inventory
(``nodes.access``); the actions ask these rules through ``sync.actions.rules``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import models

from nodes.choices import Transport
from nodes.models import Node, Role
from sync.panelhost import is_panel_host_key
from sync.synchronizers import REGISTRY

# Whom a rule asks: a user (``has_perm``, ``is_superuser``), or the every-right subject of a
# command or the cluster (``sync.actor.Actor.subject``).
Subject = Any

SECRET_FIELD = "secret"

PANEL_HOST_REFUSED = (
    "Only a superuser may change the panel's own server (a local node, or the node whose host "
    "key is this machine's): the files, users and packages of its roles would land where the "
    "panel and its keys live."
)
LOCAL_REFUSED = (
    "Only a superuser may add or change a local node: it is the panel's own server, and the "
    "files, users and packages of its roles would land there."
)
POINTS_AT_PANEL_HOST = (
    "Only a superuser may point a node at the panel's own server ({where}): the files, users "
    "and packages of its roles would land where the panel and its keys live."
)


@dataclass(frozen=True)
class Refusal:
    """Why a change is not allowed, and the form field it belongs to (None: the whole form)."""

    field: str | None
    message: str


@dataclass(frozen=True)
class NodeChange:
    """What an action does to a node, as far as the rules care.

    ``roles`` is the node's set of roles after the change when the action sets it (None: the
    roles stay); ``address`` a new host, port or user; ``accepting_key`` a new host key for the
    node; ``host_key`` a key about to be pinned, when it is known (adding, a new address,
    accepting a key); ``deleting`` the node goes.
    """

    adding: bool = False
    roles: tuple[Role, ...] | None = None
    address: bool = False
    accepting_key: bool = False
    host_key: str = ""
    deleting: bool = False


# --- The panel's own server ------------------------------------------------------------------


def may_manage_panel_host(user: Subject) -> bool:
    """Whether ``user`` may change the panel's own server or point a node at it."""
    return bool(getattr(user, "is_superuser", False))


def is_panel_host(node: Node) -> bool:
    """A local node is the panel's own server by definition; an SSH node when flagged."""
    return node.transport == Transport.LOCAL or node.is_panel_host


def panel_host_q() -> models.Q:
    """``is_panel_host`` in SQL: the nodes among which the panel's own server is."""
    return models.Q(transport=Transport.LOCAL) | models.Q(is_panel_host=True)


def data_panel_host_refusals(user: Subject, node_ids: Iterable[int]) -> list[str]:
    """Why ``user`` may not make a change of managed data that concerns these nodes: one of
    them is the panel's own server (empty: allowed)."""
    node_ids = list(node_ids)
    if may_manage_panel_host(user) or not node_ids:
        return []
    hosts = Node.objects.filter(panel_host_q(), pk__in=node_ids).values_list("name", flat=True)
    if not (names := sorted(hosts)):
        return []
    return [
        f"Only a superuser may make this change: it reaches the panel's own server "
        f"({', '.join(names)}), where the panel and its keys live."
    ]


def stored_data_refusals(user: Subject, row: models.Model) -> list[str]:
    """Why ``user`` may not change or delete the stored ``row`` at all (empty: they may try;
    the change itself is asked again): a secret file they may not view, or a row the panel's
    own server receives. A role is judged by what its change does (its nodes' own rules and
    the nodes the change concerns), not by whom it reaches: giving the panel's role to other
    nodes leaves the panel's server as it is."""
    refusals = data_change_refusals(user, row, row)
    if not isinstance(row, Role):
        nodes = receiving_nodes(row).values_list("pk", flat=True)
        refusals += data_panel_host_refusals(user, nodes)
    return refusals


def receiving_nodes(row: models.Model) -> models.QuerySet:
    """The nodes that receive ``row`` now, by the synchronizer types' own watches (a role: its
    nodes)."""
    if isinstance(row, Role):
        return row.nodes.all()
    ids: set[int] = set()
    for sync_type in REGISTRY.values():
        for watch in sync_type.watches:
            if watch.model is type(row):
                ids |= watch.receivers([row.pk])
    return Node.objects.filter(pk__in=ids)


def reaches_panel_host(row: models.Model) -> bool:
    """Whether the panel's own server receives ``row`` (so only a superuser changes it)."""
    return row.pk is not None and receiving_nodes(row).filter(panel_host_q()).exists()


def _panel_host_at(host: str, port: int, exclude_pk: int | None) -> Node | None:
    """A node flagged as the panel's own server reached at this very host and port."""
    same = Node.objects.filter(is_panel_host=True, transport=Transport.SSH, port=port)
    if exclude_pk is not None:
        same = same.exclude(pk=exclude_pk)
    host = host.strip().lower()
    return next((n for n in same.only("name", "host") if n.host.strip().lower() == host), None)


def _panel_host_refusals(
    user: Subject, node: Node, stored: Node | None, change: NodeChange
) -> list:
    if may_manage_panel_host(user):
        return []
    if stored is not None and is_panel_host(stored):
        message = LOCAL_REFUSED if stored.transport == Transport.LOCAL else PANEL_HOST_REFUSED
        return [Refusal(None, message)]
    if node.transport == Transport.LOCAL:
        return [Refusal("transport", LOCAL_REFUSED)]
    if node.is_panel_host:
        return [Refusal(None, PANEL_HOST_REFUSED)]
    if change.deleting:
        return []
    if change.adding or change.address:
        same = _panel_host_at(node.host, node.port, node.pk)
        if same is not None:
            where = f"{node.host}:{node.port} is the address of {same.name}"
            return [Refusal("host", POINTS_AT_PANEL_HOST.format(where=where))]
    if change.host_key and is_panel_host_key(change.host_key):
        where = f"{node.host}:{node.port} presents this machine's own host key"
        return [Refusal("host", POINTS_AT_PANEL_HOST.format(where=where))]
    return []


# --- Data a user may deliver ------------------------------------------------------------------


def _role_paths(paths: Iterable[str]) -> list[str]:
    """A watch's paths from a row to the nodes, cut to end at the roles (``roles__nodes`` ->
    ``roles``): what reaches a node is what its roles carry."""
    return [path.removesuffix("__nodes") for path in paths if path.endswith("nodes")]


def carried_models(roles: Sequence[Role]) -> dict[type[models.Model], models.QuerySet]:
    """Per kind of data the synchronizer types carry, the rows these roles carry of it.

    Taken from the types' own declarations (``watches``), so a type added later is covered
    with no change here.
    """
    role_ids = [r.pk for r in roles]
    carried: dict[type[models.Model], models.QuerySet] = {}
    if not role_ids:
        return carried
    for sync_type in REGISTRY.values():
        for watch in sync_type.watches:
            paths = _role_paths(watch.paths)
            if not paths:
                continue
            rows = watch.model._default_manager.all()
            for path in paths:
                rows = rows.filter(
                    pk__in=watch.model._base_manager.filter(**{f"{path}__in": role_ids}).values(
                        "pk"
                    )
                )
            earlier = carried.get(watch.model)
            carried[watch.model] = rows if earlier is None else earlier | rows
    return carried


def view_permission(model: type[models.Model]) -> str:
    return f"{model._meta.app_label}.view_{model._meta.model_name}"


def secret_permission(model: type[models.Model]) -> str:
    return f"{model._meta.app_label}.view_secret_{model._meta.model_name}"


def has_secrets(model: type[models.Model]) -> bool:
    return any(f.name == SECRET_FIELD for f in model._meta.get_fields())


def may_view_content(user: Subject, row: models.Model) -> bool:
    """Whether ``user`` may see the content of ``row`` (a secret file needs ``view_secret``)."""
    if not getattr(row, SECRET_FIELD, False):
        return True
    return user.has_perm(secret_permission(type(row)))


def may_view_secrets(user: Subject, model: type[models.Model]) -> bool:
    """Whether ``user`` may see the content of every row of ``model``, the secret ones too."""
    return not has_secrets(model) or user.has_perm(secret_permission(model))


def data_change_refusals(
    user: Subject, stored: models.Model | None, row: models.Model
) -> list[str]:
    """Why ``user`` may not save ``row`` (``stored``: the row as it is now, None when new).

    A secret row is changed only by those who may view it: its roles would send it to their
    own node, its path or mode could expose it on the nodes it has. Marking a row secret or
    not is theirs too (unmarking would show it to everyone).
    """
    refusals = []
    if stored is not None and not may_view_content(user, stored):
        refusals.append(
            f"Only a user who may view secret {type(row)._meta.verbose_name_plural} may change "
            f"{stored}."
        )
    was = bool(getattr(stored, SECRET_FIELD, False))
    if bool(getattr(row, SECRET_FIELD, False)) != was and not may_view_secrets(user, type(row)):
        refusals.append(
            f"Only a user who may view secret {type(row)._meta.verbose_name_plural} may mark "
            "one secret or not."
        )
    return refusals


def delivery_refusals(user: Subject, roles: Sequence[Role]) -> list[Refusal]:
    """Why ``user`` may not send the data of ``roles`` to a node (empty: they may).

    Each kind of data the roles carry needs its view permission; secret rows among them need
    ``view_secret`` too. Roles that carry nothing need nothing.
    """
    roles = list(roles)
    missing = []
    for model, rows in carried_models(roles).items():
        name = model._meta.verbose_name_plural
        if not user.has_perm(view_permission(model)):
            if rows.exists():
                missing.append(f"{name} that you may not view")
            continue
        if has_secrets(model) and not may_view_secrets(user, model):
            if rows.filter(**{SECRET_FIELD: True}).exists():
                missing.append(f"secret {name} whose content you may not view")
    if not missing:
        return []
    names = ", ".join(sorted(r.name for r in roles))
    return [
        Refusal(
            "roles",
            f"The roles {names} carry {'; '.join(missing)}: a node receives all of it, so only "
            "a user who may view it may give these roles to a node, add one with them, or "
            "change where its node is.",
        )
    ]


def may_deliver_roles(user: Subject, roles: Sequence[Role]) -> bool:
    """Whether ``user`` may send everything ``roles`` carry to a node of their choice."""
    return not delivery_refusals(user, roles)


# --- Changes to a node ------------------------------------------------------------------------


def _roles_delivered(node: Node, stored: Node | None, change: NodeChange) -> list[Role] | None:
    """The roles whose data the change sends somewhere new (None: it sends nothing new)."""
    stored_roles = list(stored.roles.all()) if stored is not None else []
    after = list(change.roles) if change.roles is not None else stored_roles
    if change.adding:
        return after
    if change.deleting:
        return None
    if change.roles is not None and {r.pk for r in after} - {r.pk for r in stored_roles}:
        return after  # a role given: the node gets its data
    moves = change.address or change.accepting_key or change.host_key
    if moves and node.transport == Transport.SSH:
        return after  # the same data, to whatever machine answers now
    return None


def node_change_refusals(user: Subject, node: Node, change: NodeChange) -> list[Refusal]:
    """Why ``user`` may not make ``change`` to ``node`` (empty: allowed).

    ``node`` carries the values after the change (a new host, say); the stored row, if any, is
    read again here for what it was. Used by the pages (form errors or 403), the admin (form
    errors, read-only pages) and the commands (``sync.actor.Actor.command(...).subject``: every
    right, asked all the same).
    """
    stored = Node.objects.filter(pk=node.pk).first() if node.pk else None
    refusals = _panel_host_refusals(user, node, stored, change)
    if refusals:
        return refusals
    delivered = _roles_delivered(node, stored, change)
    if delivered:
        refusals += delivery_refusals(user, delivered)
    return refusals


def may_change_node(user: Subject, node: Node, change: NodeChange | None = None) -> bool:
    return not node_change_refusals(user, node, change or NodeChange())


def check_node_change(user: Subject, node: Node, change: NodeChange) -> None:
    """``node_change_refusals`` for callers without a form: PermissionDenied (403) naming why."""
    refusals = node_change_refusals(user, node, change)
    if refusals:
        raise PermissionDenied(" ".join(r.message for r in refusals))

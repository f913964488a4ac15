"""Data changes register the synchronizer types concerned for the nodes concerned.

The receivers call ``register_desync`` directly, so the registration joins the transaction
that changed the data (the admin saves in one): the change and its desynchronization commit
together or not at all, and a node is never left in sync with data that was rolled back, nor
out of step with data that was committed.

Every change is reduced to "these rows gained or lost these roles": the nodes concerned are
the nodes that have those roles, before the change for removals (``pre_clear``,
``pre_delete``) and after it for additions.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from nodes.managed import ManagedFile, ManagedUser, Package, Service
from nodes.models import Node, Role
from sync.engine import register_desync
from sync.models import SyncAction

# The types that carry role data to nodes, by the model of that data.
TYPE_OF = {Package: "software", ManagedFile: "files", ManagedUser: "users", Service: "services"}

_STASH = "_sync_trigger_stash"


def register(node_ids: Iterable[int], type_names: Iterable[str]) -> None:
    """Register the named types for the nodes; nothing when either is empty."""
    node_ids = set(node_ids)
    if not node_ids:
        return
    actions = list(SyncAction.objects.filter(name__in=list(type_names)))
    if actions:
        register_desync(node_ids, actions)


def nodes_with_roles(role_ids: Iterable[int]) -> set[int]:
    role_ids = list(role_ids)
    if not role_ids:
        return set()
    links = Node.roles.through.objects.filter(role_id__in=role_ids)
    return set(links.values_list("node_id", flat=True))


def nodes_of_services(service_ids: Iterable[int]) -> set[int]:
    role_ids = Service.roles.through.objects.filter(service_id__in=list(service_ids))
    return nodes_with_roles(role_ids.values_list("role_id", flat=True))


def _concerned(model: type[Model], row_ids: set[int], role_ids: set[int]) -> dict[str, set[int]]:
    """Type name -> nodes, for rows of ``model`` that gained or lost ``role_ids``."""
    if not row_ids or not role_ids:
        return {}
    nodes = nodes_with_roles(role_ids)
    concerned = {TYPE_OF[model]: nodes}
    if model is ManagedFile and nodes:
        # Services that reload on these files, on the nodes where the files come or go.
        services = ManagedFile.services.through.objects.filter(managedfile_id__in=row_ids)
        concerned["services"] = nodes & nodes_of_services(
            services.values_list("service_id", flat=True)
        )
    return concerned


def _register_all(concerned: dict[str, set[int]]) -> None:
    by_nodes: dict[frozenset[int], list[str]] = {}
    for type_name, nodes in concerned.items():
        if nodes:
            by_nodes.setdefault(frozenset(nodes), []).append(type_name)
    for nodes, type_names in by_nodes.items():
        register(nodes, type_names)


def _role_ids(instance: Model) -> set[int]:
    return set(instance.roles.values_list("pk", flat=True))


def _stash(instance: Model, key: object, value: object) -> None:
    instance.__dict__.setdefault(_STASH, {})[key] = value


def _unstash(instance: Model, key: object, default: object = None) -> object:
    return instance.__dict__.get(_STASH, {}).pop(key, default)


# --- The rows: packages, files, users, services ---------------------------------------------


def row_saved(sender: type[Model], instance: Model, **kwargs) -> None:
    # A new row has no roles yet (they come with m2m_changed): this concerns changed rows.
    _register_all(_concerned(sender, {instance.pk}, _role_ids(instance)))


def row_deleting(sender: type[Model], instance: Model, **kwargs) -> None:
    # The links go with the row: the nodes concerned must be known before.
    _stash(instance, "delete", _concerned(sender, {instance.pk}, _role_ids(instance)))


def row_deleted(sender: type[Model], instance: Model, **kwargs) -> None:
    _register_all(_unstash(instance, "delete", {}))


def row_roles_changed(
    sender: type[Model],
    instance: Model,
    action: str,
    reverse: bool,
    model: type[Model],
    pk_set: set[int] | None,
    **kwargs,
) -> None:
    """``row.roles`` (forward) or ``role.<rows>`` (reverse) gained or lost links."""
    if action == "pre_clear":
        if reverse:  # a role: the rows of ``model`` it loses
            related = set(model.objects.filter(roles=instance).values_list("pk", flat=True))
        else:
            related = _role_ids(instance)
        _stash(instance, sender, related)
        return
    if action == "post_clear":
        ids = _unstash(instance, sender, set())
    elif action in ("post_add", "post_remove"):
        ids = set(pk_set or ())
    else:
        return
    if reverse:  # instance is a Role, ids are rows of ``model``
        _register_all(_concerned(model, ids, {instance.pk}))
    else:
        _register_all(_concerned(type(instance), {instance.pk}, ids))


# --- Service.files ----------------------------------------------------------------------------


def service_files_changed(
    sender: type[Model],
    instance: Model,
    action: str,
    reverse: bool,
    pk_set: set[int] | None,
    **kwargs,
) -> None:
    """A service's files decide its reloads: its nodes run ``services`` again."""
    if action == "pre_clear":
        if reverse:  # a file: the services it leaves
            services = set(instance.services.values_list("pk", flat=True))
        else:
            services = {instance.pk}
        _stash(instance, sender, services)
        return
    if action == "post_clear":
        services = _unstash(instance, sender, set())
    elif action in ("post_add", "post_remove"):
        if not pk_set:
            return
        services = set(pk_set) if reverse else {instance.pk}
    else:
        return
    register(nodes_of_services(services), ["services"])


# --- Nodes and roles --------------------------------------------------------------------------


def types_for_roles(role_ids: Iterable[int]) -> list[str]:
    """The role types whose data these roles carry: a role without data changes nothing."""
    role_ids = list(role_ids)
    if not role_ids:
        return []
    types = [
        TYPE_OF[model]
        for model in TYPE_OF
        if model.roles.through.objects.filter(role_id__in=role_ids).exists()
    ]
    if "files" in types and "services" not in types:
        # A node losing or gaining a file a service reloads on changes that service's state.
        with_services = ManagedFile.services.through.objects.filter(managedfile__roles__in=role_ids)
        if with_services.exists():
            types.append("services")
    return types


def node_roles_changed(
    sender: type[Model],
    instance: Model,
    action: str,
    reverse: bool,
    pk_set: set[int] | None,
    **kwargs,
) -> None:
    """Nodes gained or lost roles: what they receive from those roles changes."""
    if action == "pre_clear":
        if reverse:  # a role: the nodes that lose it
            links = (set(instance.nodes.values_list("pk", flat=True)), {instance.pk})
        else:  # a node: the roles it loses
            links = ({instance.pk}, set(instance.roles.values_list("pk", flat=True)))
        _stash(instance, sender, links)
        return
    if action == "post_clear":
        nodes, roles = _unstash(instance, sender, (set(), set()))
    elif action in ("post_add", "post_remove"):
        if not pk_set:
            return
        nodes, roles = (set(pk_set), {instance.pk}) if reverse else ({instance.pk}, set(pk_set))
    else:
        return
    if nodes:
        register(nodes, types_for_roles(roles))


def role_deleting(sender: type[Model], instance: Role, **kwargs) -> None:
    nodes = set(instance.nodes.values_list("pk", flat=True))
    _stash(instance, "delete", (nodes, types_for_roles([instance.pk]) if nodes else []))


def role_deleted(sender: type[Model], instance: Role, **kwargs) -> None:
    nodes, types = _unstash(instance, "delete", (set(), []))
    register(nodes, types)


def connect() -> None:
    """Connect every receiver; the dispatch uids make a second import harmless."""
    for model in TYPE_OF:
        label = model.__name__
        post_save.connect(row_saved, sender=model, dispatch_uid=f"sync-saved-{label}")
        pre_delete.connect(row_deleting, sender=model, dispatch_uid=f"sync-deleting-{label}")
        post_delete.connect(row_deleted, sender=model, dispatch_uid=f"sync-deleted-{label}")
        m2m_changed.connect(
            row_roles_changed, sender=model.roles.through, dispatch_uid=f"sync-roles-{label}"
        )
    m2m_changed.connect(
        service_files_changed, sender=Service.files.through, dispatch_uid="sync-service-files"
    )
    m2m_changed.connect(
        node_roles_changed, sender=Node.roles.through, dispatch_uid="sync-node-roles"
    )
    pre_delete.connect(role_deleting, sender=Role, dispatch_uid="sync-role-deleting")
    post_delete.connect(role_deleted, sender=Role, dispatch_uid="sync-role-deleted")


connect()

"""What each synchronizer type watches, and the one receiver that turns changes into work.

A type declares the data its nodes receive (``@synchronizer(..., watches=[Watch(...)])``): a
model, the fields of it that reach the node, and the relation paths from a row to the nodes
that receive it (``"roles__nodes"``: the nodes that have one of the row's roles; several
paths mean "through all of them"). From that alone, one set of receivers registers the type
for exactly the nodes whose received data changed:

- a saved row whose watched fields changed (or a new one): the nodes that receive it;
- a link added, removed or cleared anywhere on a path (``row.roles``, ``role.nodes``,
  ``node.roles``, either side, ``clear()`` too), or a row anywhere on a path deleted (a
  role, say): the nodes whose *set* of received rows differs before and after, so a node
  that had the row through another role is left alone;
- a many-to-many field listed among the watched fields (a service's files): the nodes that
  receive the rows whose links changed;
- ``update()`` and ``bulk_update()`` on a watched model's queryset (``WatchedQuerySet``),
  compared before and after, like a save.

The registrations join the transaction that changed the data (the admin saves in one): the
change and its desynchronizations commit together or not at all. Rows made with
``bulk_create`` have no links yet, so they concern no node until their links are added.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models, transaction
from django.db.models.signals import (
    m2m_changed,
    post_delete,
    post_save,
    pre_delete,
    pre_save,
)

from nodes.models import Node

_STASH = "_sync_watch_stash"


@dataclass(frozen=True)
class Watch:
    """Rows of ``model`` reach the nodes at the end of ``paths``; ``fields`` are what they carry."""

    model: type[models.Model]
    fields: tuple[str, ...]
    paths: tuple[str, ...] = ("roles__nodes",)

    def received(
        self, node_ids: Iterable[int], among: set[int] | None = None
    ) -> dict[int, frozenset[int]]:
        """Per node, the rows it receives (through every path), ``among`` these rows if given.

        A change only concerns the rows on its side of the link: comparing those alone keeps
        a role change on a large fleet from reading every node's every row.
        """
        node_ids = list(node_ids)
        if not node_ids or among is not None and not among:
            return {}
        result: dict[int, frozenset[int]] | None = None
        for path in self.paths:
            pairs = self.model._base_manager.filter(**{f"{path}__in": node_ids})
            if among is not None:
                pairs = pairs.filter(pk__in=among)
            rows: dict[int, set[int]] = defaultdict(set)
            for node_id, row_id in pairs.values_list(path, "pk"):
                rows[node_id].add(row_id)
            if result is None:
                result = {n: frozenset(r) for n, r in rows.items()}
            else:
                result = {n: result[n] & rows[n] for n in result if n in rows}
        return result or {}

    def receivers(self, row_ids: Iterable[int]) -> set[int]:
        """The nodes that receive any of these rows now."""
        row_ids = set(row_ids)
        if not row_ids:
            return set()
        candidates = _values(self.model, row_ids, self.paths[0])
        return {n for n, rows in self.received(candidates, row_ids).items() if rows}

    def rows_for(self, node_id: int) -> models.QuerySet:
        """The rows this node receives, without duplicates, in one query (for a type's run).

        ``pk__in`` subqueries rather than ``distinct()``: DISTINCT over a text column is slow
        on MariaDB.
        """
        rows = self.model._default_manager.all()
        for path in self.paths:
            of_node = self.model._base_manager.filter(**{path: node_id}).values("pk")
            rows = rows.filter(pk__in=of_node)
        return rows

    def values_for(self, node_id: int, *fields: str, order_by: str) -> list[dict]:
        """``rows_for(node_id).order_by(order_by).values(*fields)``: a type's data for a run,
        the same SELECT built once per shape (``engine.compiled``), since building it costs
        Django more than the database takes to answer it, on every run of every node."""
        from django.db import router

        from sync.engine.compiled import compiled, fetch, select_sql

        alias = router.db_for_read(self.model)
        key = ("values_for", self.model._meta.label, self.paths, fields, order_by, alias)
        sql, params = compiled(
            key,
            "i",
            lambda m: select_sql(
                self.rows_for(m[0]).using(alias).order_by(order_by).values_list(*fields)
            ),
        )([node_id])
        convert = [_converter(self.model._meta.get_field(f)) for f in fields]
        return [
            {f: c(v) for f, c, v in zip(fields, convert, row, strict=True)}
            for row in fetch(alias, sql, params)
        ]

    @property
    def column_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if not self.model._meta.get_field(f).many_to_many)


@dataclass(frozen=True)
class _Hop:
    """One many-to-many step of a path: ``near`` (row side) to ``far`` (node side)."""

    type_name: str
    watch: Watch
    near: type[models.Model]
    far: type[models.Model]
    near_column: str
    far_column: str
    prefix: str  # from the watched model to ``near``; "" when ``near`` is the watched model
    suffix: str  # from ``far`` on to the nodes; "" when ``far`` is Node

    def ends(self, instance: models.Model, pk_set: set[int] | None, sender) -> tuple[set, set]:
        """The (near ids, far ids) of the links this event adds, removes or clears."""
        at_far = isinstance(instance, self.far)
        if pk_set is not None:
            others = set(pk_set)
        else:  # clear: the links there are now
            mine, theirs = (self.far_column, self.near_column)
            if not at_far:
                mine, theirs = theirs, mine
            links = sender.objects.filter(**{mine: instance.pk})
            others = set(links.values_list(theirs, flat=True))
        return (others, {instance.pk}) if at_far else ({instance.pk}, others)

    def rows_from(self, near_ids: set[int]) -> set[int]:
        return set(near_ids) if not self.prefix else _rows_via(self.watch, self.prefix, near_ids)

    def nodes_from(self, far_ids: set[int]) -> set[int]:
        return set(far_ids) if not self.suffix else _values(self.far, far_ids, self.suffix)


@dataclass
class _Index:
    hops: dict[type[models.Model], list[_Hop]] = field(default_factory=lambda: defaultdict(list))
    # Models on a path (not Node): their deletion cuts links without m2m signals.
    on_path: dict[type[models.Model], list[tuple[str, Watch, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    watched: dict[type[models.Model], list[tuple[str, Watch]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    m2m_fields: dict[type[models.Model], list[tuple[str, Watch, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )


_INDEX = _Index()


def _rows_via(watch: Watch, prefix: str, ids: set[int]) -> set[int]:
    """The watched rows that reach these objects through ``prefix``."""
    rows = watch.model._base_manager.filter(**{f"{prefix}__in": ids})
    return set(rows.values_list("pk", flat=True))


def _values(model: type[models.Model], ids: set[int], path: str) -> set[int]:
    values = model._base_manager.filter(pk__in=ids).values_list(path, flat=True)
    return {v for v in values if v is not None}


def _steps(watch: Watch, path: str) -> list[tuple[type[models.Model], object]]:
    """The path's (model, field) steps; every step must be many-to-many and end at Node."""
    steps, model = [], watch.model
    for name in path.split("__"):
        try:
            step = model._meta.get_field(name)
        except Exception as e:
            raise ImproperlyConfigured(f"{watch.model.__name__}: bad path {path!r}: {e}") from e
        if not step.many_to_many:
            raise ImproperlyConfigured(f"{watch.model.__name__}: {path!r}: {name} is not m2m")
        steps.append((model, step))
        model = step.related_model
    if model is not Node:
        raise ImproperlyConfigured(f"{watch.model.__name__}: {path!r} does not end at Node")
    return steps


def index_watches(types: Iterable) -> None:
    """Index the registry's watches by the models and link tables whose changes concern them."""
    global _INDEX
    index = _Index()
    for t in types:
        for watch in t.watches:
            index.watched[watch.model].append((t.name, watch))
            for name in watch.fields:
                f = watch.model._meta.get_field(name)
                if f.many_to_many:
                    index.m2m_fields[f.remote_field.through].append((t.name, watch, name))
            for path in watch.paths:
                names = path.split("__")
                for i, (near, step) in enumerate(_steps(watch, path)):
                    prefix, suffix = "__".join(names[:i]), "__".join(names[i + 1 :])
                    index.on_path[near].append((t.name, watch, prefix, "__".join(names[i:])))
                    forward = isinstance(step, models.ManyToManyField)
                    m2m = step if forward else step.field
                    columns = (m2m.m2m_field_name(), m2m.m2m_reverse_field_name())
                    near_col, far_col = columns if forward else columns[::-1]
                    through = m2m.remote_field.through
                    index.hops[through].append(
                        _Hop(
                            t.name,
                            watch,
                            near,
                            step.related_model,
                            near_col,
                            far_col,
                            prefix,
                            suffix,
                        )
                    )
    _INDEX = index


@dataclass
class Noted:
    """What the watches found a change concerns, per type name: the nodes (``noting``)."""

    concerned: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    rehearsal: bool = False

    @property
    def node_ids(self) -> set[int]:
        return set().union(*self.concerned.values()) if self.concerned else set()


_NOTING: ContextVar[Noted | None] = ContextVar("sync_watch_noting", default=None)


@contextmanager
def noting(rehearsal: bool = False) -> Iterator[Noted]:
    """Note, per type, the nodes the watches register in this block: what a change does, told
    by the very rules that act on it, never by a second count that could drift from them.

    ``rehearsal``: note without registering (the caller rolls the change back), so a
    confirmation can say what a change would do before it is made.
    """
    noted = Noted(rehearsal=rehearsal)
    token = _NOTING.set(noted)
    try:
        yield noted
    finally:
        _NOTING.reset(token)


def register_concerned(concerned: dict[str, set[int]]) -> None:
    """Register each type for its nodes, one call per distinct set of nodes."""
    from sync.engine import register_desync
    from sync.models import SyncAction

    noted = _NOTING.get()
    if noted is not None:
        for type_name, nodes in concerned.items():
            if nodes:
                noted.concerned[type_name] |= nodes
        if noted.rehearsal:
            return
    by_nodes: dict[frozenset[int], list[str]] = defaultdict(list)
    for type_name, nodes in concerned.items():
        if nodes:
            by_nodes[frozenset(nodes)].append(type_name)
    for nodes, names in by_nodes.items():
        actions = list(SyncAction.objects.filter(name__in=names))
        if actions:
            register_desync(nodes, actions)


def _stash(instance: object, key: object, value: object) -> None:
    instance.__dict__.setdefault(_STASH, {})[key] = value


def _unstash(instance: object, key: object, default: object = None) -> object:
    return instance.__dict__.get(_STASH, {}).pop(key, default)


def _changed(before: dict[int, frozenset[int]], after: dict[int, frozenset[int]]) -> set[int]:
    empty: frozenset[int] = frozenset()
    return {n for n in before.keys() | after.keys() if before.get(n, empty) != after.get(n, empty)}


# --- Saves and updates -----------------------------------------------------------------------


def _column_values(model: type[models.Model], ids, names: set[str]) -> dict[int, dict]:
    rows = model._base_manager.filter(pk__in=list(ids)).values("pk", *sorted(names))
    return {r.pop("pk"): r for r in rows}


def _changed_rows(before: dict[int, dict], after: dict[int, dict], names: Iterable[str]):
    return {
        pk for pk, row in after.items() if any(row[n] != before.get(pk, {}).get(n) for n in names)
    }


def _before_save(sender, instance: models.Model, raw: bool = False, **kwargs) -> None:
    watches = _INDEX.watched.get(sender)
    if not watches or instance._state.adding or instance.pk is None:
        return
    names = {f for _, w in watches for f in w.column_fields}
    _stash(instance, "save", _column_values(sender, [instance.pk], names).get(instance.pk))


def _after_save(sender, instance: models.Model, created: bool, **kwargs) -> None:
    watches = _INDEX.watched.get(sender)
    if not watches:
        return
    old = _unstash(instance, "save")
    concerned: dict[str, set[int]] = defaultdict(set)
    for type_name, watch in watches:
        columns = {
            f: getattr(instance, watch.model._meta.get_field(f).attname)
            for f in watch.column_fields
        }
        if created or old is None or any(old[f] != v for f, v in columns.items()):
            concerned[type_name] |= watch.receivers([instance.pk])
    register_concerned(concerned)


class WatchedQuerySet(models.QuerySet):
    """``update()`` and ``bulk_update()`` register like saves: what changed, for whom."""

    def _register_changes(self, ids, names: set[str], change) -> int:
        watches = [
            (t, w) for t, w in _INDEX.watched.get(self.model, ()) if names & set(w.column_fields)
        ]
        if not watches:
            return change()
        with transaction.atomic(using=self.db):
            columns = {f for _, w in watches for f in w.column_fields}
            ids = list(ids)
            before = _column_values(self.model, ids, columns)
            count = change()
            after = _column_values(self.model, before, columns)
            concerned: dict[str, set[int]] = defaultdict(set)
            for type_name, watch in watches:
                rows = _changed_rows(before, after, watch.column_fields)
                concerned[type_name] |= watch.receivers(rows)
            register_concerned(concerned)
        return count

    def update(self, **kwargs) -> int:
        ids = self.values_list("pk", flat=True)
        change = super().update
        return self._register_changes(ids, set(kwargs), lambda: change(**kwargs))

    def bulk_update(self, objs, fields, batch_size=None) -> int:
        objs = list(objs)
        change = super().bulk_update
        return self._register_changes(
            [o.pk for o in objs], set(fields), lambda: change(objs, fields, batch_size)
        )


# --- Links and deletions ---------------------------------------------------------------------


def _links_changed(sender, instance, action: str, pk_set=None, **kwargs) -> None:
    hops = _INDEX.hops.get(sender, ())
    fields = _INDEX.m2m_fields.get(sender, ())
    if not hops and not fields or action not in _M2M_ACTIONS:
        return
    key = (sender, "links")
    if action.startswith("pre_"):
        pending = []
        for hop in hops:
            near_ids, far_ids = hop.ends(instance, pk_set, sender)
            nodes, among = hop.nodes_from(far_ids), hop.rows_from(near_ids)
            if nodes and among:
                before = hop.watch.received(nodes, among)
                pending.append((hop.type_name, hop.watch, nodes, among, before))
        rows = []
        for type_name, watch, name in fields:
            rows.append((type_name, watch, _linked_rows(watch, name, sender, instance, pk_set)))
        _stash(instance, key, (pending, rows))
        return
    pending, rows = _unstash(instance, key, ([], []))
    concerned: dict[str, set[int]] = defaultdict(set)
    for type_name, watch, nodes, among, before in pending:
        concerned[type_name] |= _changed(before, watch.received(nodes, among))
    for type_name, watch, ids in rows:
        concerned[type_name] |= watch.receivers(ids)
    register_concerned(concerned)


def _linked_rows(watch: Watch, name: str, through, instance, pk_set) -> set[int]:
    """The watched rows whose many-to-many field ``name`` changes in this link event."""
    step = watch.model._meta.get_field(name)
    if pk_set is not None:  # add or remove: only the links that really come or go
        if not pk_set:
            return set()
        return {instance.pk} if isinstance(instance, watch.model) else set(pk_set)
    # clear: the rows linked now (none linked, nothing changes)
    if isinstance(instance, watch.model):
        linked = through.objects.filter(**{step.m2m_field_name(): instance.pk})
        return {instance.pk} if linked.exists() else set()
    linked = through.objects.filter(**{step.m2m_reverse_field_name(): instance.pk})
    return set(linked.values_list(step.m2m_field_name(), flat=True))


_M2M_ACTIONS = {"pre_add", "post_add", "pre_remove", "post_remove", "pre_clear", "post_clear"}


def _before_delete(sender, instance: models.Model, **kwargs) -> None:
    entries = _INDEX.on_path.get(sender)
    if not entries:
        return
    by_watch: dict[tuple[str, Watch], tuple[set[int], set[int]]] = {}
    for type_name, watch, prefix, suffix in entries:
        nodes, rows = by_watch.setdefault((type_name, watch), (set(), set()))
        nodes |= _values(sender, {instance.pk}, suffix)
        rows |= _rows_via(watch, prefix, {instance.pk}) if prefix else {instance.pk}
    pending = [(t, w, n, r, w.received(n, r)) for (t, w), (n, r) in by_watch.items() if n and r]
    _stash(instance, "delete", pending)


def _after_delete(sender, instance: models.Model, **kwargs) -> None:
    concerned: dict[str, set[int]] = defaultdict(set)
    for type_name, watch, nodes, among, before in _unstash(instance, "delete", []):
        concerned[type_name] |= _changed(before, watch.received(nodes, among))
    register_concerned(concerned)


def connect(types: Iterable) -> None:
    """Index the types' watches and connect the receivers to exactly the senders concerned.

    Per sender, not for every model: a model with delete receivers loses Django's fast
    delete, and the engine deletes its own rows in bulk.
    """
    index_watches(types)
    for model in _INDEX.watched:
        uid = f"sync-watch-{model._meta.label_lower}"
        pre_save.connect(_before_save, sender=model, dispatch_uid=uid)
        post_save.connect(_after_save, sender=model, dispatch_uid=uid)
    for through in _INDEX.hops.keys() | _INDEX.m2m_fields.keys():
        uid = f"sync-watch-{through._meta.label_lower}"
        m2m_changed.connect(_links_changed, sender=through, dispatch_uid=uid)
    for model in _INDEX.on_path:
        uid = f"sync-watch-{model._meta.label_lower}"
        pre_delete.connect(_before_delete, sender=model, dispatch_uid=uid)
        post_delete.connect(_after_delete, sender=model, dispatch_uid=uid)


def _converter(field: models.Field) -> Callable[[Any], Any]:
    """What ``values()`` does to a column's value that the database driver does not: a
    boolean stored as 0 or 1 by MariaDB. A field with its own conversion is refused, so a
    new field type is not read wrong silently."""
    if isinstance(field, models.BooleanField):
        return bool
    if hasattr(field, "from_db_value"):
        raise TypeError(f"{field} needs its own conversion: read it with values()")
    return lambda value: value

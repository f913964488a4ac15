"""Engine statements built by Django once per shape, then run with each call's values.

The engine's hot statements are the same few, many times a second, with only ids, worker
names and texts changing. Building one from its expressions (the eligibility rule, the
status, the word) costs Django several times what the database takes to run it. So each is
built once per shape (the database, the question asked, how many nodes), with sentinel
values in place of the real ones, and every later call puts its values where the sentinels
were. The SQL is still the ORM's own, from the one definition of each rule.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.db.models.sql.subqueries import DeleteQuery, UpdateQuery

# Values put where a call's values go, and found again among the built statement's parameters:
# integers within every integer column's range (Django drops a comparison with a value out of
# a column's range) that no constant of the engine's statements has, texts no one types.
_INT = 2_100_000_000


def sentinels(kinds: str) -> list[Any]:
    """One sentinel per letter of ``kinds``: ``i`` an integer, ``s`` a text."""
    return [_INT + i if kind == "i" else f"\x00sentinel{i}\x00" for i, kind in enumerate(kinds)]


_SHAPES: dict[Hashable, tuple[str, list, dict[int, int]]] = {}


def compiled(
    key: Hashable, kinds: str, build: Callable[[list[Any]], tuple[str, Sequence[Any]]]
) -> Callable[[Sequence[Any]], tuple[str, list]]:
    """The SQL ``build`` makes from the sentinels of ``kinds`` (built the first time ``key`` is
    asked for), as a function of the real values, in the order of ``kinds``."""
    shape = _SHAPES.get(key)
    if shape is None:
        marks = sentinels(kinds)
        sql, params = build(marks)
        index = {mark: i for i, mark in enumerate(marks)}
        slots = {i: index[p] for i, p in enumerate(params) if _hashable(p) and p in index}
        if set(slots.values()) != set(range(len(marks))):
            raise RuntimeError(f"a compiled statement lost one of its values: {key!r}")
        shape = _SHAPES[key] = (sql, list(params), slots)
    sql, params, slots = shape

    def with_values(values: Sequence[Any]) -> tuple[str, list]:
        return sql, [values[slots[i]] if i in slots else p for i, p in enumerate(params)]

    return with_values


def bucket(n: int) -> int:
    """How many values a statement for ``n`` is built for: ``n`` up to 8, then rounded up to
    12, 16, 24, 32, 48 ... (the rest padded), so a few shapes serve every group size."""
    if n <= 8:
        return n
    size = 8
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def many(
    key: Hashable, build: Callable[..., tuple[str, Sequence[Any]]], *columns: tuple[str, Sequence]
) -> tuple[str, list]:
    """``compiled`` for statements over lists of values (``columns``: a kind, ``i`` or ``s``,
    and the values), each list padded to its ``bucket`` by repeating its last value: an id
    twice in ``IN (...)``, a pair twice in ``OR``, a ``WHEN`` twice, each the same as once.
    ``build`` gets one list of sentinels per column."""
    sizes = tuple(bucket(len(values)) for _, values in columns)
    kinds = "".join(kind * size for (kind, _), size in zip(columns, sizes, strict=True))

    def built(marks: list[Any]) -> tuple[str, Sequence[Any]]:
        lists, at = [], 0
        for size in sizes:
            lists.append(marks[at : at + size])
            at += size
        return build(*lists)

    values = [
        value
        for (_, column), size in zip(columns, sizes, strict=True)
        for value in [*column, *column[-1:] * (size - len(column))]
    ]
    return compiled((key, sizes), kinds, built)(values)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def select_sql(queryset: QuerySet) -> tuple[str, Sequence[Any]]:
    """A queryset's SELECT."""
    return queryset.query.sql_with_params()


def update_sql(queryset: QuerySet, values: dict[str, Any]) -> tuple[str, Sequence[Any]]:
    """The UPDATE that ``queryset.update(**values)`` runs."""
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    return query.get_compiler(queryset.db).as_sql()


def delete_sql(queryset: QuerySet) -> tuple[str, Sequence[Any]]:
    """The DELETE of a queryset's rows, with no cascade: for tables nothing points to."""
    query = queryset.query.chain(DeleteQuery)
    return query.get_compiler(queryset.db).as_sql()


def execute(alias: str, sql: str, params: Sequence[Any]) -> int:
    """Run a compiled statement; how many rows it changed."""
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def fetch(alias: str, sql: str, params: Sequence[Any]) -> list[tuple]:
    """Run a compiled SELECT; its rows."""
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()

"""What the management commands share: turning names into rows, with a clear error (exit 2)."""

from __future__ import annotations

from collections.abc import Sequence

from django.core.management.base import CommandError

from nodes.models import Node
from sync.models import SyncAction

BAD_ARGUMENTS = 2


def bad_arguments(message: str) -> CommandError:
    return CommandError(message, returncode=BAD_ARGUMENTS)


def nodes_by_name(names: Sequence[str]) -> list[Node]:
    found = {n.name: n for n in Node.objects.filter(name__in=names)}
    unknown = [n for n in names if n not in found]
    if unknown:
        raise bad_arguments(f"unknown node: {', '.join(unknown)} (see `manage.py nodes`)")
    return [found[n] for n in dict.fromkeys(names)]


def actions_by_name(names: Sequence[str]) -> list[SyncAction]:
    found = {a.name: a for a in SyncAction.objects.filter(name__in=names)}
    unknown = [n for n in names if n not in found]
    if unknown:
        known = ", ".join(SyncAction.objects.values_list("name", flat=True))
        raise bad_arguments(
            f"unknown synchronizer type: {', '.join(unknown)} (known types: {known})"
        )
    return [found[n] for n in dict.fromkeys(names)]

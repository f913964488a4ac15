"""What the management commands share: turning names into rows, with a clear error (exit 2)."""

from __future__ import annotations

from collections.abc import Sequence

from django.core.management.base import CommandError

from nodes.choices import NodeCondition
from nodes.models import Node, Role
from sync.models import SyncAction

BAD_ARGUMENTS = 2


def bad_arguments(message: str) -> CommandError:
    return CommandError(message, returncode=BAD_ARGUMENTS)


def _names(names: Sequence[str]) -> str:
    """Names as typed, quoted when they hold something a one-line message cannot show."""
    return ", ".join(n if n.isprintable() and n.strip() == n and n else repr(n) for n in names)


def nodes_by_name(names: Sequence[str]) -> list[Node]:
    found = {n.name: n for n in Node.objects.filter(name__in=names)}
    unknown = [n for n in names if n not in found]
    if unknown:
        raise bad_arguments(f"unknown node: {_names(unknown)} (see `manage.py nodes`)")
    return [found[n] for n in dict.fromkeys(names)]


def actions_by_name(names: Sequence[str]) -> list[SyncAction]:
    found = {a.name: a for a in SyncAction.objects.filter(name__in=names)}
    unknown = [n for n in names if n not in found]
    if unknown:
        known = ", ".join(SyncAction.objects.values_list("name", flat=True))
        raise bad_arguments(f"unknown synchronizer type: {_names(unknown)} (known types: {known})")
    return [found[n] for n in dict.fromkeys(names)]


FINGERPRINT_PREFIX = "SHA256:"


def expected_fingerprint(value: str | None) -> str | None:
    """A ``--fingerprint`` argument checked (exit 2 unless it is a SHA256 fingerprint)."""
    if value is None:
        return None
    value = value.strip()
    if not value.startswith(FINGERPRINT_PREFIX):
        raise bad_arguments(
            f"--fingerprint must be a SHA256 fingerprint as ssh-keygen -l prints it "
            f"({FINGERPRINT_PREFIX}...), not {value!r}"
        )
    return value


def roles_by_name(names: Sequence[str]) -> list[Role]:
    found = {r.name: r for r in Role.objects.filter(name__in=names)}
    unknown = [n for n in names if n not in found]
    if unknown:
        known = ", ".join(Role.objects.order_by("name").values_list("name", flat=True))
        raise bad_arguments(f"unknown role: {_names(unknown)} (known roles: {known or 'none'})")
    return [found[n] for n in dict.fromkeys(names)]


def what_to_do(node: Node) -> str:
    """The command that fixes ``node``'s condition, for a terminal's reader.

    The node's error names no command (its page offers a button for the same step); a
    command's output adds the command that does it.
    """
    if node.has_condition(NodeCondition.HOST_KEY_CHANGED):
        return f"if its new key is right, accept it with `manage.py acceptkey {node.name}`"
    return ""

"""Adding a node with its registrations: the rule the add action (``sync.actions.add_node``)
builds on.

A node that is saved without its desynchronizations would sit Ready and never be set up, so
the save, the roles and the registrations go together. Accepting a host key is the action
``sync.actions.accept_host_key`` itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction

from nodes.choices import Transport
from nodes.models import Node, Role
from sync.actor import Actor
from sync.engine import register_desync
from sync.panelhost import flag_if_panel_host
from sync.rights import NodeChange, check_node_change


def add_node(node: Node, roles: Iterable[Role] = (), *, by: Actor) -> int:
    """Validate and save a new ``node``, set its roles and register every type for it.

    ``by`` is who acts: the rights rules (``sync.rights``) are asked again here, whatever
    the caller checked, and PermissionDenied says why not.
    Raises ``django.core.exceptions.ValidationError`` when the node is invalid (nothing is
    saved then). SSH nodes must carry their pinned ``host_key`` already: the caller shows the
    fingerprint and checks the login first (``nodes.hostkeys``). A node that is the panel's
    own server (local, or pinning this machine's key) is flagged so. Returns the number of
    (node, type) pairs registered; their sessions start when the transaction commits.
    """
    node.full_clean()
    roles = list(roles)
    check_node_change(
        by.subject, node, NodeChange(adding=True, roles=tuple(roles), host_key=node.host_key)
    )
    flag_if_panel_host(node)
    with transaction.atomic():
        node.save()
        if roles:
            node.roles.set(roles)
        return register_desync([node])


# --- Many nodes from lines of text (the add-many page and ``addnode --from-file``) -----------

# A fleet's worth, and a bound on what one request or file makes the panel scan.
MAX_NODE_LINES = 500
LINE_FORMAT = "name host[:port] [user]"


@dataclass(frozen=True)
class NodeLine:
    """One line of ``name host[:port] [user]``: an SSH node to add (port 22, root unless given)."""

    line: int
    name: str
    host: str
    port: int
    username: str

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def node(self) -> Node:
        return Node(
            name=self.name,
            transport=Transport.SSH,
            host=self.host,
            port=self.port,
            username=self.username,
        )


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def _host_and_port(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address (no port)."""
    port = "22"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [IPv6 address] or [IPv6 address]:port")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"the port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def _said(error: ValidationError) -> str:
    if not hasattr(error, "error_dict"):
        return " ".join(error.messages)
    return "; ".join(f"{field}: {' '.join(errs)}" for field, errs in error.message_dict.items())


# Columns of a node that the lines do not give: left out of the lines' validation.
_NOT_IN_LINES = [
    f.name
    for f in Node._meta.concrete_fields
    if f.name not in {"name", "transport", "host", "port", "username"}
]


def parse_node_lines(text: str) -> tuple[list[NodeLine], list[LineError]]:
    """The nodes ``text`` names, one ``name host[:port] [user]`` per line, and what is wrong
    with each line that is not one (its number and the reason).

    Blank lines and lines starting with ``#`` are skipped. Each node is validated as the
    single add form validates it (name free and well formed, host, port, user, address not
    another node's), and names or addresses given twice are reported at their second line:
    the caller adds nothing while any line is wrong, so a file is fixed and given again
    whole.
    """
    found: list[NodeLine] = []
    errors: list[LineError] = []
    names: dict[str, int] = {}
    addresses: dict[tuple[str, int], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if len(found) + len(errors) >= MAX_NODE_LINES:
            errors.append(LineError(number, f"more than {MAX_NODE_LINES} nodes at once"))
            break
        if len(words) not in (2, 3):
            errors.append(LineError(number, f"expected {LINE_FORMAT}, got {len(words)} word(s)"))
            continue
        try:
            host, port = _host_and_port(words[1])
        except ValueError as e:
            errors.append(LineError(number, str(e)))
            continue
        entry = NodeLine(number, words[0], host, port, words[2] if len(words) == 3 else "root")
        try:
            entry.node().full_clean(exclude=_NOT_IN_LINES)
        except ValidationError as e:
            errors.append(LineError(number, f"{entry.name}: {_said(e)}"))
            continue
        key = (host.lower(), port)
        if entry.name in names:
            errors.append(LineError(number, f"{entry.name} is on line {names[entry.name]} too"))
        elif key in addresses:
            errors.append(LineError(number, f"{host}:{port} is on line {addresses[key]} too"))
        else:
            names[entry.name] = addresses[key] = number
            found.append(entry)
    return found, errors

"""Adding a node in two explicit steps, editing and deleting it.

1. ``POST /nodes/scan`` answers the key ``host:port`` presents and its fingerprint: check it
   on the node itself.
2. ``POST /nodes`` with that ``fingerprint``: the node is scanned again and refused (409,
   nothing saved) unless it presents that very key; the panel then logs in with only that key
   trusted, and the node is saved by ``sync.actions.add_node``, as the page and ``addnode``.
"""

from __future__ import annotations

from dataclasses import replace

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja.responses import Status

from api.common import REFUSALS, actor, bad, node_or_404, router
from api.nodes import detail
from api.schemas import ActionOut, Id, NodeDetail, NodeEditIn, NodeIn, ScanIn, ScanOut
from api.work import result, roles_named
from nodes.access import ADD, CHANGE, DELETE
from nodes.choices import Transport
from nodes.hostkeys import check_login
from nodes.keys import fingerprint
from nodes.models import Node, validate_host
from nodes.transports import TransportError
from sync import actions
from sync.rights import NodeChange, check_node_change

TAGS = ["nodes"]

# What ``full_clean`` leaves to the steps here: the key is scanned, the rest is the engine's.
NOT_INPUT = [
    f.name
    for f in Node._meta.concrete_fields
    if f.name not in {"name", "transport", "host", "port", "username"}
]


def _checked_host(host: str) -> str:
    try:
        validate_host(host)
    except ValidationError as e:
        raise bad("host", f"host: {' '.join(e.messages)}") from None
    return host


def _scan(host: str, port: int, fingerprint_: str = "") -> str:
    """The key the node presents, if it is the one confirmed by ``fingerprint_``."""
    try:
        return actions.scan_confirmed_key(host, port, fingerprint_=fingerprint_)
    except TransportError as e:
        raise bad("host", f"Cannot reach {host}:{port}: {e}") from None
    except actions.KeyNotConfirmed as e:
        raise bad("fingerprint", str(e), status=409) from None


def _log_in(node: Node) -> None:
    try:
        check_login(node)
    except TransportError as e:
        raise bad("username", f"The panel cannot log in: {e}", status=409) from None


@router.post("/nodes/scan", response={200: ScanOut, **REFUSALS}, tags=TAGS)
def scan(request: HttpRequest, payload: ScanIn):
    """Step one of adding a node: the host key ``host:port`` presents, and its fingerprint."""
    actor(request, ADD)
    key = _scan(_checked_host(payload.host), payload.port)
    return {"host": payload.host, "port": payload.port, "key": key, "fingerprint": fingerprint(key)}


@router.post("/nodes", response={201: NodeDetail, **REFUSALS}, tags=TAGS)
def add(request: HttpRequest, payload: NodeIn):
    """Step two: add an SSH node whose key has ``fingerprint`` (from step one, checked on the
    node); refused with 409 and nothing saved when it presents another key."""
    acting = actor(request, ADD)
    node = Node(
        name=payload.name,
        transport=Transport.SSH,
        host=payload.host,
        port=payload.port,
        username=payload.username,
    )
    node.full_clean(exclude=NOT_INPUT)
    roles = roles_named(payload.roles, "roles")
    change = NodeChange(adding=True, roles=tuple(roles))
    check_node_change(acting.subject, node, change)  # before touching the network
    node.host_key = _scan(node.host, node.port, payload.fingerprint)
    check_node_change(acting.subject, node, replace(change, host_key=node.host_key))
    _log_in(node)
    actions.add_node(acting, node, roles)
    return Status(201, detail(node.pk))


@router.patch("/nodes/{int:node_id}", response={200: NodeDetail, **REFUSALS}, tags=TAGS)
def edit(request: HttpRequest, node_id: Id, payload: NodeEditIn):
    """Change a node's name, address, user, roles or maintenance. A new host or port needs the
    ``fingerprint`` of the key the node there presents, as when adding."""
    acting = actor(request, CHANGE)
    node = node_or_404(node_id)
    stored = (node.host, node.port, node.username)
    fields = ["name"]
    for name in ("name", "host", "port", "username"):
        value = getattr(payload, name)
        if value is not None:
            setattr(node, name, value)
    if node.transport == Transport.SSH:
        fields += ["host", "port", "username"]
    elif (node.host, node.port, node.username) != stored:
        raise bad("host", "A local node has no address to change.")
    node.full_clean(exclude=NOT_INPUT, validate_unique=True)
    roles = roles_named(payload.roles, "roles") if payload.roles is not None else None
    moved = (node.host, node.port) != stored[:2]
    check_node_change(acting.subject, node, NodeChange(roles=tuple(roles) if roles else None))
    if moved:
        if not payload.fingerprint:
            raise bad(
                "fingerprint", "fingerprint: a new host or port needs the new key's fingerprint"
            )
        node.host_key = _scan(node.host, node.port, payload.fingerprint)
        fields.append("host_key")
        check_node_change(acting.subject, node, NodeChange(address=True, host_key=node.host_key))
    if moved or node.username != stored[2]:
        _log_in(node)
    actions.edit_node(acting, node, fields, roles=roles, maintenance=payload.maintenance)
    return detail(node.pk)


@router.delete("/nodes/{int:node_id}", response={200: ActionOut, **REFUSALS}, tags=TAGS)
def delete(request: HttpRequest, node_id: Id):
    """Delete the node; its audit entry keeps its address, roles and newest runs."""
    acting = actor(request, DELETE)
    return result(actions.delete_nodes(acting, [node_or_404(node_id)]))

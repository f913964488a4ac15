"""Actions that change what a node is: add, edit (name, address, roles, maintenance), give and
take roles, accept a host key.

Each asks ``sync.rights`` (through ``sync.inventory`` where the rule lives with the change),
does its network steps first (scanning and proving a key, logging in: outside any
transaction, so a stalling node holds no database lock), then writes the node, its links,
the engine's registrations and its audit entry in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from nodes.access import ADD, CHANGE, check_perms
from nodes.choices import Transport
from nodes.hostkeys import (
    SCAN_CONCURRENCY,
    check_seconds,
    login_check,
    parse_host_key,
    pin_proved_key,
    prove_host_key,
    scan_host_key,
)
from nodes.keys import fingerprint, safe_fingerprint
from nodes.models import Node, Role, validate_address_free
from nodes.transports import TransportError
from nodes.transports.ssh import fetch_host_key
from sync import engine, inventory
from sync.actions.data import DataEffect, made_in_one_transaction
from sync.actions.results import Act, ActionResult, NodeOutcome
from sync.actor import Actor
from sync.audit import Target, node_targets, record
from sync.conditions import host_key_accepted
from sync.panelhost import flag_if_panel_host
from sync.rights import NodeChange, check_node_change, node_change_refusals
from sync.synchronizers import REGISTRY
from sync.watching import Noted

# What an entry shows of a node's columns: the key as its fingerprint, never the whole line.
SHOWN_FIELDS = ("name", "transport", "host", "port", "username", "is_panel_host")


def _state(node: Node, roles: Sequence[Role] | None = None) -> dict[str, Any]:
    state = {f: getattr(node, f) for f in SHOWN_FIELDS}
    state["host_key"] = safe_fingerprint(node.host_key) if node.host_key else ""
    state["maintenance"] = node.maintenance
    if roles is not None:
        state["roles"] = sorted(r.name for r in roles)
    elif node.pk:
        state["roles"] = sorted(node.roles.values_list("name", flat=True))
    return state


class KeyNotConfirmed(Exception):
    """The node presents another key than the one confirmed: nothing was pinned.

    ``presented`` is the key presented now, for the page to show for a new confirmation.
    """

    def __init__(self, host: str, port: int, presented: str, confirmed_fingerprint: str) -> None:
        self.presented = presented
        self.confirmed_fingerprint = confirmed_fingerprint
        super().__init__(
            f"{host}:{port} presents the host key {fingerprint(presented)}, not the confirmed "
            f"{confirmed_fingerprint}: nothing was pinned. Check the fingerprint on the node "
            "itself; if it is not the one presented, someone may be intercepting the connection."
        )


def scan_confirmed_key(host: str, port: int, *, key: str = "", fingerprint_: str = "") -> str:
    """The first network step of adding, moving or re-keying a node, the same for the pages
    and the commands: the key ``host:port`` presents now, if it is the one confirmed.

    Confirmed means the whole ``key`` shown on the page, or a ``fingerprint_`` the admin
    checked on the node itself (``--fingerprint``); with neither, the key presented is
    returned to be shown (the page's first step) or pinned as seen (a command without
    ``--fingerprint``, which prints it). Raises TransportError (unreachable) or
    KeyNotConfirmed. The login with that key pinned (``nodes.hostkeys.check_login``) comes
    next, before anything is saved.
    """
    return _confirmed(host, port, scan_host_key(host, port), key, fingerprint_)


def _confirmed(host: str, port: int, presented: str, key: str, fingerprint_: str) -> str:
    if key and presented != key:
        raise KeyNotConfirmed(host, port, presented, safe_fingerprint(key))
    if fingerprint_ and fingerprint(presented) != fingerprint_:
        raise KeyNotConfirmed(host, port, presented, fingerprint_)
    return presented


def _role_targets(roles: Sequence[Role]) -> list[Target]:
    return [Target("role", r.pk, r.name) for r in roles]


def add_node(
    actor: Actor, node: Node, roles: Sequence[Role] = (), *, key_installed_as: str = ""
) -> ActionResult:
    """Save a new node (an SSH node with the key already shown, confirmed and logged in with),
    give it ``roles`` and register every type for it. ``count`` is the pairs registered.
    ``key_installed_as``: the login whose one-time password installed the panel's key, for
    the entry (the password itself is never given here).

    Raises ValidationError (nothing saved) or PermissionDenied (``sync.rights``).
    """
    roles = list(roles)
    with transaction.atomic():
        count = inventory.add_node(node, roles, by=actor)
        entry = record(
            actor,
            Act.NODE_ADD,
            node_targets([node]) + _role_targets(roles),
            summary=f"Added {node.transport} node {node.name} ({node.address})."
            + (
                f" The panel's key was installed with a one-time password of {key_installed_as}."
                if key_installed_as
                else ""
            ),
            after=_state(node, roles),
        )
    return ActionResult(
        Act.NODE_ADD, entry.pk, (NodeOutcome(node.pk, node.name, "added"),), count=count
    )


# Outcomes of ``add_nodes`` for a node that was not added start with one of these words.
NOT_ADDED = ("refused", "unreachable", "key changed", "login failed")


async def _check_new_node(node: Node, key: str) -> str:
    """The network steps of adding one SSH node, as the single add makes them: the key it
    presents now must be ``key`` (the one shown and confirmed), then the panel logs in with
    only that key trusted. "" when both pass, else why not."""
    try:
        presented = await fetch_host_key(node.host, node.port, timeout=check_seconds())
        _confirmed(node.host, node.port, presented, key, "")
        await login_check(node)
    except KeyNotConfirmed as e:
        return f"key changed since it was shown: {e}"
    except TransportError as e:
        text = str(e)
        return text if text.startswith("unreachable") else f"login failed: {text}"
    return ""


def add_nodes(
    actor: Actor,
    nodes: Sequence[Node],
    roles: Sequence[Role] = (),
    *,
    progress: Callable[[Node, str], None] | None = None,
) -> ActionResult:
    """Add many SSH nodes at once, each carrying in ``host_key`` the key that was shown and
    confirmed for it (the add-many page, ``addnode --from-file``).

    Per node, the single add's steps: the rights (``sync.rights``), the key presented now
    compared with the confirmed one (a changed key is refused, nothing pinned) and the login
    with only that key trusted; these network steps run for all nodes at once, outside any
    transaction, and ``progress(node, outcome)`` hears each as it ends. Then one transaction
    saves the nodes that passed (``sync.inventory.add_node``: their roles and every type
    registered) and writes one entry. A node that fails is not added and the others are.

    Each outcome is ``added`` or starts with one of ``NOT_ADDED`` and says why; a node not
    added has no id (0). ``count`` is the (node, type) pairs registered.
    """
    check_perms(actor.subject, ADD)
    roles, nodes = list(roles), list(nodes)
    outcome: dict[int, str] = {}
    for i, node in enumerate(nodes):
        change = NodeChange(adding=True, roles=tuple(roles), host_key=node.host_key)
        if refusals := node_change_refusals(actor.subject, node, change):
            outcome[i] = "refused: " + " ".join(r.message for r in refusals)
        elif node.transport != Transport.SSH or not node.host_key:
            outcome[i] = "refused: only SSH nodes with a confirmed host key are added this way"
        if i in outcome and progress is not None:
            progress(node, outcome[i])

    async def check_all() -> None:
        at_once = asyncio.Semaphore(SCAN_CONCURRENCY)

        async def check(i: int, node: Node) -> None:
            async with at_once:
                outcome[i] = await _check_new_node(node, node.host_key) or "checked"
            if progress is not None and outcome[i] != "checked":
                progress(node, outcome[i])

        await asyncio.gather(*(check(i, n) for i, n in enumerate(nodes) if i not in outcome))

    async_to_sync(check_all)()
    count = 0
    with transaction.atomic():
        for i, node in enumerate(nodes):
            if outcome[i] != "checked":
                continue
            try:
                with transaction.atomic():
                    count += inventory.add_node(node, roles, by=actor)
                outcome[i] = "added"
            except (ValidationError, IntegrityError, PermissionDenied) as e:
                node.pk = None
                said = " ".join(getattr(e, "messages", [])) or str(e) or "not allowed"
                outcome[i] = f"refused: {said}"
            if progress is not None:
                progress(node, outcome[i])
        added = [n for i, n in enumerate(nodes) if outcome[i] == "added"]
        entry = record(
            actor,
            Act.NODE_ADD,
            node_targets(added) + _role_targets(roles),
            summary=f"Added {len(added)} of {len(nodes)} SSH node(s) at once.",
            after={
                "nodes": {n.name: _state(n, roles) for n in added},
                "not_added": {
                    n.name: outcome[i] for i, n in enumerate(nodes) if outcome[i] != "added"
                },
            },
        )
    return ActionResult(
        Act.NODE_ADD,
        entry.pk,
        tuple(NodeOutcome(n.pk or 0, n.name, outcome[i]) for i, n in enumerate(nodes)),
        count=count,
    )


def edit_node(
    actor: Actor,
    node: Node,
    fields: Sequence[str],
    roles: Sequence[Role] | None = None,
    maintenance: bool | None = None,
    stop_running: bool = False,
) -> ActionResult:
    """Write the edited columns ``fields`` of ``node`` (which carries the new values), its
    roles when given and maintenance when given, together. Maintenance turned on with
    ``stop_running`` also cancels the type running there now (else it finishes).

    A new address or user makes the node's waiting work due now (what failed at the old one
    may work); a new host key must have been confirmed and logged in with by the caller.
    Raises ValidationError (a host:port another SSH node has: nothing changes),
    PermissionDenied (``sync.rights``) or IntegrityError (a name taken meanwhile).
    """
    stored = Node.objects.get(pk=node.pk)
    moved = any(getattr(stored, f) != getattr(node, f) for f in ("host", "port", "username"))
    if moved:
        validate_address_free(node)
    new_key = "host_key" in fields and node.host_key != stored.host_key
    change = NodeChange(
        roles=tuple(roles) if roles is not None else None,
        address=moved,
        host_key=node.host_key if new_key else "",
    )
    check_node_change(actor.subject, node, change)
    fields = list(fields)
    if new_key or moved:
        flag_if_panel_host(node)
        fields.append("is_panel_host")
    with transaction.atomic():
        before = _state(stored)
        node.save(update_fields=sorted(set(fields)))
        if roles is not None:
            node.roles.set(roles)  # a change of roles registers its types (sync.watching)
        if maintenance is not None and maintenance != stored.maintenance:
            engine.set_maintenance([node], maintenance)
            node.maintenance = maintenance
            if maintenance and stop_running:
                engine.cancel_node(node, actor.label)
        if moved or new_key:
            Node.objects.filter(pk=node.pk).drop_connections()
            engine.retry_now([node])
        after = _state(node)
        changed = sorted(k for k in after if before.get(k) != after[k])
        act = Act.NODE_ROLES if changed == ["roles"] else Act.NODE_EDIT
        entry = record(
            actor,
            act,
            node_targets([node]) + _role_targets(list(node.roles.all())),
            summary=f"Changed {', '.join(changed) or 'nothing'}.",
            before={k: before[k] for k in changed},
            after={k: after[k] for k in changed},
        )
    return ActionResult(
        act, entry.pk, (NodeOutcome(node.pk, node.name, "saved"),), extra={"changed": changed}
    )


def _roles_after(node: Node, give: Sequence[Role], take: Sequence[Role]) -> tuple[set, list[Role]]:
    now = {r.pk: r for r in node.roles.all()}
    taken = {t.pk for t in take}
    after = [r for pk, r in now.items() if pk not in taken] + [r for r in give if r.pk not in now]
    return set(now), after


def change_roles(
    actor: Actor,
    nodes: Sequence[Node],
    give: Sequence[Role] = (),
    take: Sequence[Role] = (),
    *,
    dry_run: bool = False,
) -> ActionResult:
    """Give ``give`` to and take ``take`` from each of ``nodes``; one entry with each role's
    nodes before and after. Giving a role is refused (nothing changes) where ``sync.rights``
    says the user may not send its data to that node.

    Each node's outcome says whether its roles changed (``roles changed`` / ``unchanged``)
    and names the types registered for it; ``extra["effect"]`` is what the watches
    registered (``DataEffect``: "3 nodes will synchronize files", a node that keeps the data
    through another role not counted) and ``count`` the nodes that got work. ``dry_run``:
    only tell (and refuse) it, for a confirmation; nothing is kept.
    """
    check_perms(actor.subject, CHANGE)
    give, take = list(give), list(take)
    changed: set[int] = set()
    for node in nodes:
        before, after = _roles_after(node, give, take)
        if {r.pk for r in after} != before:
            changed.add(node.pk)
        check_node_change(actor.subject, node, NodeChange(roles=tuple(after)))
    roles = give + take

    def change(noted: Noted) -> ActionResult:
        before = {r.name: sorted(r.nodes.values_list("name", flat=True)) for r in roles}
        for role in give:
            role.nodes.add(*nodes)  # registers the types (sync.watching), and notes them
        for role in take:
            role.nodes.remove(*nodes)
        after = {r.name: sorted(r.nodes.values_list("name", flat=True)) for r in roles}
        effect = DataEffect.of(noted)
        entry = record(
            actor,
            Act.NODE_ROLES,
            node_targets(nodes) + _role_targets(roles),
            summary=(
                f"Gave {', '.join(r.name for r in give) or 'no role'}; "
                f"took {', '.join(r.name for r in take) or 'no role'} "
                f"({len(changed)} of {len(nodes)} node(s) changed). {effect.sentence()}"
            ),
            before={"role_nodes": before},
            after={"role_nodes": after},
        )
        titles = {n: REGISTRY[n].title for n in noted.concerned if n in REGISTRY}
        outcomes = tuple(
            NodeOutcome(
                n.pk,
                n.name,
                "roles changed" if n.pk in changed else "unchanged",
                tuple(title for name, title in titles.items() if n.pk in noted.concerned[name]),
            )
            for n in nodes
        )
        return ActionResult(
            Act.NODE_ROLES, entry.pk, outcomes, count=effect.nodes, extra={"effect": effect}
        )

    return made_in_one_transaction(change, dry_run=dry_run)


def accept_host_key(actor: Actor, node: Node, key: str) -> ActionResult:
    """Pin ``key`` once the node proved it holds it, then run its waiting synchronizers.

    ``sync.rights`` first (the panel's own server, the data the node's roles carry, a key that
    is this machine's own). The proof talks to the node and happens outside any transaction:
    a node that stalls holds no database lock (SQLite's is the whole database). Then, in one
    transaction: the key is pinned if the node still has the address it was proved at, the
    desynchronizations that failed on the old key are due now, the ``host-key-changed``
    condition clears, and the entry records the old and new fingerprints. Raises ValueError
    (no key), PermissionDenied, HostKeyMismatch or TransportError; nothing changes then.
    ``extra["change"]`` is the ``HostKeyChange``.
    """
    new_key = parse_host_key(key)
    check_node_change(actor.subject, node, NodeChange(accepting_key=True, host_key=new_key))
    prove_host_key(node, new_key)
    with transaction.atomic():
        change = pin_proved_key(node, new_key)
        if flag_if_panel_host(node):
            Node.objects.filter(pk=node.pk).update(is_panel_host=True)
        host_key_accepted(node.pk)
        engine.retry_now([node])
        entry = record(
            actor,
            Act.ACCEPT_KEY,
            node_targets([node]),
            summary="Accepted a new host key." if change.changed else "The key was already pinned.",
            before={"host_key": change.old_fingerprint},
            after={"host_key": change.new_fingerprint},
        )
    outcome = "changed" if change.changed else "unchanged"
    return ActionResult(
        Act.ACCEPT_KEY,
        entry.pk,
        (NodeOutcome(node.pk, node.name, outcome),),
        extra={"change": change},
    )

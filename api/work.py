"""Every action on a node's work and state, through the action layer (``sync.actions``):
register, retry, force, cancel, skip, maintenance, accept a host key, give and take roles.
Each answers the action's result: the audit entry it wrote and each node's outcome."""

from __future__ import annotations

from django.http import HttpRequest

from api.common import REFUSALS, actor, bad, node_or_404, router
from api.schemas import ActionOut, Id, KeyIn, MaintenanceIn, RolesIn, TypesIn
from nodes.access import CHANGE
from nodes.hostkeys import HostKeyMismatch
from nodes.models import Role
from nodes.transports import TransportError
from sync import actions
from sync.actions import ActionResult
from sync.models import SyncAction

TAGS = ["actions"]

ACTION = {200: ActionOut, **REFUSALS}


def result(done: ActionResult) -> dict:
    return {
        "action": done.action,
        "audit_entry": done.entry_id,
        "count": done.count,
        "nodes": [
            {"id": n.node_id, "name": n.name, "outcome": n.outcome, "titles": list(n.titles)}
            for n in done.nodes
        ],
    }


def types_named(names: list[str] | None) -> list[SyncAction] | None:
    if names is None:
        return None
    found = {a.name: a for a in SyncAction.objects.filter(name__in=names)}
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise bad("types", f"types: no synchronizer type {', '.join(unknown)}")
    return [found[n] for n in dict.fromkeys(names)]


def roles_named(names: list[str], field: str) -> list[Role]:
    found = {r.name: r for r in Role.objects.filter(name__in=names)}
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise bad(field, f"{field}: no role {', '.join(unknown)}")
    return [found[n] for n in dict.fromkeys(names)]


@router.post("/nodes/{int:node_id}/register", response=ACTION, tags=TAGS)
def register(request: HttpRequest, node_id: Id, payload: TypesIn):
    """Synchronize again: register ``types`` (every type when left out) for the node."""
    acting = actor(request, CHANGE)
    node = node_or_404(node_id)
    return result(actions.register_work(acting, [node], types_named(payload.types)))


@router.post("/nodes/{int:node_id}/retry", response=ACTION, tags=TAGS)
def retry(request: HttpRequest, node_id: Id):
    """Retry now: the node's failed desynchronizations stop waiting for their backoff."""
    acting = actor(request, CHANGE)
    return result(actions.retry_work(acting, [node_or_404(node_id)]))


@router.post("/nodes/{int:node_id}/force", response=ACTION, tags=TAGS)
def force(request: HttpRequest, node_id: Id):
    """Force completion: take the node from a worker that hangs; the cluster runs it again.
    The outcome is ``forced``, ``nothing running`` or ``busy`` (try again)."""
    acting = actor(request, CHANGE)
    return result(actions.force_work(acting, node_or_404(node_id)))


@router.post("/nodes/{int:node_id}/cancel", response=ACTION, tags=TAGS)
def cancel(request: HttpRequest, node_id: Id):
    """End the synchronizer running on the node now; its type fails and waits for its retry."""
    acting = actor(request, CHANGE)
    return result(actions.cancel_work(acting, node_or_404(node_id)))


@router.post("/nodes/{int:node_id}/skip", response=ACTION, tags=TAGS)
def skip(request: HttpRequest, node_id: Id, payload: TypesIn):
    """Drop the node's desynchronizations (only ``types``'s when given) without running them."""
    acting = actor(request, CHANGE)
    node = node_or_404(node_id)
    return result(actions.skip_work(acting, node, types_named(payload.types)))


@router.post("/nodes/{int:node_id}/maintenance", response=ACTION, tags=TAGS)
def maintenance(request: HttpRequest, node_id: Id, payload: MaintenanceIn):
    """Maintenance on (no new sessions) or off (waiting work runs); with ``stop_running`` a
    type running now is cancelled (held), else it finishes."""
    acting = actor(request, CHANGE)
    node = node_or_404(node_id)
    return result(
        actions.set_maintenance(acting, [node], payload.on, stop_running=payload.stop_running)
    )


@router.post("/nodes/{int:node_id}/accept-key", response=ACTION, tags=TAGS)
def accept_key(request: HttpRequest, node_id: Id, payload: KeyIn):
    """Pin a new host key once the node proved it holds it (the whole OpenSSH key line)."""
    acting = actor(request, CHANGE)
    node = node_or_404(node_id)
    try:
        return result(actions.accept_host_key(acting, node, payload.key))
    except ValueError as e:
        raise bad("key", f"key: {e}") from None
    except HostKeyMismatch as e:
        raise bad("key", f"key: {e}", status=409) from None
    except TransportError as e:
        raise bad("key", f"The node could not prove the key: {e}", status=409) from None


@router.post("/nodes/{int:node_id}/roles", response=ACTION, tags=TAGS)
def roles(request: HttpRequest, node_id: Id, payload: RolesIn):
    """Give and take roles (giving one registers its types)."""
    acting = actor(request, CHANGE)
    node = node_or_404(node_id)
    give = roles_named(payload.give, "give")
    take = roles_named(payload.take, "take")
    return result(actions.change_roles(acting, [node], give, take))

"""What the API takes and answers, as typed schemas (the OpenAPI document is built from them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Field, Schema

# Ids are 63-bit in every database the panel runs on: a bigger one is a 422, not a 500.
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(min_length=1, max_length=63)]
TypeName = Annotated[str, Field(min_length=1, max_length=50)]
RoleName = Annotated[str, Field(min_length=1, max_length=50)]
Host = Annotated[str, Field(min_length=1, max_length=255)]


class FieldError(Schema):
    field: str
    message: str


class Error(Schema):
    """Every refusal: what went wrong, the input field it concerns when there is one (the
    first), and each field's error for bad input (422)."""

    detail: str
    field: str | None = None
    errors: list[FieldError] = []


class Condition(Schema):
    type: str
    message: str = ""


class NodeSummary(Schema):
    id: int
    name: str
    transport: str
    address: str
    status: str
    shown: str
    condition: str
    conditions: list[Condition]
    usable: bool
    maintenance: bool
    processing: bool
    running: str | None
    pending: int
    failed: int
    last_error: str
    last_sync_at: datetime | None
    roles: list[str]
    # The facts placement sorts by (``sort=-memory``, ``cpus``, ``disk``, ``os``, ``kernel``,
    # ``booted``); every fact the node reported is in the node's own ``facts``.
    os_name: str
    kernel: str
    cpus: int | None
    memory_mb: int | None
    disk_free_mb: int | None
    booted_at: datetime | None
    facts_at: datetime | None


class Desync(Schema):
    type: str
    title: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    # Why it does not run now (sync.engine.eligibility.Hold: maintenance, host-key, running,
    # busy, cancelled, unreachable, backoff, needs); null when it may start now. ``why`` in
    # the page's words; ``waits_for`` the title of the type it needs, for ``needs``.
    held: str | None
    why: str
    waits_for: str | None


class RunSummary(Schema):
    id: int
    node_id: int
    type: str
    title: str
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    acted_by: str


class Run(RunSummary):
    log: str
    current_command: str
    current_output: str


class NodeDetail(NodeSummary):
    host: str
    port: int | None
    username: str
    host_key_fingerprint: str
    is_panel_host: bool
    facts: dict[str, Any]
    hold: str | None
    desyncs: list[Desync]
    recent_runs: list[RunSummary]


class NodePage(Schema):
    count: int
    page: int
    pages: int
    items: list[NodeSummary]


class RunPage(Schema):
    count: int
    page: int
    pages: int
    items: list[RunSummary]


class NodeOutcomeOut(Schema):
    id: int
    name: str
    outcome: str
    titles: list[str]


class ActionOut(Schema):
    action: str
    audit_entry: int | None
    count: int | None
    nodes: list[NodeOutcomeOut]


class ScanIn(Schema):
    host: Host
    port: Port = 22


class ScanOut(Schema):
    host: str
    port: int
    key: str
    fingerprint: str


class NodeIn(Schema):
    name: Name
    host: Host
    port: Port = 22
    username: Annotated[str, Field(min_length=1, max_length=32)] = "root"
    roles: list[RoleName] = []
    fingerprint: Annotated[str, Field(min_length=1, max_length=200)]


class NodeEditIn(Schema):
    name: Name | None = None
    host: Host | None = None
    port: Port | None = None
    username: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    roles: list[RoleName] | None = None
    maintenance: bool | None = None
    # Needed with a new host or port: the fingerprint the node at the new address must show.
    fingerprint: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class TypesIn(Schema):
    types: list[TypeName] | None = None


class MaintenanceIn(Schema):
    on: bool
    # Turning it on while a type runs: stop that run now (held) instead of letting it finish.
    stop_running: bool = False


class KeyIn(Schema):
    key: Annotated[str, Field(min_length=1, max_length=20000)]


class RolesIn(Schema):
    give: list[RoleName] = []
    take: list[RoleName] = []


class AuditTargetOut(Schema):
    kind: str
    id: int | None
    name: str


class AuditEntryOut(Schema):
    id: int
    at: datetime
    actor_kind: str
    actor: str
    user_id: int | None
    address: str
    action: str
    summary: str
    targets: list[AuditTargetOut]
    before: Any = None
    after: Any = None


class AuditPage(Schema):
    count: int
    page: int
    pages: int
    items: list[AuditEntryOut]


class TypeOut(Schema):
    name: str
    title: str
    priority: int

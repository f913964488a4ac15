"""schemathesis against ``/api/v1/openapi.json``: every operation with at least 100
generated examples, then the stateful phase (following the schema's links from the node list
to every operation on a node), with an operator's token and a read-only one. No answer may be
a 5xx, and every answer must match the schema (status, content type, body).

The network is the one thing left out: scanning a generated host, logging in and proving a
key answer "unreachable" at once (a generated host name would otherwise be looked up and
connected to, for seconds each); the real two-step add against a real sshd is
tests/test_api.py's.
"""

from __future__ import annotations

import time
from io import StringIO

import pytest
import schemathesis
from django.contrib.auth.models import Group
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings

from nodes.access import OPERATORS, ensure_groups
from nodes.models import Node, Role
from nodes.transports import TransportError

pytestmark = [pytest.mark.schemathesis, pytest.mark.django_db]

EXAMPLES = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]


def _unreachable(*args, **kwargs):
    raise TransportError("no network while fuzzing")


@pytest.fixture
def fleet(db, monkeypatch, django_user_model, make_type):
    """A few nodes, roles and a type; tokens for an operator: read-write and read-only."""
    monkeypatch.setattr("sync.actions.inventory.scan_host_key", _unreachable)
    monkeypatch.setattr("sync.actions.inventory.prove_host_key", _unreachable)
    monkeypatch.setattr("api.editing.check_login", _unreachable)
    monkeypatch.setattr("api.auth.GUESS_LIMIT", 10**9)  # schemathesis's own wrong tokens
    make_type("noop")
    Role.objects.create(name="web")
    for i in range(3):
        Node.objects.create(name=f"n{i}", host="127.0.0.1", port=1, host_key="")
    ensure_groups()
    user = django_user_model.objects.create_user("op")
    user.groups.add(Group.objects.get(name=OPERATORS))
    tokens = {}
    for scope, extra in (("write", ()), ("read", ("--read-only",))):
        out = StringIO()
        call_command("apitoken", "op", "--name", scope, *extra, stdout=out)
        tokens[scope] = out.getvalue().strip()
    return tokens


# The panel's own WSGI application, in this process (the schema needs no database to load).
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", WSGIHandler())


@pytest.fixture(autouse=True)
def keep_the_test_database_open():
    """The application must not close the connection after each request (it holds the test
    database's transaction), as Django's test client arranges too."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def api_schema():
    return schema


def call(case, token: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_every_operation_answers_within_its_schema(case, fleet):
    """Each generated request is sent with both tokens: the read-only one first (it must
    change nothing: 403 for writes), then the operator's."""
    call(case, fleet["read"])
    call(case, fleet["write"])


@pytest.mark.parametrize("scope", ["write", "read"])
def test_stateful_sequences_answer_within_the_schema(api_schema, fleet, scope):
    header = {"Authorization": f"Bearer {fleet[scope]}"}

    class Workflow(api_schema.as_state_machine()):
        """Each scenario starts from the same fleet: its changes (a deleted node, say) are
        rolled back, or hypothesis would replay a scenario against another state."""

        def setup(self):
            self.scenario = transaction.atomic()
            self.scenario.__enter__()

        def teardown(self):
            transaction.set_rollback(True)
            self.scenario.__exit__(None, None, None)

        def get_call_kwargs(self, case):
            return {"headers": header}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS)

    started = time.monotonic()
    Workflow.run(settings=settings(FUZZ, max_examples=EXAMPLES, stateful_step_count=6))
    assert time.monotonic() - started < 300

"""The JSON API (``/api/v1/``): tokens, rights, refusals in JSON, and adding a node in two
steps against a real sshd, then registering its work and seeing it done, through the API."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client

from api.auth import GUESS_LIMIT
from nodes.access import OPERATORS, READ_ONLY, ensure_groups
from nodes.keys import fingerprint
from nodes.models import Node
from sync.engine import run_nodes
from sync.models import ApiToken, AuditEntry

pytestmark = pytest.mark.django_db

API = "/api/v1"


def make_user(django_user_model, name: str, group: str | None):
    ensure_groups()
    user = django_user_model.objects.create_user(name)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def apitoken(*args: str) -> str:
    out = StringIO()
    call_command("apitoken", *args, stdout=out)
    return out.getvalue().strip()


class Api:
    """A client that sends only the bearer token: no session, no CSRF token."""

    def __init__(self, token: str, **client_options) -> None:
        self.client = Client(**client_options)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params):
        return self.client.get(API + path, params, headers=self.headers)

    def send(self, method: str, path: str, body: dict | None = None):
        call = getattr(self.client, method)
        return call(API + path, body or {}, content_type="application/json", headers=self.headers)


@pytest.fixture
def op_token(django_user_model) -> str:
    make_user(django_user_model, "op", OPERATORS)
    return apitoken("op", "--name", "ci")


@pytest.fixture
def ro_token(op_token) -> str:
    return apitoken("op", "--name", "look", "--read-only")


def test_without_a_valid_token_the_answer_is_401_json_not_the_login_page(
    client, admin_user, op_token
):
    client.force_login(admin_user)  # a session cookie opens nothing here
    for headers in ({}, {"Authorization": "Bearer panel_nothing_here"}, {"Authorization": "x"}):
        answer = client.get(f"{API}/nodes", headers=headers)
        assert answer.status_code == 401, headers
        assert answer["Content-Type"].startswith("application/json")
        assert "token" in answer.json()["detail"]


def test_a_token_lists_nodes_with_the_pages_filters_and_pages(op_token, make_node):
    for i in range(3):
        make_node(f"n{i}")
    make_node("m0", maintenance=True)
    api = Api(op_token)
    page = api.get("/nodes", page_size=2).json()
    assert (page["count"], page["pages"], len(page["items"])) == (4, 2, 2)
    assert [n["name"] for n in api.get("/nodes", maintenance="true").json()["items"]] == ["m0"]
    assert api.get("/nodes", q="n1").json()["count"] == 1
    shown = api.get("/nodes", shown="maintenance").json()["items"]
    assert [(n["name"], n["shown"], n["usable"]) for n in shown] == [("m0", "maintenance", False)]
    bad = api.get("/nodes", status="nonsense")
    assert bad.status_code == 422 and bad.json()["field"] == "status"
    assert ApiToken.objects.get(name="ci").last_used_at is not None


def test_bad_input_is_a_4xx_naming_the_field(op_token, make_node):
    node = make_node("n1")
    api = Api(op_token)
    answer = api.send("post", "/nodes/scan", {"host": "x", "port": 70000})
    assert answer.status_code == 422 and answer.json()["field"] == "port"
    answer = api.send("post", f"/nodes/{node.pk}/register", {"types": ["nope"]})
    assert answer.status_code == 422 and answer.json()["field"] == "types"
    answer = api.send("post", f"/nodes/{node.pk}/maintenance", {"on": "perhaps"})
    assert answer.status_code == 422 and answer.json()["field"] == "on"
    assert api.get("/nodes/99999999999999999999").status_code in (404, 422)
    assert api.get("/audit", since="yesterday").json()["field"] == "since"


def test_a_read_only_token_is_refused_every_write_with_403(ro_token, make_node):
    node = make_node("n1")
    api = Api(ro_token)
    assert api.get(f"/nodes/{node.pk}").status_code == 200
    schema = Client().get(f"{API}/openapi.json").json()
    writes = [
        (method, path.replace("{node_id}", str(node.pk)))
        for path, ops in schema["paths"].items()
        for method in ops
        if method in ("post", "patch", "delete", "put")
    ]
    assert len(writes) >= 12
    for method, path in writes:
        answer = api.send(method, path.removeprefix(API), {})
        assert answer.status_code == 403, (method, path, answer.content)
    assert Node.objects.filter(pk=node.pk, maintenance=False).exists()
    assert not AuditEntry.objects.exclude(action__startswith="token.").exists()


def test_a_token_never_has_more_rights_than_its_user(django_user_model, make_node):
    make_user(django_user_model, "reader", READ_ONLY)
    token = apitoken("reader")  # read-write scope, read-only user
    node = make_node("n1")
    answer = Api(token).send("post", f"/nodes/{node.pk}/maintenance", {"on": True})
    assert answer.status_code == 403
    assert answer.json()["detail"]


def test_actions_are_recorded_as_the_user_and_the_token(op_token, make_node):
    node = make_node("n1")
    answer = Api(op_token, REMOTE_ADDR="192.0.2.7").send(
        "post", f"/nodes/{node.pk}/maintenance", {"on": True}
    )
    assert answer.status_code == 200, answer.content
    entry = AuditEntry.objects.get(pk=answer.json()["audit_entry"])
    assert (entry.actor_name, entry.user.username, entry.address) == (
        "op (token ci)",
        "op",
        "192.0.2.7",
    )


def test_a_revoked_token_is_refused(op_token):
    assert Api(op_token).get("/nodes").status_code == 200
    apitoken("op", "--revoke", "ci")
    assert Api(op_token).get("/nodes").status_code == 401
    listed = apitoken("op", "--list")
    assert "ci" in listed and "revoked" in listed


def test_guessing_tokens_is_throttled_by_client_address(op_token):
    guesser = Api("panel_abcdefgh_wrong", REMOTE_ADDR="192.0.2.9")
    for _ in range(GUESS_LIMIT):
        assert guesser.get("/nodes").status_code == 401
    assert guesser.get("/nodes").status_code == 429
    # Even the right token from that address waits; another address is not concerned.
    assert Api(op_token, REMOTE_ADDR="192.0.2.9").get("/nodes").status_code == 429
    assert Api(op_token, REMOTE_ADDR="192.0.2.10").get("/nodes").status_code == 200


def test_tokens_are_stored_as_digests_only(op_token):
    row = ApiToken.objects.get(name="ci")
    assert op_token not in (row.digest, row.prefix) and op_token.split("_", 2)[2] not in row.digest


def test_the_account_page_makes_a_token_once_and_revokes_it(operator):
    answer = operator.post("/account/tokens/", {"name": "deploy"})
    assert answer.status_code == 200
    token = answer.context["made"]
    assert token.startswith("panel_") and token in answer.content.decode()
    assert answer["Cache-Control"] == "no-store"
    assert Api(token).get("/nodes").status_code == 200
    listing = operator.get("/account/tokens/").content.decode()
    assert "deploy" in listing and token not in listing
    row = ApiToken.objects.get(name="deploy")
    operator.post("/account/tokens/", {"revoke": row.pk})
    assert Api(token).get("/nodes").status_code == 401


def test_the_schema_and_the_docs_are_served_from_the_panel_itself(client):
    schema = client.get(f"{API}/openapi.json")
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    docs = client.get(f"{API}/docs")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn" not in html.lower() and "/static/ninja/swagger-ui-bundle" in html


def test_adding_a_node_in_two_steps_registering_and_seeing_it_done(op_token, sshd, make_type):
    make_type("noop")
    server = sshd()
    api = Api(op_token)
    scanned = api.send("post", "/nodes/scan", {"host": "127.0.0.1", "port": server.port})
    assert scanned.status_code == 200, scanned.content
    assert scanned.json()["fingerprint"] == fingerprint(server.host_key)
    body = {"name": "s1", "host": "127.0.0.1", "port": server.port}
    wrong = api.send("post", "/nodes", {**body, "fingerprint": "SHA256:" + "A" * 43})
    assert wrong.status_code == 409 and wrong.json()["field"] == "fingerprint"
    assert not Node.objects.exists()
    added = api.send("post", "/nodes", {**body, "fingerprint": scanned.json()["fingerprint"]})
    assert added.status_code == 201, added.content
    node_id = added.json()["id"]
    registered = api.send("post", f"/nodes/{node_id}/register", {"types": ["noop"]})
    assert registered.status_code == 200 and registered.json()["count"] >= 1
    seen = api.get(f"/nodes/{node_id}").json()
    [desync] = [d for d in seen["desyncs"] if d["type"] == "noop"]
    assert desync["state"] == "pending" and desync["held"] in (None, "needs")
    run_nodes([node_id])  # what the cluster does, synchronously
    seen = api.get(f"/nodes/{node_id}").json()
    assert seen["desyncs"] == [] and seen["status"] == "ready"
    [run] = [r for r in seen["recent_runs"] if r["type"] == "noop"]
    assert run["outcome"] == "success"
    assert "nothing to do" in api.get(f"/runs/{run['id']}").json()["log"]


def test_a_node_says_why_each_desynchronization_is_not_running(op_token, make_node, make_type):
    first, second = make_type("first", priority=1), make_type("second", priority=2)
    node = make_node("n1")
    api = Api(op_token)
    api.send("post", f"/nodes/{node.pk}/register", {"types": ["first", "second"]})
    desyncs = api.get(f"/nodes/{node.pk}").json()["desyncs"]
    assert [d["type"] for d in desyncs] == [first.name, second.name]
    assert desyncs[0]["held"] is None
    assert (desyncs[1]["held"], desyncs[1]["waits_for"]) == ("needs", "First")
    assert desyncs[1]["why"].startswith("Waiting for First")
    api.send("post", f"/nodes/{node.pk}/maintenance", {"on": True})
    desyncs = api.get(f"/nodes/{node.pk}").json()["desyncs"]
    assert {d["held"] for d in desyncs} == {"maintenance"}
    assert api.get(f"/nodes/{node.pk}").json()["hold"] == "maintenance"


def test_a_path_that_names_no_operation_is_a_json_404(op_token):
    for path in ("/nodes/abc", "/nodes/1%0A/roles", "/nothing"):
        answer = Api(op_token).send("post", path, {})
        assert answer.status_code == 404, path
        assert answer.json()["detail"] == "No such API path."


def test_the_node_list_runs_the_same_queries_for_few_and_many_nodes(op_token, make_node):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    api = Api(op_token)
    api.get("/nodes")  # the token's last use is written once, not on every request
    counts = []
    for total in (2, 40):
        for i in range(Node.objects.count(), total):
            make_node(f"n{i:02}")
        with CaptureQueriesContext(connection) as queries:
            assert api.get("/nodes", page_size=100).json()["count"] == total
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_edit_roles_skip_and_delete_go_through_the_actions(op_token, make_node, make_type):
    from nodes.models import Role

    make_type("noop")
    Role.objects.create(name="web")
    node = make_node("n1", transport="ssh", host="127.0.0.1", port=1)
    local = make_node("here")  # the panel's own server: superusers only
    api = Api(op_token)
    refused = api.send("patch", f"/nodes/{local.pk}", {"name": "there"})
    assert refused.status_code == 403 and "superuser" in refused.json()["detail"]
    edited = api.send("patch", f"/nodes/{node.pk}", {"name": "n2", "maintenance": True})
    assert edited.status_code == 200, edited.content
    assert (edited.json()["name"], edited.json()["maintenance"]) == ("n2", True)
    taken = api.send("patch", f"/nodes/{node.pk}", {"name": "n2", "roles": ["nope"]})
    assert taken.status_code == 422 and taken.json()["field"] == "roles"
    given = api.send("post", f"/nodes/{node.pk}/roles", {"give": ["web"]})
    assert given.status_code == 200 and api.get(f"/nodes/{node.pk}").json()["roles"] == ["web"]
    api.send("post", f"/nodes/{node.pk}/register", {"types": ["noop"]})
    skipped = api.send("post", f"/nodes/{node.pk}/skip", {})
    assert skipped.json()["nodes"][0]["outcome"] == "skipped"
    moved = api.send("patch", f"/nodes/{node.pk}", {"port": 2222})
    assert moved.status_code == 422 and moved.json()["field"] == "fingerprint"
    deleted = api.send("delete", f"/nodes/{node.pk}")
    assert deleted.status_code == 200 and not Node.objects.filter(pk=node.pk).exists()
    assert api.get(f"/nodes/{node.pk}").status_code == 404
    actions = [e["action"] for e in api.get("/audit").json()["items"]]
    assert actions[:3] == ["node.delete", "work.skip", "work.register"]


@pytest.mark.parametrize(
    "args",
    [("nobody",), ("op", "--revoke", "never-made"), ("op", "--name", " "), ("op", "--name", "ci")],
)
def test_apitoken_refuses_bad_arguments_with_exit_2(op_token, args):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError) as refused:
        apitoken(*args)
    assert refused.value.returncode == 2 and str(refused.value)


def test_maintenance_through_the_api_can_stop_the_running_type(op_token, make_node, make_type):
    from sync.engine import claim_node, register_desync, start_next_run
    from sync.models import DesyncState, Node2Sync, Outcome, SyncRun

    node = make_node("n1")
    register_desync([node], [make_type("t-hang")])
    assert claim_node(node.pk, "hanging-worker")
    ticket = start_next_run(node.pk, "hanging-worker")
    answer = Api(op_token).send(
        "post", f"/nodes/{node.pk}/maintenance", {"on": True, "stop_running": True}
    )
    assert answer.status_code == 200, answer.content
    assert SyncRun.objects.get(pk=ticket.run_id).outcome == Outcome.CANCELLED
    assert Node2Sync.objects.get(node=node).state == DesyncState.HELD

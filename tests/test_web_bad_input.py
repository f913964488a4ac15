"""Every page, every user, malformed ids and parameters: never a 500; POST without a CSRF
token refused; no page shows private key material."""

import pytest
from django.test import Client
from django.urls import Resolver404, resolve, reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from nodes.access import OPERATORS
from nodes.keys import panel_key_path, panel_public_key
from tests.conftest import client_for
from web.forms import NodeAddForm
from web.urls import urlpatterns

pytestmark = pytest.mark.django_db

NODE_URLS = [p.name for p in urlpatterns if "<int:pk>" in str(p.pattern)]
FLEET_URLS = [p.name for p in urlpatterns if "<int:pk>" not in str(p.pattern)]
BAD_IDS = ["0", "999999", str(2**63), str(2**70), "00001"]
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
examples = hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _paths(node) -> list[str]:
    paths = [reverse(f"nodes:{name}") for name in FLEET_URLS]
    paths += [reverse(f"nodes:{name}", args=[node.pk]) for name in NODE_URLS]
    paths += [f"/nodes/{bad}/{suffix}" for bad in BAD_IDS for suffix in ("", "live/", "edit/")]
    paths += ["/nodes/abc/", "/nodes/-1/", "/nodes/1.5/edit/"]
    return paths


def _resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


@pytest.fixture
def users(django_user_model, operator, reader):
    return {"anonymous": Client(), "reader": reader, "operator": operator}


def test_it_never_answers_500_to_any_user_on_any_page(users, make_node):
    node = make_node()
    for who, client in users.items():
        for path in _paths(node):
            for method in ("get", "post"):
                response = getattr(client, method)(path, {"page": "x", "sort": "?"})
                assert response.status_code < 500, (who, method, path)
                if who == "anonymous" and _resolves(path):
                    assert response.status_code == 302, path
                    assert response["Location"].startswith(reverse("login")), path


def test_it_refuses_every_post_without_a_csrf_token(django_user_model, make_node):
    node = make_node()
    client = client_for(django_user_model, "csrf-op", OPERATORS, enforce_csrf_checks=True)
    for path in _paths(node)[: len(FLEET_URLS) + len(NODE_URLS)]:
        response = client.post(path, {"action": "resync", "nodes": [node.pk], "on": "true"})
        assert response.status_code == 403, path
    node.refresh_from_db()
    assert not node.maintenance and node.desyncs.count() == 0


def test_it_never_shows_private_key_material(operator, make_node, make_ssh_node):
    make_node()
    ssh_node, _ = make_ssh_node()
    private = panel_key_path().read_text()
    secret = "".join(private.splitlines()[1:-1])[20:80]
    pages = [
        reverse("nodes:list"),
        reverse("nodes:add"),
        reverse("nodes:detail", args=[ssh_node.pk]),
        reverse("nodes:edit", args=[ssh_node.pk]),
        reverse("nodes:accept_key", args=[ssh_node.pk]),
    ]
    shown_public_key = False
    for path in pages:
        body = operator.get(path).content.decode()
        assert "PRIVATE KEY" not in body and secret not in body, path
        shown_public_key |= panel_public_key().split()[1] in body
    assert shown_public_key  # the add page shows the public key, and only that


@examples
@given(
    name=texts,
    transport=st.sampled_from(["local", "ssh", "", "x"]),
    host=texts,
    port=st.one_of(texts, st.integers().map(str)),
    username=texts,
    roles=st.lists(st.one_of(texts, st.integers().map(str)), max_size=3),
)
def test_it_validates_any_add_form_input_without_crashing(
    name, transport, host, port, username, roles
):
    form = NodeAddForm(
        data={
            "name": name,
            "transport": transport,
            "host": host,
            "port": port,
            "username": username,
            "roles": roles,
        }
    )
    if form.is_valid():
        node = form.instance
        node.full_clean()  # what is valid for the form is valid for the model
    else:
        assert form.errors


@examples
@given(
    params=st.dictionaries(
        st.sampled_from(
            [
                "q",
                "status",
                "role",
                "has_error",
                "maintenance",
                "processing",
                "sort",
                "page",
                "ids",
                "since",
                "mode",
            ]
        ),
        texts,
        max_size=5,
    )
)
def test_it_lists_nodes_for_any_query_parameters(params, operator, make_node):
    for path in (reverse("nodes:list"), reverse("nodes:live")):
        assert operator.get(path, params).status_code in (200, 204, 286), (path, params)


def test_it_explains_a_missing_node_on_its_own_page(operator):
    response = operator.get("/nodes/999999/")
    assert response.status_code == 404
    assert "the node may have been deleted" in response.content.decode()

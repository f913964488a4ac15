"""The shape every action on one node shares (``web.views.actions.node_action``): POST only,
the Operators' permission, 404 for a missing node, a message, then back to where the action
came from; htmx requests get the same target as ``HX-Redirect``."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from sync.engine import claim_node

pytestmark = pytest.mark.django_db

ONE_NODE_ACTIONS = ["resync", "retry", "force", "cancel", "skip", "maintenance"]


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.parametrize("name", ONE_NODE_ACTIONS)
def test_every_action_has_the_same_shape(operator, reader, make_node, name):
    node = make_node("alpha")
    url = reverse(f"nodes:{name}", args=[node.pk])
    detail = reverse("nodes:detail", args=[node.pk])

    assert operator.get(url).status_code == 405
    assert reader.post(url, {"on": "1"}).status_code == 403
    assert operator.post(reverse(f"nodes:{name}", args=[999999]), {"on": "1"}).status_code == 404

    response = operator.post(url, {"on": "0"})
    assert response.status_code == 302 and response["Location"] == detail
    assert len(messages_of(response)) == 1

    response = operator.post(url, {"on": "0", "next": "/nodes/?status=ready"})
    assert response["Location"] == "/nodes/?status=ready"
    response = operator.post(url, {"on": "0", "next": "https://elsewhere.example/"})
    assert response["Location"] == detail


def test_an_htmx_action_is_told_where_to_go(operator, make_node):
    node = make_node("alpha")

    response = operator.post(
        reverse("nodes:retry", args=[node.pk]), {"next": "/nodes/"}, headers={"HX-Request": "true"}
    )

    assert response.status_code == 200
    assert response["HX-Redirect"] == "/nodes/"
    assert "Nothing is waiting on alpha" in messages_of(response)[0]


def test_force_says_nothing_was_running_when_a_session_held_the_node_between_types(
    operator, make_node
):
    """No run was recorded as forced: the message says so rather than guessing from the lease."""
    node = make_node("alpha")
    assert claim_node(node.pk, "idle-session")

    response = operator.post(reverse("nodes:force", args=[node.pk]))

    assert "Nothing was running on alpha" in messages_of(response)[0]
    node.refresh_from_db()
    assert node.lease_owner == ""

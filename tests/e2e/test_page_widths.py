"""Every page fits its window, on a laptop (1366x900) and on a phone (390x844), with the
longest names and errors the panel allows; on a phone the list is one card per node, its
Status and condition first, the counters folded away.

Set PANEL_SCREENSHOTS to a folder to keep a PNG of every page measured (to look at them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.utils import timezone

from nodes.models import Node
from sync.actions.nodes import set_maintenance
from sync.actor import Actor
from sync.engine import claim_node, register_desync, start_next_run
from sync.models import DesyncState, Node2Sync, Outcome, SyncRun
from tests.e2e.conftest import login

pytestmark = pytest.mark.django_db(transaction=True)

SIZES = {"laptop": (1366, 900), "phone": (390, 844)}

# A 300-character error as a node gives one: words, and long tokens that do not break.
ERROR = (
    "E: Unable to locate package libnginx-mod-http-headers-more-filter-and-more-things "
    "while running /usr/bin/apt-get -o DPkg::Lock::Timeout=300 install --yes -- "
    "nginx-extras-with-a-very-long-package-name-that-goes-on-without-breaks "
    "(sha256:0123456789abcdef0123456789abcdef0123456789abcdef) after 3 tries."
)
assert len(ERROR) == 300, len(ERROR)

# Role names of 50 characters (the most a role name may have): words joined by hyphens, by
# underscores, and one without any break at all.
LONG_ROLES = (
    "web-frontend-nodes-of-the-west-region-behind-proxy",
    "database_replicas_which_answer_the_reporting_query",
    "r" * 50,
)
assert all(len(name) == 50 for name in LONG_ROLES)


def long_name(kind: str) -> str:
    """A 63-character node name (the most a node name may have)."""
    name = f"{kind}-node-of-the-cluster-with-the-longest-name-allowed-"
    return (name + "x" * 63)[:63]


def with_condition(node: Node, condition: str) -> None:
    Node.objects.filter(pk=node.pk).update(
        condition=condition,
        conditions=[{"type": condition, "since": timezone.now().isoformat(), "message": ERROR}],
        last_error=ERROR,
        maintenance=condition == "maintenance",
    )


@pytest.fixture
def fleet(make_node, make_type, sshd):
    """One node per condition, each with a failed desynchronization and a run with a log."""
    action = make_type("e2e-long-type-name-for-widths", priority=10)
    # A type after it waits for it: "Waiting for … (failing: <the error>)" in Next attempt.
    later = make_type("e2e-later-type-name-for-widths", priority=20)
    nodes = {}
    for condition in ("unreachable", "host-key-changed", "maintenance", "failing"):
        node = make_node(long_name(condition))
        register_desync([node], [action, later])
        Node2Sync.objects.filter(node=node, action=action).update(
            state=DesyncState.FAILED, attempts=3, last_error=ERROR
        )
        Node2Sync.objects.filter(node=node, action=later).update(attempts=1, last_error=ERROR)
        SyncRun.objects.create(
            node=node,
            action=action,
            outcome=Outcome.FAILED,
            started_at=timezone.now(),
            finished_at=timezone.now(),
            worker="worker-" + "w" * 60,
            log=(ERROR + "\n") * 3,
        )
        with_condition(node, condition)
        nodes[condition] = node
    running = make_node(long_name("running"))
    register_desync([running], [action])
    assert claim_node(running.pk, "hanging-worker-" + "h" * 40)
    assert start_next_run(running.pk, "hanging-worker-" + "h" * 40) is not None
    SyncRun.objects.filter(node=running).update(
        current_command="/bin/sh -c " + "x" * 200, current_output=ERROR * 2
    )
    nodes["running"] = running
    # An SSH node whose pinned key is another server's: the accept page shows the change.
    served, other = sshd(), sshd()
    ssh = Node.objects.create(
        name=long_name("ssh"),
        transport="ssh",
        host="127.0.0.1",
        port=served.port,
        host_key=other.host_key,
    )
    nodes["ssh"] = ssh
    # Entries on the audit trail that name the long names.
    set_maintenance(Actor.command("maintenance"), list(nodes.values()), True)
    set_maintenance(Actor.command("maintenance"), list(nodes.values()), False)
    with_condition(nodes["maintenance"], "maintenance")
    alert_history(nodes)
    return nodes


def alert_history(nodes: dict[str, Node]) -> None:
    """Every node's change in a digest, sent to a channel of a long URL and not (yet) to
    another, whose receiver answered with a long error."""
    from django.test import override_settings

    from sync.alerts.digests import make_digest
    from sync.clock import read_db_now
    from sync.models import AlertDelivery, ConditionChange, DeliveryState

    now = read_db_now()
    ConditionChange.objects.bulk_create(
        ConditionChange(
            at=now, node=n, node_name=n.name, condition="unreachable", entered=True, message=ERROR
        )
        for n in nodes.values()
    )
    with override_settings(PANEL_ALERT_GATHER_SECONDS=0):
        digest = make_digest([])
    host = "smtp-relay-with-a-long-name-" + "x" * 50 + ".example.com"
    AlertDelivery.objects.create(
        digest=digest,
        channel="a" * 64,
        label=f"mailtos://alerts-user:****@{host}/operations-team%40example.com",
        next_attempt_at=now,
        attempts=3,
        last_error=ERROR,
    )
    AlertDelivery.objects.create(
        digest=digest,
        channel="b" * 64,
        label="jsons://hooks.example.com/" + "p" * 80,
        state=DeliveryState.SENT,
        sent_at=now,
        next_attempt_at=now,
        attempts=1,
    )


def data_pages(nodes: dict[str, Node]) -> dict[str, str]:
    """The data pages, with a role on every node and a file of a long path and content."""
    from nodes.models import Role
    from sync.synchronizers.files import ManagedFile
    from sync.synchronizers.users import ManagedUser

    role = Role.objects.create(name="role-with-a-long-name")
    role.nodes.set(nodes.values())
    # Several roles on every node, three of them with the longest names allowed.
    long_roles = [Role.objects.create(name=name) for name in LONG_ROLES]
    for node in nodes.values():
        node.roles.add(*long_roles)
    path = "/etc/" + "/".join(["a-folder-with-a-long-name-and-no-breaks"] * 6) + "/file.conf"
    conf = ManagedFile.objects.create(path=path, content=ERROR * 3)
    conf.roles.add(role)
    user = ManagedUser.objects.create(name="u" * 32, authorized_keys="")
    user.roles.add(role)
    pages = {"data-files": "/files/", "data-roles": "/roles/"}
    pages["data-role"] = f"/roles/{role.pk}/"
    for number, long_role in enumerate(long_roles):
        pages[f"data-role-long-{number}"] = f"/roles/{long_role.pk}/"
    pages["data-role-long-edit"] = f"/roles/{long_roles[-1].pk}/edit/"
    pages["data-file"] = f"/files/{conf.pk}/"
    pages["data-file-edit"] = f"/files/{conf.pk}/edit/"
    pages["data-user"] = f"/users/{user.pk}/"
    return pages


def measure(page, name: str, size: str) -> tuple[int, int]:
    """The document's width and the window's, after the page settled; a PNG if asked."""
    page.wait_for_load_state("load")
    folder = os.environ.get("PANEL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{folder}/{size}-{name}.png", full_page=True)
    document, window = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if size == "laptop":
        # On a laptop no table hides a column in a scroll of its own either.
        hidden = page.evaluate(
            "Math.max(0, ...Array.from(document.querySelectorAll('.table-responsive'),"
            " e => e.scrollWidth - e.clientWidth))"
        )
        document = window + hidden if hidden > 0 else document
    return document, window


@pytest.mark.parametrize("size", SIZES)
def test_no_page_is_wider_than_the_window(page, superuser, fleet, size):
    width, height = SIZES[size]
    page.set_viewport_size({"width": width, "height": height})
    login(page, superuser)
    pages = {"list": "/nodes/"}
    for condition, node in fleet.items():
        pages[f"node-{condition}"] = f"/nodes/{node.pk}/"
    pages["accept-key"] = f"/nodes/{fleet['ssh'].pk}/accept-key/"
    pages["delete"] = f"/nodes/{fleet['failing'].pk}/delete/"
    pages["edit"] = f"/nodes/{fleet['ssh'].pk}/edit/"
    pages["add"] = "/nodes/add/"
    pages["audit"] = "/audit/"
    pages["audit-alerts"] = "/audit/alerts/"
    pages["tokens"] = "/account/tokens/"
    for name, url in data_pages(fleet).items():
        pages[name] = url
    too_wide = {}
    squeezed = {}
    for name, url in pages.items():
        page.goto(url)
        document, window = measure(page, name, size)
        if document > window:
            too_wide[name] = document
        if name.startswith("node-"):
            # The desynchronizations' Last error is a readable column, not a letter wide.
            ems = page.evaluate(
                "Array.from(document.querySelectorAll('#desyncs td.error-cell'), td =>"
                " td.getBoundingClientRect().width / parseFloat(getComputedStyle(td).fontSize))"
            )
            if min(ems, default=12) < 12 or (name == "node-failing" and not ems):
                squeezed[name] = ems
    # The bulk confirmation: every node selected on the list, then Delete….
    page.goto("/nodes/")
    page.locator("#select-all").check()
    page.get_by_role("button", name="Delete…").click()
    page.wait_for_url("**/nodes/bulk/")
    document, window = measure(page, "delete-bulk", size)
    if document > window:
        too_wide["delete-bulk"] = document
    assert not too_wide, f"wider than the {width} px window: {too_wide}"
    assert not squeezed, f"Last error narrower than 12 em (widths in em): {squeezed}"


def test_on_a_phone_the_list_leads_with_each_nodes_status(page, superuser, fleet):
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, superuser)
    page.goto("/nodes/")
    counters = page.locator("#status-counts")
    assert not counters.is_visible(), "the counters are not folded away"
    first = page.locator("td.status-cell").first
    box = first.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    assert box["y"] < 844, f"the first node's Status is below the first screen: {box}"
    assert (
        "Failing" in first.inner_text()
        or "Unreachable" in first.inner_text()
        or (first.locator(".status-condition").count())
    )


def test_a_roles_node_picker_with_200_nodes_fits_and_filters(page, superuser, make_node):
    """Two hundred nodes of long names on a role's form: the picker scrolls in its own box
    within the window at both sizes, and a few letters find the node to give the role."""
    from nodes.models import Role

    for number in range(200):
        make_node(long_name(f"picker-{number:03d}"), host=f"10.0.0.{number}")
    role = Role.objects.create(name=LONG_ROLES[0])
    wanted = Node.objects.get(name__startswith="picker-142-")
    login(page, superuser)
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"/roles/{role.pk}/edit/")
        document, window = measure(page, "role-picker", size)
        assert document <= window, f"{size}: {document} px on a {window} px window"
        box = page.locator("#id_nodes_choices").bounding_box()
        assert box is not None and box["height"] < height / 2, box
    picker = page.get_by_role("searchbox", name="Filter the nodes by name")
    picker.fill("picker-142")
    visible = page.locator("#id_nodes_choices .form-check:visible")
    assert visible.count() == 1
    page.get_by_label(wanted.name).check()
    picker.press("Enter")  # narrows the list, does not submit the form
    assert page.url.endswith(f"/roles/{role.pk}/edit/")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("button", name="Confirm and save").click()
    page.wait_for_url(f"**/roles/{role.pk}/")
    assert list(role.nodes.values_list("name", flat=True)) == [wanted.name]

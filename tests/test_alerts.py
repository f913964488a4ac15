"""Alerts: condition changes are rows written with the condition, gathered into digests (one per
period, a flapping node one line), delivered through apprise from an outbox that retries a
receiver that is down, and shown on the node page and the audit page with channels masked.

The receivers here are real (an HTTP server taking apprise's json:// posts); the whole chain
with a real sshd, SMTP, a real cluster and ``manage.py alerts`` is
tests/integration/test_alerts_live.py.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from nodes.choices import NodeCondition
from sync import conditions
from sync.alerts.changes import node_changes
from sync.alerts.channels import channel_for
from sync.alerts.digests import compose, deliver, make_digest, retry_after
from sync.alerts.process import AlertsProcess, watch_cluster
from sync.clock import db_now_plus, read_db_now
from sync.engine import check_health, register_desync, run_nodes, set_maintenance
from sync.errors import FailureKind
from sync.heartbeat import beat
from sync.models import (
    CLUSTER_LATE,
    AlertDelivery,
    AlertDigest,
    AlertState,
    ClusterHeartbeat,
    ConditionChange,
    DeliveryState,
    Node2Sync,
)
from tests.receivers import HttpReceiver, free_port

pytestmark = pytest.mark.django_db

SECRET = "s3cretPassw0rd"


def changes(**filters) -> list[tuple[str, str, bool]]:
    return [
        (c.node_name, c.condition, c.entered)
        for c in ConditionChange.objects.filter(**filters).order_by("pk")
    ]


def fail(node, kind=FailureKind.FAILED, action="software", message="E: no such package"):
    with transaction.atomic():
        conditions.after_failure(node.pk, action, action.title(), kind, message, read_db_now())


def succeed(node, still_failing=None):
    with transaction.atomic():
        conditions.after_success(node.pk, read_db_now(), still_failing)


@pytest.fixture
def quick(settings):
    """Digests as often as wanted, none held back to gather, retries after a second."""
    settings.PANEL_ALERT_DIGEST_SECONDS = 1
    settings.PANEL_ALERT_GATHER_SECONDS = 0
    settings.PANEL_ALERT_RETRY_SECONDS = 1
    return settings


@pytest.fixture
def receiver():
    server = HttpReceiver().start()
    yield server
    server.stop()


def words(answer) -> str:
    """A page's text as a reader sees it: no tags, one space between words."""
    return " ".join(re.sub(r"<[^>]+>", "", answer.content.decode()).split())


def allow_next_digest() -> None:
    """As if the period since the last digest had passed (the database's clock decides)."""
    AlertState.objects.update(last_digest_at=db_now_plus(-3600))


def make_due() -> None:
    AlertDelivery.objects.update(next_attempt_at=db_now_plus(-1))


# --- Changes are rows, written with the condition ------------------------------------------


def test_it_writes_a_row_when_a_node_enters_and_leaves_each_condition(make_node, settings):
    settings.SYNC = {**settings.SYNC, "unreachable_grace_seconds": 0}
    node = make_node("n1")

    fail(node, FailureKind.UNREACHABLE, message="refused the connection")
    fail(node, FailureKind.UNREACHABLE, message="refused the connection")  # still: no row
    succeed(node)
    fail(node, FailureKind.HOST_KEY, message="the host key changed")
    with transaction.atomic():
        conditions.host_key_accepted(node.pk)
    with transaction.atomic():
        conditions.mark_stuck({node.pk: "no progress"}, read_db_now())
    with transaction.atomic():
        conditions.mark_stuck({}, read_db_now())

    assert changes() == [
        ("n1", "unreachable", True),
        ("n1", "unreachable", False),
        ("n1", "host-key-changed", True),
        ("n1", "host-key-changed", False),
        ("n1", "stuck", True),
        ("n1", "stuck", False),
    ]
    first = ConditionChange.objects.order_by("pk").first()
    assert first.node == node and first.message == "refused the connection"


def test_a_new_failing_type_on_a_failing_node_counts_and_a_retry_does_not(make_node):
    node = make_node("n1")
    fail(node, action="software")
    with transaction.atomic():
        conditions.retrying(node.pk, "software", "Software")  # new words, same failure
    fail(node, action="software", message="E: another error")  # same type: no change
    fail(node, action="files", message="checksum differs")  # another type: a change
    succeed(node)

    assert changes() == [("n1", "failing", True), ("n1", "failing", True), ("n1", "failing", False)]
    assert "Files failing: checksum differs" in ConditionChange.objects.order_by("pk")[1].message


def test_maintenance_is_no_alert(make_node):
    node = make_node("n1")
    set_maintenance([node], True)
    set_maintenance([node], False)
    assert changes() == []


def test_the_change_is_in_the_transaction_of_the_condition(make_node):
    node = make_node("n1")
    with pytest.raises(RuntimeError), transaction.atomic():
        conditions.after_failure(
            node.pk, "software", "Software", FailureKind.FAILED, "E: x", read_db_now()
        )
        raise RuntimeError("the run's transaction rolls back")
    node.refresh_from_db()
    assert node.conditions == [] and changes() == []


def test_a_condition_added_later_is_alerted_about_too():
    before = [{"type": "maintenance", "since": "", "message": "m"}]
    after = before + [{"type": "drifted", "since": "", "message": "a file was changed by hand"}]
    assert [(c.condition, c.entered) for c in node_changes(before, after)] == [("drifted", True)]
    assert [(c.condition, c.entered) for c in node_changes(after, before)] == [("drifted", False)]
    assert all(c.alerts for c in NodeCondition if c != NodeCondition.MAINTENANCE)


def test_a_failing_run_through_the_engine_writes_its_change(make_node, make_type):
    async def broken(ctx) -> None:
        raise ValueError("no such unit")

    node = make_node("n1")
    register_desync([node], [make_type("t-broken", run=broken)])
    run_nodes([node.pk])
    assert changes() == [("n1", "failing", True)]


def test_a_held_node_is_not_stuck_and_so_no_alert(make_node, make_type, settings):
    settings.SYNC = {**settings.SYNC, "stuck_seconds": 0, "probe_seconds": 3600}
    # Heard from and its facts fresh: neither a probe nor a facts refresh is due.
    node = make_node("n1", last_contact_at=timezone.now(), facts_at=timezone.now())
    register_desync([node], [make_type("t-wait")])
    Node2Sync.objects.update(state="held", next_attempt_at=db_now_plus(3600))
    check_health()
    assert changes() == []


# --- Digests ---------------------------------------------------------------------------------


def change(name: str, condition: str, entered: bool, seconds: int, message: str = ""):
    return ConditionChange(
        at=timezone.now() + timedelta(seconds=seconds),
        node_name=name,
        condition=condition,
        entered=entered,
        message=message,
    )


def test_a_digest_lists_every_change_and_a_flapping_node_is_one_line_with_its_count():
    flaps = [change("web1", "unreachable", i % 2 == 0, i, "refused") for i in range(5)]
    title, body = compose(
        flaps
        + [
            change("db1", "failing", True, 1, "Software failing: E: no such package"),
            change("", CLUSTER_LATE, True, 2, "no cluster heartbeat since 10:00:00 UTC"),
        ]
    )
    lines = body.splitlines()
    assert title == "Panel alert: cluster late, db1 failing, web1 unreachable"
    assert lines[0].startswith("7 changes of 2 nodes and the cluster, ")
    assert "The cluster is late: no cluster heartbeat since 10:00:00 UTC" in lines[2]
    assert "db1 is failing: Software failing: E: no such package" in lines[3]
    (web1,) = [line for line in lines if "web1" in line]
    assert "unreachable changed 5 times (flapping); now it is unreachable: refused" in web1


def test_one_digest_per_period_however_many_changes(make_node, quick):
    node = make_node("n1")
    fail(node)
    first = make_digest([])
    assert first is not None and "n1 failing" in first.title

    succeed(node)
    fail(node, action="files")
    quick.PANEL_ALERT_DIGEST_SECONDS = 300
    assert make_digest([]) is None  # the period has not passed: the changes wait

    allow_next_digest()
    second = make_digest([])
    assert list(second.changes.order_by("pk").values_list("entered", flat=True)) == [False, True]
    assert ConditionChange.objects.filter(digest=None).count() == 0


def test_a_digest_waits_to_gather_changes_that_come_together(make_node, quick):
    quick.PANEL_ALERT_GATHER_SECONDS = 30
    fail(make_node("n1"))
    assert make_digest([]) is None
    ConditionChange.objects.update(at=db_now_plus(-31))
    assert make_digest([]) is not None


# --- The outbox ------------------------------------------------------------------------------


def test_each_channel_gets_the_digest_through_apprise(make_node, quick, receiver):
    fail(make_node("n1"))
    make_digest([channel_for(receiver.url())])
    assert deliver([channel_for(receiver.url())]) == 1

    (message,) = receiver.messages
    assert message["title"] == "Panel alert: n1 failing"
    assert "n1 is failing: Software failing: E: no such package" in message["message"]
    delivery = AlertDelivery.objects.get()
    assert delivery.state == DeliveryState.SENT and delivery.sent_at and delivery.attempts == 1


def test_a_receiver_that_is_down_gets_every_digest_in_order_once_it_is_up(
    make_node, quick, caplog
):
    quick.PANEL_ALERT_RETRY_SECONDS = 60  # the retry is moved to now by hand below
    down = HttpReceiver(free_port())
    channel = channel_for(down.url(f"panel:{SECRET}"))
    node = make_node("n1")
    fail(node)
    make_digest([channel])
    with caplog.at_level(logging.WARNING, logger="sync.alerts"):
        assert deliver([channel]) == 0
    succeed(node)
    allow_next_digest()
    make_digest([channel])

    first, second = AlertDelivery.objects.order_by("digest_id")
    assert first.attempts == 1 and first.state == DeliveryState.PENDING
    assert "Connection error" in first.last_error and SECRET not in first.last_error
    assert first.next_attempt_at > read_db_now()  # its backoff
    assert second.attempts == 0  # waits behind the first
    assert deliver([channel]) == 0  # not due yet: nothing tried
    assert AlertDelivery.objects.get(pk=first.pk).attempts == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "json://panel:****@127.0.0.1" in logged and SECRET not in logged

    down.start()
    try:
        make_due()
        assert deliver([channel]) == 2
    finally:
        down.stop()
    assert ["n1 failing" in m["title"] for m in down.messages] == [True, False]
    assert "no longer failing" in down.messages[1]["title"]
    first.refresh_from_db()
    assert first.state == DeliveryState.SENT and first.attempts == 2


def test_a_channel_that_is_down_holds_up_no_other(make_node, quick, receiver):
    down = channel_for(HttpReceiver(free_port()).url())
    up = channel_for(receiver.url())
    fail(make_node("n1"))
    make_digest([down, up])
    assert deliver([down, up]) == 1
    assert len(receiver.messages) == 1


def test_retries_back_off_to_an_hour(settings):
    settings.PANEL_ALERT_RETRY_SECONDS = 30
    assert 15 <= retry_after(1) <= 30
    assert 30 <= retry_after(2) <= 60
    assert 1800 <= retry_after(20) <= 3600


# --- The cluster -----------------------------------------------------------------------------


def test_a_cluster_turning_late_and_running_again_are_changes(settings):
    late = settings.PANEL_CLUSTER_LATE_SECONDS
    beat()
    assert watch_cluster(waited=late) is None  # running, as ever: nothing written
    ClusterHeartbeat.objects.update(seen_at=db_now_plus(-late - 1))
    assert watch_cluster(waited=late) is True
    assert watch_cluster(waited=late) is None  # still late: one change, not one per pass
    beat()
    assert watch_cluster(waited=late) is False
    assert changes() == [("", CLUSTER_LATE, True), ("", CLUSTER_LATE, False)]
    assert "no cluster heartbeat since" in ConditionChange.objects.order_by("pk")[0].message


def test_late_is_judged_only_after_watching_for_the_threshold(settings):
    """Started together with a cluster that was stopped with the panel: its old heartbeat
    is no alert, the beat a moment later will come. A cluster that never comes is late."""
    late = settings.PANEL_CLUSTER_LATE_SECONDS
    ClusterHeartbeat.objects.create(name="q", host="h", seen_at=db_now_plus(-86400))
    assert watch_cluster(waited=late - 1) is None
    assert watch_cluster(waited=late) is True
    ClusterHeartbeat.objects.all().delete()
    ConditionChange.objects.all().delete()
    AlertState.objects.all().delete()
    assert watch_cluster(waited=late - 1) is None
    assert watch_cluster(waited=late) is True
    assert ConditionChange.objects.get().message == "no cluster has run yet"


def test_one_pass_watches_makes_and_sends(quick, receiver):
    ClusterHeartbeat.objects.create(name="q", host="h", seen_at=db_now_plus(-3600))
    process = AlertsProcess([channel_for(receiver.url())])
    process.started -= quick.PANEL_CLUSTER_LATE_SECONDS  # it has watched long enough
    process.one_pass()
    (message,) = receiver.messages
    assert message["title"] == "Panel alert: cluster late"
    assert message["message"].startswith("1 change of the cluster, ")


# --- Pages and the command: what was sent, channels masked ----------------------------------


@pytest.fixture
def sent_and_failed(make_node, quick, receiver):
    """n1 failed; its digest reached one channel and not the other (which has a password)."""
    down = channel_for(HttpReceiver(free_port()).url(f"panel:{SECRET}"))
    node = make_node("n1")
    fail(node)
    make_digest([channel_for(receiver.url()), down])
    deliver([channel_for(receiver.url()), down])
    quick.PANEL_ALERT_URLS = [receiver.url(), down.url]
    return node


def test_the_node_page_shows_what_was_sent_about_the_node(reader, sent_and_failed, receiver):
    page = words(reader.get(reverse("nodes:detail", args=[sent_and_failed.pk])))
    assert "Became failing: Software failing: E: no such package" in page
    assert "In the digest of" in page and "(Panel alert: n1 failing):" in page
    assert f"Sent to json://127.0.0.1:{receiver.port}/hook at " in page
    assert "Not sent yet to json://panel:****@127.0.0.1" in page
    assert "1 attempt failed (A Connection error occurred" in page
    assert SECRET not in page


def test_the_audit_page_shows_the_digests_and_the_alerts_page_the_channels(
    reader, sent_and_failed
):
    audit = reader.get(reverse("audit")).content.decode()
    assert "Alerts sent" in audit and "Panel alert: n1 failing" in audit
    assert "n1 is failing: Software failing" in audit
    alerts = reader.get(reverse("audit_alerts") + "?node=n1").content.decode()
    assert "Panel alert: n1 failing" in alerts and "json://panel:****@127.0.0.1" in alerts
    assert SECRET not in audit + alerts
    assert "No alert digest yet about n2" in reader.get(
        reverse("audit_alerts") + "?node=n2"
    ).content.decode()


def test_a_user_without_the_view_right_sees_no_alerts(nobody):
    assert nobody.get(reverse("audit_alerts")).status_code == 403


def test_the_command_refuses_a_url_apprise_does_not_know_without_showing_it(settings):
    settings.PANEL_ALERT_URLS = [f"nosuchservice://panel:{SECRET}@example.com"]
    with pytest.raises(CommandError) as refused:
        call_command("alerts", "--once")
    assert refused.value.returncode == 2
    assert "entry 1 is not a URL apprise knows" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_the_command_tests_every_channel(settings, receiver, capsys):
    settings.PANEL_ALERT_URLS = [receiver.url()]
    call_command("alerts", "--test")
    assert "hook: sent" in capsys.readouterr().out
    assert receiver.messages[0]["title"] == "Panel alert: test message"


def test_no_digest_is_lost_when_nothing_is_configured(make_node, quick):
    """Without channels the digests are still made (the pages say nothing was sent), so
    adding a channel later does not flood it with old changes."""
    fail(make_node("n1"))
    digest = make_digest([])
    assert digest.deliveries.count() == 0 and AlertDigest.objects.count() == 1

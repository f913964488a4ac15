"""``manage.py alerts``: watch the cluster and send the alert digests (``sync.alerts``).

Runs until SIGTERM or Ctrl-C (``runpanel`` starts it beside the web server and the cluster;
``deploy/systemd/cluster-panel-alerts.service`` on a server). ``--once`` makes one pass and
exits (cron, tests); ``--test`` sends a short message to every channel now and says which
took it. A URL of ``PANEL_ALERT_URLS`` that apprise does not know stops it with exit code 2
(shown masked): better no process than one that drops alerts in silence.
"""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand, CommandError

from sync.alerts.channels import BadChannel, configured_channels, send
from sync.alerts.process import PASS_SECONDS, AlertsProcess
from sync.cli import bad_arguments

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Command(BaseCommand):
    help = (
        "Watch the synchronization cluster and send alert digests of node and cluster "
        "condition changes to PANEL_ALERT_URLS (apprise URLs). Runs until stopped; --once "
        "makes one pass, --test sends a test message to every channel."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")
        parser.add_argument(
            "--test", action="store_true", help="Send a test message to every channel and exit."
        )
        parser.add_argument(
            "--every",
            type=float,
            default=PASS_SECONDS,
            help=f"Seconds between passes (default {PASS_SECONDS:g}).",
        )

    def handle(self, *args, once: bool, test: bool, every: float, **options):
        if not 0.05 <= every <= 60:
            raise bad_arguments(f"--every must be from 0.05 to 60 seconds, not {every:g}")
        try:
            channels = configured_channels()
        except BadChannel as e:
            raise bad_arguments(str(e)) from None
        if test:
            return self._send_test(channels)
        process = AlertsProcess(channels)
        if once:
            process.one_pass()
            return
        names = ", ".join(c.label for c in channels) or "none (PANEL_ALERT_URLS is empty)"
        self.stdout.write(f"Watching the cluster; alert channels: {names}.")
        self.stdout.flush()
        received: list[int] = []
        previous = {
            signum: signal.signal(signum, lambda signum, frame: received.append(signum))
            for signum in HANDLED_SIGNALS
        }
        try:
            process.run(stop=lambda: bool(received), every=every)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _send_test(self, channels) -> None:
        if not channels:
            raise bad_arguments("PANEL_ALERT_URLS is empty: there is no channel to test")
        failed = 0
        for channel in channels:
            error = send(
                channel,
                "Panel alert: test message",
                "A test message from the cluster panel's alerts (manage.py alerts --test).",
            )
            if error is None:
                self.stdout.write(f"{channel.label}: sent")
            else:
                failed += 1
                self.stdout.write(f"{channel.label}: NOT sent: {error}")
        if failed:
            raise CommandError(f"{failed} of {len(channels)} channels did not take the message")

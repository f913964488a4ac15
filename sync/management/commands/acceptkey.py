from django.core.management.base import BaseCommand, CommandError

from nodes.choices import Transport
from nodes.transports import TransportError
from sync import actions
from sync.actor import Actor
from sync.cli import bad_arguments, expected_fingerprint, nodes_by_name


class Command(BaseCommand):
    help = (
        "Accept the host key an SSH node presents now (after a reinstall, say), and let its "
        "waiting synchronizers run. With --fingerprint the key is pinned only if it is the "
        "one you checked on the node (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Node name.")
        parser.add_argument(
            "--fingerprint",
            help="The SHA256:... fingerprint the node's key must have; anything else is refused.",
        )

    def handle(self, *args, name: str, fingerprint: str | None = None, **options):
        # Without --fingerprint the key scanned here is pinned as it is (what the command has
        # always done, and what scripts after a planned reinstall rely on); it is still the
        # one key scanned, proved and printed, never a later scan.
        expected = expected_fingerprint(fingerprint)
        [node] = nodes_by_name([name])
        if node.transport != Transport.SSH:
            raise bad_arguments(f"{name} is a {node.transport} node: it has no host key")
        try:
            presented = actions.scan_confirmed_key(
                node.host, node.port, fingerprint_=expected or ""
            )
        except TransportError as e:
            raise CommandError(f"cannot read the key of {name}: {e}", returncode=1) from None
        except actions.KeyNotConfirmed as e:
            raise CommandError(f"{name}: {e}", returncode=1) from None
        try:
            accepted = actions.accept_host_key(Actor.command("acceptkey"), node, presented)
        except TransportError as e:
            raise CommandError(f"cannot accept the key of {name}: {e}", returncode=1) from None
        change = accepted.extra["change"]
        if change.changed:
            self.stdout.write(
                f"{name}: host key changed from {change.old_fingerprint} to "
                f"{change.new_fingerprint}; accepted and pinned."
            )
        else:
            self.stdout.write(f"{name}: host key unchanged ({change.new_fingerprint}).")
        if expected is None and change.changed:
            self.stdout.write(
                f"Pinned {change.new_fingerprint} without checking it: next time, compare it "
                "with the node's own key and pass it with --fingerprint."
            )

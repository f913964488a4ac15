from django.core.management.base import BaseCommand, CommandError

from nodes.choices import Transport
from nodes.hostkeys import scan_host_key
from nodes.keys import fingerprint as key_fingerprint
from nodes.transports import TransportError
from sync.actor import Actor
from sync.cli import bad_arguments, nodes_by_name
from sync.inventory import accept_host_key

FINGERPRINT_PREFIX = "SHA256:"


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
        expected = fingerprint.strip() if fingerprint is not None else None
        if expected is not None and not expected.startswith(FINGERPRINT_PREFIX):
            raise bad_arguments(
                f"--fingerprint must be a SHA256 fingerprint as ssh-keygen -l prints it "
                f"({FINGERPRINT_PREFIX}...), not {expected!r}"
            )
        [node] = nodes_by_name([name])
        if node.transport != Transport.SSH:
            raise bad_arguments(f"{name} is a {node.transport} node: it has no host key")
        try:
            presented = scan_host_key(node.host, node.port)
        except TransportError as e:
            raise CommandError(f"cannot read the key of {name}: {e}", returncode=1) from None
        presented_fingerprint = key_fingerprint(presented)
        if expected is not None and presented_fingerprint != expected:
            raise CommandError(
                f"{name} presents the host key {presented_fingerprint}, not the expected "
                f"{expected}: nothing was pinned. Check the fingerprint on the node itself; "
                "if it is not the one presented, someone may be intercepting the connection.",
                returncode=1,
            )
        try:
            change = accept_host_key(node, presented, by=Actor.command("acceptkey"))
        except TransportError as e:
            raise CommandError(f"cannot accept the key of {name}: {e}", returncode=1) from None
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

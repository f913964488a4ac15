from django.core.management.base import BaseCommand, CommandError

from nodes.choices import Transport
from nodes.hostkeys import accept_host_key
from nodes.transports import TransportError
from sync.cli import bad_arguments, nodes_by_name


class Command(BaseCommand):
    help = (
        "Accept the host key an SSH node presents now (after a reinstall, say), and let its "
        "waiting synchronizers run. Check the fingerprint before you do."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Node name.")

    def handle(self, *args, name: str, **options):
        [node] = nodes_by_name([name])
        if node.transport != Transport.SSH:
            raise bad_arguments(f"{name} is a {node.transport} node: it has no host key")
        try:
            change = accept_host_key(node)
        except TransportError as e:
            raise CommandError(f"cannot accept the key of {name}: {e}", returncode=1) from None
        if change.changed:
            self.stdout.write(
                f"{name}: host key changed from {change.old_fingerprint} to "
                f"{change.new_fingerprint}; accepted and pinned."
            )
        else:
            self.stdout.write(f"{name}: host key unchanged ({change.new_fingerprint}).")

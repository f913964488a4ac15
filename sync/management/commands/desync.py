from django.core.management.base import BaseCommand

from nodes.models import Node
from sync.actions import register_work
from sync.actor import Actor
from sync.cli import actions_by_name, bad_arguments, nodes_by_name


class Command(BaseCommand):
    help = (
        "Register desynchronizations, exactly as the panel does when data changes: "
        "the command-line twin of a 'synchronize again' button."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME", help="Node names.")
        parser.add_argument("--all", action="store_true", help="Every node.")
        parser.add_argument(
            "--action",
            action="append",
            default=[],
            metavar="TYPE",
            help="Synchronizer type (repeatable; default every type).",
        )

    def handle(self, *args, names: list[str], all: bool, action: list[str], **options):
        if all == bool(names):
            raise bad_arguments("name the nodes, or give --all (not both)")
        nodes = list(Node.objects.all()) if all else nodes_by_name(names)
        actions = actions_by_name(action) if action else None
        result = register_work(Actor.command("desync"), nodes, actions)
        self.stdout.write(f"Registered {result.count} desynchronizations on {len(nodes)} nodes.")

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand
from django.db import transaction

from nodes.choices import Transport
from nodes.models import Node
from sync.cli import bad_arguments
from sync.engine import register_desync


class Command(BaseCommand):
    help = "Add a cluster node and register every synchronizer type for it."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Node name (lower-case letters, digits, dots, hyphens).")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--local", action="store_true", help="The panel's own server.")
        where.add_argument("--host", help="Host name or address of an SSH node.")
        parser.add_argument("--port", type=int, default=22, help="SSH port (default 22).")
        parser.add_argument("--user", default="root", help="SSH user (default root).")

    def handle(
        self, *args, name: str, local: bool, host: str | None, port: int, user: str, **options
    ):
        if not local:
            raise bad_arguments(
                "SSH nodes are not available yet in this version; add the panel's own server "
                "with --local"
            )
        node = Node(
            name=name, transport=Transport.LOCAL, host="localhost", port=port, username=user
        )
        try:
            node.full_clean()
        except ValidationError as e:
            messages = "; ".join(
                f"{field}: {' '.join(errs)}" for field, errs in e.message_dict.items()
            )
            raise bad_arguments(f"cannot add node {name!r}: {messages}") from None
        with transaction.atomic():
            node.save()
            count = register_desync([node])
        self.stdout.write(
            f"Added local node {node.name}; registered {count} synchronizer types. "
            "The django-q cluster runs them; `manage.py nodesync` runs them now."
        )

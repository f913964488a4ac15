import json

from django.core.management.base import BaseCommand
from django.db.models import Count

from nodes.models import Node
from sync.cli import what_to_do


class Command(BaseCommand):
    help = (
        "List the cluster nodes: name, address, status, processing, pending count and the "
        "most severe condition (--json: every condition, the word its Status cell leads with "
        "and whether the node is usable)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    def handle(self, *args, as_json: bool = False, **options):
        nodes = list(Node.objects.annotate(pending=Count("desyncs")).order_by("name"))
        rows = [
            {
                "name": n.name,
                "address": n.address,
                "status": n.status,
                "shown": n.shown,
                "processing": n.is_processing,
                "pending": n.pending,
                "last_error": n.last_error,
                "conditions": [
                    {"type": c["type"], "since": c["since"], "message": c["message"]}
                    for c in n.conditions
                ],
                "usable": n.usable,
            }
            for n in nodes
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("No nodes. Add one with `manage.py addnode NAME --local`.")
            return
        fmt = "{:<24} {:<28} {:<16} {:<16} {:<10} {:>7}  {}"
        self.stdout.write(
            fmt.format("NAME", "ADDRESS", "SHOWN", "STATUS", "PROCESSING", "PENDING", "CONDITION")
        )
        for r in rows:
            self.stdout.write(
                fmt.format(
                    r["name"],
                    r["address"],
                    r["shown"],
                    r["status"],
                    "yes" if r["processing"] else "no",
                    r["pending"],
                    r["conditions"][0]["message"][:80] if r["conditions"] else "",
                )
            )
        for node in nodes:
            if hint := what_to_do(node):
                self.stdout.write(f"{node.name}: {hint}")

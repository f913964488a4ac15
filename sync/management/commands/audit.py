import json

from django.core.management.base import BaseCommand

from sync.audit import as_dict, entries, parse_since
from sync.cli import bad_arguments


class Command(BaseCommand):
    help = (
        "Show the audit trail, newest first: who did what, when, from where, on which nodes "
        "or data. --since 7d (or 12h, 30m, 2w, or a date), --node NAME (kept after the node "
        "is deleted), --action NAME, --actor NAME, --limit N, --json."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="Only entries since then: 7d, 12h, 30m, 2w or a date.")
        parser.add_argument("--node", default="", help="Only entries about this node name.")
        parser.add_argument("--action", default="", help="Only this action (e.g. node.edit).")
        parser.add_argument("--actor", default="", help="Only entries by this user name.")
        parser.add_argument("--limit", type=int, default=200, help="At most N (default 200).")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    def handle(
        self,
        *args,
        since: str | None = None,
        node: str = "",
        action: str = "",
        actor: str = "",
        limit: int = 200,
        as_json: bool = False,
        **options,
    ):
        if limit < 1:
            raise bad_arguments("--limit must be at least 1")
        try:
            moment = parse_since(since) if since is not None else None
        except ValueError as e:
            raise bad_arguments(f"--since: {e}") from None
        rows = [
            as_dict(e) for e in entries(since=moment, node=node, action=action, actor=actor)[:limit]
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("No audit entries.")
            return
        for r in rows:
            targets = ", ".join(f"{t['kind']} {t['name']}" for t in r["targets"])
            where = f" from {r['address']}" if r["address"] else ""
            self.stdout.write(
                f"{r['at'][:19]}  {r['actor']}{where}  {r['action']}  {targets}  {r['summary']}"
            )

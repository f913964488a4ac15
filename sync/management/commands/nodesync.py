import time

from django.core.management.base import BaseCommand, CommandError

from nodes.models import Node
from sync import actions, engine
from sync.actor import Actor
from sync.cli import actions_by_name, bad_arguments, nodes_by_name, what_to_do
from sync.models import Node2Sync, Outcome, SyncAction


class Command(BaseCommand):
    help = (
        "Run a synchronization pass in the foreground until the selected desynchronizations "
        "are done or failed. Takes over work whose lease expired (any lease with --force). "
        "--cancel ends a node's running synchronizer (it fails and waits for its retry); "
        "--skip drops desynchronizations without running them. Exit 0 when all completed, "
        "1 when some failed, 2 on bad arguments."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--node",
            action="append",
            default=[],
            metavar="NAME",
            help="Only this node (repeatable; default every node).",
        )
        parser.add_argument(
            "--action",
            action="append",
            default=[],
            metavar="TYPE",
            help="Only this synchronizer type (repeatable; default every type).",
        )
        what = parser.add_mutually_exclusive_group()
        what.add_argument(
            "--force",
            action="store_true",
            help="Take over nodes even from a live worker (a hanging run), then run them.",
        )
        what.add_argument(
            "--cancel",
            action="store_true",
            help="End the synchronizer running on --node now; its type waits for its retry.",
        )
        what.add_argument(
            "--skip",
            action="store_true",
            help="Drop --node's desynchronizations (or only --action's) without running them.",
        )

    def handle(
        self,
        *args,
        node: list[str],
        action: list[str],
        force: bool,
        cancel: bool = False,
        skip: bool = False,
        **options,
    ):
        if (cancel or skip) and not node:
            raise bad_arguments("--cancel and --skip need --node NAME")
        nodes = nodes_by_name(node) if node else list(Node.objects.all())
        actions_ = actions_by_name(action) if action else None
        action_ids = [a.pk for a in actions_] if actions_ else None
        by = Actor.command("nodesync")
        if cancel:
            if actions_:
                raise bad_arguments("--cancel ends whatever runs on the node: drop --action")
            self._cancel(nodes, by)
            return
        if skip:
            self._skip(nodes, actions_, by)
            return

        if force:
            # Taken from whoever holds them, each recorded as forced by whoever runs this;
            # the sessions below then run them here.
            for n in [n for n in nodes if n.lease_owner]:
                actions.force_work(by, n, hand_to_cluster=False)
        else:
            for n in [n for n in nodes if n.maintenance]:
                self.stdout.write(f"  {n.name}: in maintenance, skipped (--force runs it)")
            nodes = [n for n in nodes if not n.maintenance]
        failed: dict[str, str] = {}
        completed = 0
        waiting_shown: set[str] = set()
        remaining = self._with_work(nodes, action_ids)
        if not remaining:
            self.stdout.write("Nothing to synchronize.")
            return
        self.stdout.write(f"Synchronizing {len(remaining)} node(s)...")
        while remaining:
            results = engine.run_nodes(
                [n.pk for n in remaining],
                action_ids=action_ids,
                ignore_backoff=True,
                force=force,
                progress=self._progress,
                role="nodesync",
            )
            for r in results:
                completed += r.completed
                if r.failed:
                    node = Node.objects.get(pk=r.node.pk)
                    hint = what_to_do(node)
                    failed[r.node.name] = node.last_error + (f" ({hint})" if hint else "")
                elif not r.claimed and r.node.name not in waiting_shown:
                    waiting_shown.add(r.node.name)
                    owner = (
                        Node.objects.filter(pk=r.node.pk)
                        .values_list("lease_owner", flat=True)
                        .first()
                    )
                    self.stdout.write(
                        f"  {r.node.name}: busy with {owner or 'another worker'}; "
                        "waiting (--force takes it over)"
                    )
            remaining = [n for n in self._with_work(remaining, action_ids) if n.name not in failed]
            if remaining and any(not r.claimed for r in results):
                time.sleep(0.5)
            force = False  # taken over once; after that we wait like anyone else

        summary = f"{completed} run(s) completed, {len(failed)} node(s) failed."
        if failed:
            for name, error in failed.items():
                self.stderr.write(f"  {name}: {error}")
            raise CommandError(f"nodesync: {summary}", returncode=1)
        self.stdout.write(self.style.SUCCESS(summary))

    def _cancel(self, nodes: list[Node], by: Actor) -> None:
        for n in nodes:
            ended = actions.cancel_work(by, n).first.titles
            if ended:
                self.stdout.write(
                    f"  {n.name}: cancelled {', '.join(ended)}; recorded as cancelled by "
                    f"{by.label}. "
                    "It waits for its retry (`nodesync --node NAME` runs it now)."
                )
            else:
                self.stdout.write(f"  {n.name}: nothing is running.")

    def _skip(self, nodes: list[Node], types: list[SyncAction] | None, by: Actor) -> None:
        for n in nodes:
            skipped = actions.skip_work(by, n, types).first.titles
            if skipped:
                self.stdout.write(
                    f"  {n.name}: skipped {', '.join(skipped)} without running; "
                    f"recorded as skipped by {by.label}."
                )
            else:
                self.stdout.write(f"  {n.name}: nothing to skip.")

    def _with_work(self, nodes: list[Node], action_ids: list[int] | None) -> list[Node]:
        rows = Node2Sync.objects.filter(node__in=nodes)
        if action_ids is not None:
            rows = rows.filter(action_id__in=action_ids)
        busy = set(rows.values_list("node_id", flat=True))
        return [n for n in nodes if n.pk in busy]

    def _progress(self, report: engine.RunReport) -> None:
        mark = "ok" if report.outcome == Outcome.SUCCESS else report.outcome
        line = f"  {report.node}: {report.action} ... {mark} ({report.seconds:.1f}s)"
        if report.error:
            line += f": {report.error}"
        self.stdout.write(line)

from django.core.management.base import BaseCommand, CommandError

from nodes.keyrotation import (
    DEFAULT_AUTHORIZED_KEYS,
    DEFAULT_PARALLEL,
    BadRotationInput,
    NodeRotation,
    RotationBusy,
    check_template,
    parse_from,
)
from nodes.keys import panel_public_key
from sync.actions.panelkey import rotate_panel_key
from sync.actor import Actor

BAD_ARGUMENTS = 2


class Command(BaseCommand):
    help = (
        "Print the panel's public SSH key, to add to authorized_keys on each node; or, with "
        "--rotate, replace it on every SSH node. Exit status of --rotate: 0 when every SSH "
        "node accepts the new key (the old key file is then removed), 1 when some are left "
        "(unreachable or failed: they keep the old key, run --rotate again to finish them), "
        "2 for bad input."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="Make a new key and install it on every SSH node (add, prove it logs in, "
            "remove the old key's line); run again to finish the nodes that were left.",
        )
        parser.add_argument(
            "--from",
            dest="from_addresses",
            metavar="ADDR[,ADDR]",
            help="With --rotate: restrict the new key's line to these addresses or networks "
            '(from="..." in authorized_keys): the panel\'s addresses as the nodes see them.',
        )
        parser.add_argument(
            "--authorized-keys",
            default=DEFAULT_AUTHORIZED_KEYS,
            metavar="FILE",
            help="With --rotate: the file the nodes' sshd reads keys from, in sshd's "
            "AuthorizedKeysFile syntax (%%h home, %%u user; relative to the home). "
            f"Default {DEFAULT_AUTHORIZED_KEYS.replace('%', '%%')}.",
        )
        parser.add_argument(
            "--parallel",
            type=int,
            default=DEFAULT_PARALLEL,
            metavar="N",
            help=f"With --rotate: nodes worked on at once (default {DEFAULT_PARALLEL}).",
        )

    def handle(self, *args, rotate: bool, from_addresses, authorized_keys, parallel, **options):
        if not rotate:
            if from_addresses is not None:
                raise CommandError("--from needs --rotate", returncode=BAD_ARGUMENTS)
            self.stdout.write(panel_public_key())
            return
        try:
            rotation = rotate_panel_key(
                Actor.command("panelkey"),
                from_addresses=parse_from(from_addresses),
                template=check_template(authorized_keys),
                parallel=parallel,
                on_node=self._progress,
            )
        except BadRotationInput as e:
            raise CommandError(str(e), returncode=BAD_ARGUMENTS) from None
        except RotationBusy as e:
            raise CommandError(str(e), returncode=1) from None
        result = rotation.extra["rotation"]
        rotated = len(result.nodes) - len(result.left)
        self.stdout.write(
            f"Panel key {result.new_fingerprint} (was {result.old_fingerprint}): "
            f"{rotated} node(s) rotated, {len(result.left)} left."
        )
        if result.left:
            names = ", ".join(n.node for n in result.left)
            raise CommandError(
                f"rotate again: {names} still accept only the old key, which is kept for "
                "them; run `manage.py panelkey --rotate` again once they are reachable",
                returncode=1,
            )
        if result.old_key_removed:
            self.stdout.write("Every SSH node accepts the new key; the old key file is removed.")

    def _progress(self, outcome: NodeRotation, done: int, total: int) -> None:
        self.stdout.write(f"[{done}/{total}] {outcome.line()}")
        self.stdout.flush()

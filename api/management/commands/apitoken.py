from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from sync import actions
from sync.actor import Actor
from sync.cli import bad_arguments
from sync.models import ApiToken


class Command(BaseCommand):
    help = (
        "Make an API token for USER and print it (once: only its digest is kept). "
        "--read-only: the token may only read. --name NAME (default: cli). "
        "--list: USER's tokens. --revoke NAME: revoke USER's token NAME."
    )

    def add_arguments(self, parser):
        parser.add_argument("user", help="The panel user the token acts as.")
        parser.add_argument("--name", default="cli", help="The token's name (default: cli).")
        parser.add_argument("--read-only", action="store_true", help="The token may only read.")
        parser.add_argument("--list", action="store_true", dest="list_", help="List the tokens.")
        parser.add_argument("--revoke", metavar="NAME", help="Revoke the token NAME.")

    def handle(self, *args, user, name="cli", read_only=False, list_=False, revoke=None, **kw):
        model = get_user_model()
        try:
            owner = model.objects.get(**{model.USERNAME_FIELD: user})
        except model.DoesNotExist:
            raise bad_arguments(f"unknown user: {user!r}") from None
        acting = Actor.command("apitoken")
        if list_:
            for t in ApiToken.objects.filter(user=owner):
                state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "live"
                used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
                self.stdout.write(f"{t.name}\t{t.prefix}\t{t.scope}\t{state}\tlast used {used}")
            return
        if revoke is not None:
            token = ApiToken.objects.filter(
                user=owner, name=revoke, revoked_at__isnull=True
            ).first()
            if token is None:
                raise bad_arguments(f"{user} has no live token named {revoke!r}")
            actions.revoke_token(acting, token)
            self.stdout.write(f"Revoked the token {revoke} of {user}.")
            return
        try:
            made = actions.create_token(acting, owner, name, read_only=read_only)
        except ValidationError as e:
            raise bad_arguments(" ".join(e.messages)) from None
        self.stdout.write(made.extra["token"])

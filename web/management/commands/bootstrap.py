"""Make a fresh instance usable: an admin account and the panel's own server as a node.

Run by ``make run`` after ``migrate``, so it must be idempotent and never ask anything: a second
run changes nothing and prints how to log in.
"""

import os
import re
import secrets
import socket
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from nodes.models import Node, node_name_validator
from panel.instance import private_dir
from web.serving import bind_address, panel_url

ADMIN_USERNAME = "admin"
PASSWORD_FILE_NAME = "admin-password.txt"


def local_node_name(hostname: str | None = None) -> str:
    """The short host name made valid as a node name (like a host name), else ``local``."""
    if hostname is None:
        hostname = socket.gethostname()
    name = hostname.split(".", 1)[0].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", name)[:63].strip("-")
    try:
        node_name_validator(name)
    except ValidationError:
        return "local"
    return name


def generated_password(user, attempts: int = 20) -> str:
    """A random password that the site's password validators accept like any other.

    ``create_superuser`` does not run the validators, so without this check a generated
    password could be one the admin could not set again through a form.
    """
    for _ in range(attempts):
        password = secrets.token_urlsafe(12)
        try:
            validate_password(password, user)
        except ValidationError:
            continue
        return password
    raise CommandError("No generated password passed AUTH_PASSWORD_VALIDATORS; check them.")


def write_password_file(path: Path, password: str) -> None:
    """Write the password readable by the owner only, also when the file already exists."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(password + "\n")


class Command(BaseCommand):
    help = (
        "Set up a fresh instance: create the superuser 'admin' with a generated password "
        "when there is no superuser, and add this server as a local node when there are no "
        "nodes. Safe to run again."
    )

    def handle(self, *args, **options):
        self.ensure_superuser()
        self.ensure_local_node()
        # Where `runpanel` (or `make run PORT=...`) will listen: both read PANEL_BIND.
        try:
            url = panel_url(*bind_address())
        except ValueError as e:
            raise CommandError(str(e), returncode=2) from None
        self.stdout.write(f"Open {url} to log in.")

    def ensure_superuser(self) -> None:
        User = get_user_model()
        existing = User._default_manager.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            name = existing.get_username()
            self.stdout.write(
                f"Log in as {name} (password set earlier; "
                f"`manage.py changepassword {name}` resets it)"
            )
            return

        if User._default_manager.filter(**{User.USERNAME_FIELD: ADMIN_USERNAME}).exists():
            raise CommandError(
                f"A user {ADMIN_USERNAME!r} exists but is not a superuser; make it one in the "
                "admin or create a superuser with `manage.py createsuperuser`."
            )
        password = generated_password(User(**{User.USERNAME_FIELD: ADMIN_USERNAME}))
        path = Path(settings.DATA_DIR) / PASSWORD_FILE_NAME
        with transaction.atomic():
            User._default_manager.create_superuser(
                **{User.USERNAME_FIELD: ADMIN_USERNAME}, email="", password=password
            )
            # Inside the transaction: if the file cannot be written, no account is left
            # behind whose password nobody knows.
            write_password_file(path, password)
        self.stdout.write(
            self.style.SUCCESS(f"Created the superuser {ADMIN_USERNAME} with the password: ")
            + password
        )
        self.stdout.write(
            f"(shown only now; also saved to {path}, readable by its owner only; "
            f"`manage.py changepassword {ADMIN_USERNAME}` changes it)"
        )

    def ensure_local_node(self) -> None:
        if Node.objects.exists():
            return
        name = local_node_name()
        self.stdout.write(f"No nodes yet: adding this server as the local node {name!r}.")
        call_command("addnode", name, "--local", stdout=self.stdout, stderr=self.stderr)

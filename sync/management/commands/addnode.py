import getpass
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.views.decorators.debug import sensitive_variables

from nodes.choices import Transport
from nodes.hostkeys import scan_host_keys
from nodes.keys import fingerprint as key_fingerprint
from nodes.keys import panel_public_key
from nodes.models import Node, username_validator
from nodes.onboarding import clean_from, install_key_with_password
from nodes.transports import TransportError
from sync import actions
from sync.actor import Actor
from sync.cli import bad_arguments, expected_fingerprint, roles_by_name
from sync.inventory import LINE_FORMAT, parse_node_lines


class Command(BaseCommand):
    help = (
        "Add a cluster node and register every synchronizer type for it. An SSH node's host "
        "key is pinned (its fingerprint printed) and the panel's key must already log in. "
        "With --from-file, add many SSH nodes: one 'name host[:port] [user]' per line."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "name", nargs="?", help="Node name (lower-case letters, digits, dots, hyphens)."
        )
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--local", action="store_true", help="The panel's own server.")
        where.add_argument("--host", help="Host name or address of an SSH node.")
        where.add_argument(
            "--from-file",
            metavar="FILE",
            help=f"Add the SSH nodes of FILE ('-': standard input), one '{LINE_FORMAT}' per "
            "line (port 22 and user root unless given; # starts a comment). Every line is "
            "checked before any host is scanned; every key is scanned and printed, then the "
            "nodes are added with those keys (a key that changed meanwhile is refused).",
        )
        parser.add_argument("--port", type=int, help="SSH port (default 22).")
        parser.add_argument("--user", help="SSH user (default root).")
        parser.add_argument(
            "--fingerprint",
            help="The SHA256:... fingerprint the node's host key must have (ssh-keygen -lf "
            "/etc/ssh/ssh_host_*_key.pub on the node); any other key is refused, nothing added.",
        )
        parser.add_argument(
            "--install-key-as",
            metavar="LOGIN",
            help="Before logging in, install the panel's key for --user with a one-time "
            "password of LOGIN (root, --user, or a user who may sudo: sudo -S), read from the "
            "terminal or the first line of standard input, never from the command line. Needs "
            "--fingerprint: the password goes only to the server that holds that key.",
        )
        parser.add_argument(
            "--key-from",
            default="",
            metavar="PATTERNS",
            help='With --install-key-as: the key gets from="PATTERNS" (the panel\'s address).',
        )
        parser.add_argument(
            "--role",
            action="append",
            default=[],
            metavar="NAME",
            help="Give the node this role (repeatable).",
        )

    def handle(
        self,
        *args,
        name: str,
        local: bool,
        host: str | None,
        port: int | None,
        user: str | None,
        fingerprint: str | None = None,
        role: list[str] | None = None,
        from_file: str | None = None,
        **options,
    ):
        if from_file is not None:
            given = [
                flag
                for flag, value in (
                    ("NAME", name),
                    ("--fingerprint", fingerprint),
                    ("--port", port),
                    ("--user", user),
                    ("--install-key-as", options.get("install_key_as")),
                )
                if value is not None and value != ""
            ]
            if given:
                raise bad_arguments(
                    f"--from-file takes no {', '.join(given)}: each line of the file gives "
                    "its node's name, host, port and user"
                )
            return self._add_from_file(from_file, roles_by_name(role or []))
        if not name:
            raise bad_arguments("give the node's NAME (or --from-file FILE)")
        port = 22 if port is None else port
        user = "root" if user is None else user
        if not local and host is None:
            raise bad_arguments("one of --local, --host or --from-file is required")
        expected = expected_fingerprint(fingerprint)
        install_as = options.get("install_key_as")
        if install_as and (local or expected is None):
            raise bad_arguments(
                "--install-key-as needs an SSH node and --fingerprint: the password is sent "
                "only to the server that holds the key you checked"
            )
        try:
            key_from = clean_from(options.get("key_from") or "")
            if install_as:
                username_validator(install_as)
        except (ValueError, ValidationError) as e:
            raise bad_arguments(f"cannot add node {name!r}: {_said_any(e)}") from None
        if local and expected is not None:
            raise bad_arguments("--fingerprint is for SSH nodes: a local node has no host key")
        roles = roles_by_name(role or [])
        if not local and not (host or "").strip():
            raise bad_arguments(f"cannot add node {name!r}: --host is empty")
        if local:
            node = Node(name=name, transport=Transport.LOCAL, host="localhost")
        else:
            node = Node(name=name, transport=Transport.SSH, host=host, port=port, username=user)
        try:
            node.full_clean()
        except ValidationError as e:
            raise bad_arguments(f"cannot add node {name!r}: {_said(e)}") from None
        if not local:
            password = _read_password(install_as, node) if install_as else None
            self._scan_and_check(node, expected, install_as, password, key_from)
            password = None
        try:
            added = actions.add_node(Actor.command("addnode"), node, roles)
        except ValidationError as e:  # e.g. the same host:port added meanwhile
            raise bad_arguments(f"cannot add node {name!r}: {_said(e)}") from None
        if not local:
            # Only now: the key is pinned once the node is saved, not when it was scanned.
            self.stdout.write(
                f"Host key of {node.host}:{node.port}: {key_fingerprint(node.host_key)} "
                f"({node.host_key.split()[0]}), pinned."
            )
        self.stdout.write(
            f"Added {node.transport} node {node.name} ({node.address}); registered {added.count} "
            "synchronizer types. The django-q cluster runs them; `manage.py nodesync` runs "
            "them now."
        )

    @sensitive_variables("password")
    def _scan_and_check(
        self,
        node: Node,
        expected: str | None,
        install_as: str | None = None,
        password: str | None = None,
        key_from: str = "",
    ) -> None:
        """Scan the key (the one ``--fingerprint`` names, if given), install the panel's key
        with the one-time password if given (only to that key's holder), and log in."""
        from nodes.hostkeys import check_login

        try:
            node.host_key = actions.scan_confirmed_key(
                node.host, node.port, fingerprint_=expected or ""
            )
            if install_as and password is not None:
                self.stdout.write(
                    f"Installing the panel's key for {node.username} as {install_as}..."
                )
                install_key_with_password(node, install_as, password, key_from)
        except (TransportError, actions.KeyNotConfirmed) as e:
            raise CommandError(f"cannot add node {node.name!r}: {e}", returncode=1) from None
        finally:
            password = None
        try:
            check_login(node)
        except TransportError as e:
            self.stderr.write(
                f"Host key of {node.host}:{node.port}: {key_fingerprint(node.host_key)}; "
                f"the panel's public key:\n{panel_public_key()}"
            )
            raise CommandError(f"cannot add node {node.name!r}: {e}", returncode=1) from None

    def _add_from_file(self, path: str, roles: list) -> None:
        """Check every line, scan every key (printed), then add them all in one action."""
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise bad_arguments(f"cannot read {path}: {e}") from None
        entries, errors = parse_node_lines(text)
        for error in errors:
            self.stderr.write(f"{path}:{error.line}: {error.reason}")
        if errors:
            raise bad_arguments(f"{len(errors)} bad line(s) in {path}: nothing was added")
        if not entries:
            raise bad_arguments(f"{path} names no node ({LINE_FORMAT} per line)")
        self.stdout.write(f"Scanning the host keys of {len(entries)} node(s)...")
        by_address = {e.address: e for e in entries}

        def scanned(address, answer) -> None:
            entry = by_address[address]
            where = f"line {entry.line}: {entry.name} ({entry.username}@{address[0]}:{address[1]})"
            if isinstance(answer, TransportError):
                self.stdout.write(f"{where}: not added, {answer}")
            else:
                self.stdout.write(f"{where}: {key_fingerprint(answer)} ({answer.split()[0]})")

        keys = scan_host_keys(list(by_address), progress=scanned)
        nodes = []
        for entry in entries:
            if not isinstance(keys[entry.address], TransportError):
                node = entry.node()
                node.host_key = keys[entry.address]
                nodes.append(node)
        self.stdout.write(f"Logging in and adding {len(nodes)} node(s)...")

        def added(node: Node, outcome: str) -> None:
            self.stdout.write(f"{node.name}: {outcome}")

        done = actions.add_nodes(Actor.command("addnode"), nodes, roles, progress=added)
        count = sum(1 for o in done.nodes if o.outcome == "added")
        summary = (
            f"Added {count} of {len(entries)} node(s); registered {done.count} synchronizer "
            "types. The django-q cluster runs them; `manage.py nodesync` runs them now."
        )
        if count < len(entries):
            raise CommandError(summary, returncode=1)
        self.stdout.write(summary)


@sensitive_variables("password")
def _read_password(login: str, node: Node) -> str:
    """The one-time password: asked on the terminal (not echoed), else the first line of
    standard input; never an argument, so no process list ever shows it."""
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password of {login}@{node.host}:{node.port}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise bad_arguments("--install-key-as: no password was given")
    return password


def _said_any(error: Exception) -> str:
    return _said(error) if isinstance(error, ValidationError) else str(error)


def _said(error: ValidationError) -> str:
    """A model's validation errors in one line: ``field: message; ...``."""
    if not hasattr(error, "error_dict"):
        return " ".join(error.messages)
    return "; ".join(f"{field}: {' '.join(errs)}" for field, errs in error.message_dict.items())

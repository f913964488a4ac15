"""Checks for every value the synchronizer types carry to nodes: names, paths, modes, shells.

Every value that ends up in a command on a node (a package, user or service name, a path, an
owner) is checked here by a strict validator, so nothing odd can reach an argument list. The
types' models use the validators; their runs check again before they act (``check_*``): a
row written by ``update()`` or raw SQL skips model validation.
"""

from __future__ import annotations

import hashlib
import posixpath

import asyncssh
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from nodes.transports.limits import has_control_chars

# Every pattern ends in \Z, not $: Python's $ also matches before a trailing newline.
#
# Package names as Debian (policy 5.6.1: lower case, digits, + - .) and RPM (also upper case
# and _) allow them, minus what apt or dnf would read as something else: a first character
# other than a letter or digit (an option), a trailing "-" (apt-get install NAME- removes
# NAME), a trailing single "+" (apt reads NAME+ as "install NAME", so the row would name one
# package and install another; "g++" and the other compilers ending in "++" are real
# packages and stay allowed), and ".deb"/".rpm" endings (both tools take those as files).
PACKAGE_NAME_RE = (
    r"^(?!.*\.(?i:deb|rpm)\Z)[A-Za-z0-9](?:[A-Za-z0-9+._-]{0,126}(?:[A-Za-z0-9._]|\+\+))?\Z"
)
# POSIX-portable user and group names as useradd accepts them by default.
POSIX_NAME_RE = r"^[a-z_][a-z0-9_-]{0,31}\Z"
# systemd unit or SysV script names; alphanumeric first, so never "." or ".." or an option.
SERVICE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,99}\Z"

validate_package_name = RegexValidator(
    PACKAGE_NAME_RE,
    "Use a package name: letters, digits and + . _ - (letter or digit first; not ending in "
    "- or a single +, nor in .deb or .rpm).",
)
validate_posix_name = RegexValidator(
    POSIX_NAME_RE, "Use a POSIX name: a-z, 0-9, _ and -, starting with a letter or _ (max 32)."
)
validate_service_name = RegexValidator(
    SERVICE_NAME_RE, "Use a service name: letters, digits and @ . _ - (letter or digit first)."
)


def validate_absolute_path(path: str) -> None:
    """An absolute, normalized path other than ``/``: what a node can safely write or remove."""
    if has_control_chars(path):
        raise ValidationError("The path must not contain control characters (NUL, newline...).")
    if not path.startswith("/"):
        raise ValidationError("The path must be absolute (start with /).")
    if ".." in path.split("/"):
        raise ValidationError("The path must not contain '..'.")
    if path == "/" or path.startswith("//") or posixpath.normpath(path) != path:
        raise ValidationError(
            "The path must be normalized (no //, /./ or trailing /) and not the root."
        )


def validate_shell(shell: str) -> None:
    if not shell.startswith("/") or has_control_chars(shell) or ":" in shell:
        raise ValidationError("The shell must be an absolute path (no ':' or control characters).")


def validate_mode(mode: int) -> None:
    if not 0 <= mode <= 0o7777:
        raise ValidationError("The mode must be between 0000 and 7777 (octal).")


# Mode bits that give more than the owner's rights to someone else: setuid and setgid (a
# program that runs as its owner or group) and write for everyone. A file the panel writes
# with them is a way to root on every node of its roles, so it takes a deliberate yes.
SPECIAL_MODE_BITS = {0o4000: "setuid", 0o2000: "setgid", 0o0002: "world-writable"}


def special_mode_bits(mode: int) -> list[str]:
    """The names of the special bits ``mode`` has (setuid, setgid, world-writable)."""
    return [name for bit, name in SPECIAL_MODE_BITS.items() if mode & bit]


def validate_special_bits(mode: int, allowed: bool) -> None:
    """Refuse setuid, setgid and world-write unless the "special bits" box says so."""
    bits = special_mode_bits(mode)
    if bits and not allowed:
        raise ValidationError(
            f'The mode {mode:04o} is {", ".join(bits)}: tick "Allow special bits" if the '
            "file really needs it, or use a mode such as 0644 or 0755.",
            code="special_bits",
        )


# Accounts the systems themselves have: Debian's base-passwd (/usr/share/base-passwd/passwd.master)
# and RHEL's setup package (/etc/passwd), plus a few every distribution's packages add. A
# managed user of one of these names would take over, lock or delete a system account on every
# node of its roles (the run refuses uid < 1000 and then fails there for ever).
SYSTEM_ACCOUNT_NAMES = frozenset(
    {
        # Debian base-passwd
        "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
        "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt",
        # RHEL setup
        "adm", "halt", "shutdown", "operator", "ftp", "tss",
        # added by the base system's packages on both
        "sshd", "messagebus", "dbus", "polkitd", "syslog", "uuidd", "ntp", "chrony",
        "postfix", "mysql", "postgres", "nginx", "apache", "nscd", "rpc", "rpcuser",
    }
)  # fmt: skip
SYSTEM_ACCOUNT_PREFIXES = ("systemd-",)


def validate_not_system_account(name: str) -> None:
    """Refuse a managed user named like an account the system itself has."""
    if name in SYSTEM_ACCOUNT_NAMES or name.startswith(SYSTEM_ACCOUNT_PREFIXES):
        raise ValidationError(
            f"{name} is a system account on Debian or RHEL nodes: the panel manages login "
            "accounts only. Choose another name.",
            code="system_account",
        )


def validate_authorized_keys(text: str) -> None:
    """Every line an OpenSSH public key as ``authorized_keys`` takes it: options such as
    ``from=`` or ``command=`` and ``cert-authority`` lines are fine; blank lines and ``#``
    comments too. The error names each line that is not a key, by number."""
    bad = []
    for number, line in enumerate(unix_newlines(text).split("\n"), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            asyncssh.import_authorized_keys(line)
        except Exception:  # noqa: BLE001 - asyncssh raises several kinds for bad input
            bad.append(number)
    if bad:
        lines = ", ".join(str(n) for n in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise ValidationError(
            f"Line{'s' if len(bad) > 1 else ''} {lines} {'are' if len(bad) > 1 else 'is'} not "
            "an OpenSSH public key (such as ssh-ed25519 AAAA... comment, optionally after "
            'options like from="...").',
            code="authorized_keys",
        )


def _check(validator, value: str, what: str) -> str:
    """Run a model validator outside a form; raise ValueError so a run fails with the reason."""
    try:
        validator(value)
    except ValidationError as e:
        raise ValueError(f"invalid {what} {value!r}: {' '.join(e.messages)}") from None
    return value


def check_package_name(name: str) -> str:
    return _check(validate_package_name, name, "package name")


def check_posix_name(name: str) -> str:
    return _check(validate_posix_name, name, "user or group name")


def check_service_name(name: str) -> str:
    return _check(validate_service_name, name, "service name")


def check_path(path: str) -> str:
    return _check(validate_absolute_path, path, "path")


def check_shell(shell: str) -> str:
    return _check(validate_shell, shell, "shell")


def sha256_text(text: str) -> str:
    """The checksum the panel expects on the node for a file with this content."""
    return hashlib.sha256(text.encode()).hexdigest()


def unix_newlines(text: str) -> str:
    # Browsers submit textareas with CRLF; config files and authorized_keys want LF.
    return text.replace("\r\n", "\n")

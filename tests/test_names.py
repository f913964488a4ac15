"""Names and paths are checked as the tools on the node read them, and nothing with a control
character gets through: what an admin types never reaches a command as something else."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from nodes.models import Node, node_name_validator, username_validator, validate_host
from sync.validators import (
    has_control_chars,
    validate_absolute_path,
    validate_package_name,
    validate_posix_name,
    validate_service_name,
    validate_shell,
)

VALIDATORS = {
    "package": validate_package_name,
    "posix": validate_posix_name,
    "service": validate_service_name,
    "path": validate_absolute_path,
    "shell": validate_shell,
    "host": validate_host,
    "node name": node_name_validator,
    "ssh user": username_validator,
}
# Names each validator accepts, to build hostile variants from.
GOOD = {
    "package": ["bash", "g++", "openssh-server", "python3.11", "NetworkManager"],
    "posix": ["www-data", "_apt", "deploy"],
    "service": ["nginx", "getty@tty1.service", "ssh"],
    "path": ["/etc/nginx/nginx.conf", "/opt/app dir/x;y"],
    "shell": ["/bin/bash", "/usr/sbin/nologin"],
    "host": ["node1.example.com", "10.0.0.1", "fe80::1%eth0", "::1"],
    "node name": ["web-1", "db.eu"],
    "ssh user": ["root", "deploy.user"],
}
HOSTILE_SUFFIXES = ["\n", "\r", "\x00", "\x1b[31m", "\u2028", "\u202e", "\x85", "\t", "-", "+"]
CONTROL = st.characters(categories=("Cc", "Cf", "Zl", "Zp"))


def accepts(validator, value: str) -> bool:
    try:
        validator(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    "name", ["openssh-server-", "openssh-server+", "foo.rpm", "foo.deb", "FOO.RPM", "-y"]
)
def test_it_refuses_package_names_apt_or_dnf_read_as_an_operator_or_a_file(name):
    assert not accepts(validate_package_name, name)


@pytest.mark.parametrize("name", ["g++", "c++", "libstdc++6", "a", "python3.11"])
def test_it_accepts_real_package_names_ending_in_plus_plus_or_a_digit(name):
    assert accepts(validate_package_name, name)


@pytest.mark.parametrize("kind", sorted(VALIDATORS))
@pytest.mark.parametrize("suffix", HOSTILE_SUFFIXES[:8])
def test_it_refuses_a_good_name_with_a_control_character_after_it(kind, suffix):
    """Python's $ matches before a trailing newline: "bash\\n" used to pass."""
    for good in GOOD[kind]:
        assert accepts(VALIDATORS[kind], good), good
        assert not accepts(VALIDATORS[kind], good + suffix), repr(good + suffix)
        assert not accepts(VALIDATORS[kind], suffix + good), repr(suffix + good)


@pytest.mark.parametrize("host", ["fe80::1%eth0\n", "fe80::1%a b", "fe80::1%\x00", "fe80::1%x/y"])
def test_it_refuses_an_ipv6_scope_id_that_is_not_an_interface_name(host):
    assert not accepts(validate_host, host)


hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("aZ09-+._@/:%\n\x00 ~$;`'\"\\"), max_size=30),
    st.tuples(
        st.sampled_from([g for goods in GOOD.values() for g in goods]),
        st.sampled_from(HOSTILE_SUFFIXES) | CONTROL,
        st.booleans(),
    ).map(lambda t: t[1] + t[0] if t[2] else t[0] + t[1]),
)


@hsettings(max_examples=400, deadline=None)
@given(value=hostile_text)
def test_it_never_accepts_what_a_tool_would_misread(value):
    for kind, validator in VALIDATORS.items():
        if not accepts(validator, value):
            continue
        assert not has_control_chars(value), (kind, value)
        assert not value.startswith("-"), (kind, value)
        if kind == "package":
            assert not value.endswith("-"), value
            assert value.endswith("++") or not value.endswith("+"), value
            assert not value.lower().endswith((".rpm", ".deb")), value


@pytest.mark.django_db
def test_it_says_an_empty_host_is_a_bad_argument():
    with pytest.raises(CommandError) as caught:
        call_command("addnode", "n1", "--host", "", stdout=StringIO(), stderr=StringIO())
    assert caught.value.returncode == 2
    assert "--host is empty" in str(caught.value)
    assert not Node.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["²", "١", "1²", " ", "+1", "0x1"])
def test_it_answers_a_bulk_selection_with_non_ascii_digits_with_a_message(operator, bad):
    response = operator.post(reverse("nodes:bulk"), {"action": "resync", "ids": [bad]})
    assert response.status_code == 302

"""Whatever an admin types, the commands answer with a message and an exit code, never a
traceback; and no private key material ever reaches the log file."""

from io import StringIO

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from nodes.keys import panel_key_path
from nodes.models import Node, validate_host

pytestmark = pytest.mark.django_db

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=80,
)
# What argparse takes for an option ("-x") is its own error, exit 2 from the command line.
operands = texts.filter(lambda t: not t.startswith("-"))
examples = hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def outcome(*args: str) -> int:
    try:
        call_command(*args, stdout=StringIO(), stderr=StringIO())
    except CommandError as e:
        assert str(e) and "\n" not in str(e).strip()
        return e.returncode
    return 0


@examples
@given(name=operands)
def test_it_adds_a_local_node_or_says_why_not(name):
    Node.objects.get_or_create(name="taken", defaults={"transport": "local"})
    code = outcome("addnode", name, "--local")
    assert code in (0, 2)
    assert (code == 0) == Node.objects.filter(name=name).exists()
    Node.objects.exclude(name="taken").delete()


@examples
@given(host=operands, port=st.integers(max_value=0) | st.integers(min_value=65536))
def test_it_refuses_bad_ssh_addresses_with_a_message(host, port):
    """Never connects anywhere: the port alone is already wrong (tests never reach out)."""
    assert outcome("addnode", "n1", "--host", host, "--port", str(port)) == 2
    assert not Node.objects.exists()


@examples
@given(host=operands.filter(lambda h: h and not _valid_host(h)))
def test_it_refuses_a_malformed_host_before_connecting(host):
    assert outcome("addnode", "n1", "--host", host) == 2
    assert not Node.objects.exists()


def _valid_host(host: str) -> bool:
    try:
        validate_host(host)
    except ValidationError:
        return False
    return True


@examples
@given(names=st.lists(operands, min_size=1, max_size=3), action=operands)
def test_it_refuses_unknown_names_in_nodesync_and_desync(names, action):
    Node.objects.get_or_create(name="n1", defaults={"transport": "local"})
    names = [n for n in names if n != "n1"] or ["missing"]
    assert outcome("nodesync", *[a for n in names for a in ("--node", n)]) == 2
    assert outcome("desync", *names) == 2
    assert outcome("nodesync", "--action", "x" + action) == 2


def test_it_never_writes_private_key_material_to_the_log(make_node):
    call_command("panelkey", stdout=StringIO())
    make_node("n1")
    call_command("nodesync", stdout=StringIO())
    private = panel_key_path().read_text()
    body = "".join(private.splitlines()[1:-1])
    # The file is opened on the first line logged (delay=True): none written, no key in it.
    log_file = settings.LOG_DIR / "panel.log"
    log = log_file.read_text() if log_file.exists() else ""
    assert "PRIVATE KEY" not in log
    assert body[:40] not in log

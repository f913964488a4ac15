"""`manage.py bootstrap` (the set-up step of `make run`) and the `runpanel` command's arguments."""

import signal
import stat
import subprocess
import sys
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands

from nodes.choices import Transport
from nodes.models import Node
from web.management.commands import runpanel
from web.management.commands.bootstrap import local_node_name

User = get_user_model()


def bootstrap() -> str:
    out = StringIO()
    call_command("bootstrap", stdout=out)
    return out.getvalue()


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    return tmp_path


@pytest.fixture
def a_node(db):
    """With a node present, bootstrap leaves the nodes alone: these tests are about the user."""
    return Node.objects.create(name="existing", transport=Transport.LOCAL)


@pytest.mark.django_db
def test_it_creates_the_admin_once_and_prints_the_password(data_dir, a_node):
    output = bootstrap()

    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    password = (data_dir / "admin-password.txt").read_text().strip()
    assert admin.check_password(password)
    assert password in output
    assert "http://127.0.0.1:8000/" in output


@pytest.mark.django_db
def test_it_does_not_create_or_print_a_password_the_second_time(data_dir, a_node):
    bootstrap()
    password = (data_dir / "admin-password.txt").read_text().strip()

    output = bootstrap()

    assert User.objects.count() == 1
    assert password not in output
    assert "Log in as admin (password set earlier" in output
    assert "manage.py changepassword admin" in output
    assert "http://127.0.0.1:8000/" in output


@pytest.mark.django_db
def test_it_writes_the_password_file_readable_by_its_owner_only(data_dir, a_node):
    bootstrap()

    mode = stat.S_IMODE((data_dir / "admin-password.txt").stat().st_mode)
    assert mode == 0o600


@pytest.mark.django_db
def test_it_keeps_an_existing_superuser(data_dir, a_node):
    User.objects.create_superuser("boss", "", "a-long-password")

    output = bootstrap()

    assert list(User.objects.values_list("username", flat=True)) == ["boss"]
    assert "Log in as boss (password set earlier" in output
    assert not (data_dir / "admin-password.txt").exists()


@pytest.mark.django_db
def test_it_adds_the_panel_server_as_a_local_node_when_there_are_none(data_dir):
    assert not Node.objects.exists()

    bootstrap()

    node = Node.objects.get()
    assert node.transport == Transport.LOCAL
    assert node.name == local_node_name()


@pytest.mark.django_db
def test_it_leaves_existing_nodes_alone(data_dir, a_node):
    bootstrap()
    bootstrap()

    assert list(Node.objects.values_list("name", flat=True)) == ["existing"]


@pytest.mark.parametrize(
    "hostname, expected",
    [
        ("Web-01.example.com", "web-01"),
        ("my_panel", "my-panel"),
        ("-odd-", "odd"),
        ("x" * 80, "x" * 63),
        ("___", "local"),
        ("", "local"),
    ],
)
def test_the_local_node_name_is_the_short_host_name_made_valid(hostname, expected):
    assert local_node_name(hostname) == expected


def test_runpanel_is_a_command_that_accepts_addr_and_port():
    assert get_commands()["runpanel"] == "web"
    parser = runpanel.Command().create_parser("manage.py", "runpanel")

    defaults = parser.parse_args([])
    assert (defaults.addr, defaults.port) == ("127.0.0.1", 8000)
    options = parser.parse_args(["--addr", "0.0.0.0", "--port", "8080"])
    assert (options.addr, options.port) == ("0.0.0.0", 8080)


def test_runpanel_stops_a_child_that_ignores_sigterm_by_killing_it():
    # A stand-in child (no server): it ignores SIGTERM, so only the kill after the wait ends it.
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, process_group=0
    )
    assert child.stdout.readline().strip() == "ready"

    runpanel.stop_children([child], timeout=0.5)

    assert child.returncode == -signal.SIGKILL
    child.stdout.close()

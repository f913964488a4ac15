"""The synchronizer types that carry the panel's data, run for real on the local node.

We are root on the test machine: files are written under tmp_path, users are created and
removed (names unique to the test, always cleaned up), one small package is really installed,
and a fake SysV service is started and reloaded.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pwd
import secrets
import string
import subprocess
from pathlib import Path

import pytest

from nodes.models import Node, Role
from sync.engine import register_desync, run_nodes
from sync.models import Node2Sync, Outcome, SyncAction, SyncRun
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.services import Service
from sync.synchronizers.software import Package, package_manager, parse_os_release
from sync.synchronizers.users import ManagedUser, UserState

pytestmark = pytest.mark.django_db

ROLE_TYPES = ["software", "files", "users", "services"]


def _random(n: int = 6) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(n))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def state_dir(settings, tmp_path) -> Path:
    settings.SYNC_NODE_STATE_DIR = str(tmp_path / "state")
    return tmp_path / "state"


@pytest.fixture
def role(db) -> Role:
    return Role.objects.create(name="web")


@pytest.fixture(params=["local", "ssh"])
def node(request, make_node, state_dir, role) -> Node:
    """A node of the role "web", reached locally and over SSH (a real sshd on loopback)."""
    if request.param == "ssh":
        return ssh_node(request.getfixturevalue("make_ssh_node"), role)
    node = make_node(facts={"os": {"id": "debian"}})
    node.roles.add(role)
    return node


def ssh_node(make_ssh_node, role) -> Node:
    node, _ = make_ssh_node("web-ssh")
    Node.objects.filter(pk=node.pk).update(facts={"os": {"id": "debian"}})
    node.refresh_from_db()
    node.roles.add(role)
    return node


@pytest.fixture
def web_ssh_node(make_ssh_node, state_dir, role) -> Node:
    return ssh_node(make_ssh_node, role)


def run_type(node: Node, name: str) -> SyncRun:
    """Register ``name`` for the node and run only it; return its run."""
    action = SyncAction.objects.get(name=name)
    register_desync([node], [action])
    run_nodes([node.pk], action_ids=[action.pk])
    return SyncRun.objects.filter(node=node, action=action).order_by("-id").first()


def synced(node: Node, name: str) -> str:
    """Run ``name`` on the node, require success, return its log."""
    run = run_type(node, name)
    assert run.outcome == Outcome.SUCCESS, run.log + "\n" + Node.objects.get(pk=node.pk).last_error
    return run.log


def manifest(state_dir: Path, node: Node, kind: str) -> dict:
    return json.loads((state_dir / str(node.uuid) / f"{kind}.json").read_text())


# --- every type on a node without data ------------------------------------------------------


@pytest.mark.parametrize("name", ROLE_TYPES)
def test_it_does_nothing_on_a_node_without_data(node, state_dir, name):
    log = synced(node, name)
    assert log.startswith("no ")
    assert not state_dir.exists()


# --- files ----------------------------------------------------------------------------------


def test_it_writes_files_with_content_mode_owner_and_checksum(node, role, state_dir, tmp_path):
    path = tmp_path / "etc" / "app.conf"  # the directory does not exist yet
    f = ManagedFile.objects.create(
        path=str(path), content="listen 80\n", mode=0o640, owner="nobody", group="nogroup"
    )
    f.roles.add(role)

    log = synced(node, "files")

    assert path.read_text() == "listen 80\n"
    st = path.stat()
    assert st.st_mode & 0o7777 == 0o640
    assert pwd.getpwuid(st.st_uid).pw_name == "nobody"
    assert f"wrote {path} (new, mode 0640, nobody:nogroup)" in log
    assert manifest(state_dir, node, "files") == {str(path): _sha(b"listen 80\n")}
    assert (state_dir / str(node.uuid) / "files.json").stat().st_mode & 0o777 == 0o600


def test_it_does_not_rewrite_an_unchanged_file(node, role, tmp_path):
    path = tmp_path / "app.conf"
    f = ManagedFile.objects.create(path=str(path), content="a\n")
    f.roles.add(role)
    synced(node, "files")
    inode = path.stat().st_ino

    log = synced(node, "files")

    assert path.stat().st_ino == inode  # put_file renames a new file in: same inode, untouched
    assert f"unchanged {path}" in log
    assert "0 written, 1 unchanged" in log


def test_it_rewrites_a_file_whose_content_or_mode_changed_on_the_node(node, role, tmp_path):
    path = tmp_path / "app.conf"
    f = ManagedFile.objects.create(path=str(path), content="a\n", mode=0o600)
    f.roles.add(role)
    synced(node, "files")
    path.write_text("edited by hand\n")
    synced(node, "files")
    assert path.read_text() == "a\n"
    path.chmod(0o666)
    assert "(updated," in synced(node, "files")
    assert path.stat().st_mode & 0o7777 == 0o600


def test_it_sets_a_changed_mode_or_owner_on_the_file_itself(node, role, tmp_path):
    path = tmp_path / "tool"
    f = ManagedFile.objects.create(
        path=str(path), content="#!/bin/sh\n", mode=0o4750, special_bits=True
    )
    f.roles.add(role)
    synced(node, "files")
    inode = path.stat().st_ino
    path.chmod(0o755)
    os.chown(path, 65534, 65534)
    log = synced(node, "files")
    st = path.stat()
    assert (st.st_ino, st.st_uid, st.st_gid, st.st_mode & 0o7777) == (inode, 0, 0, 0o4750)
    assert f"set {path} (updated, mode 4750, root:root; content unchanged)" in log


def test_it_replaces_a_fifo_or_link_at_a_managed_path_without_reading_it(node, role, tmp_path):
    fifo, link, decoy = tmp_path / "fifo.conf", tmp_path / "link.conf", tmp_path / "decoy"
    decoy.write_text("root's\n")
    decoy.chmod(0o600)
    os.mkfifo(fifo)  # a read would wait for a writer for ever
    link.symlink_to(decoy)
    for p in (fifo, link):
        ManagedFile.objects.create(path=str(p), content="a\n", mode=0o644).roles.add(role)
    log = synced(node, "files")
    assert f"replacing {fifo}: refusing to read {fifo}: {fifo} is a FIFO, not a regular file" in log
    assert f"{link} is a symbolic link, not a regular file" in log
    assert fifo.read_text() == link.read_text() == "a\n" and not link.is_symlink()
    assert decoy.read_text() == "root's\n" and decoy.stat().st_mode & 0o7777 == 0o600


def test_it_keeps_setuid_bits(node, role, tmp_path):
    path = tmp_path / "tool"
    f = ManagedFile.objects.create(
        path=str(path), content="#!/bin/sh\n", mode=0o4750, special_bits=True
    )
    f.roles.add(role)
    synced(node, "files")
    assert path.stat().st_mode & 0o7777 == 0o4750
    assert "unchanged" in synced(node, "files")


def test_it_removes_a_file_deleted_in_the_panel(node, role, state_dir, tmp_path):
    keep, gone = tmp_path / "keep.conf", tmp_path / "gone.conf"
    for p in (keep, gone):
        ManagedFile.objects.create(path=str(p), content=p.name).roles.add(role)
    synced(node, "files")
    assert gone.exists()

    ManagedFile.objects.get(path=str(gone)).delete()
    log = synced(node, "files")

    assert not gone.exists() and keep.exists()
    assert f"removed {gone}" in log
    assert list(manifest(state_dir, node, "files")) == [str(keep)]


def test_it_removes_a_file_deleted_in_the_panel_after_the_node_was_renamed(
    node, role, state_dir, tmp_path
):
    path = tmp_path / "app.conf"
    ManagedFile.objects.create(path=str(path), content="x").roles.add(role)
    synced(node, "files")

    node.name = f"{node.name}-renamed"
    node.save(update_fields=["name"])
    ManagedFile.objects.get(path=str(path)).delete()
    log = synced(node, "files")

    assert not path.exists()
    assert f"removed {path}" in log
    assert manifest(state_dir, node, "files") == {}


def test_it_moves_a_manifest_kept_under_the_node_name_to_its_uuid(node, role, state_dir, tmp_path):
    """A node synced by a panel from before node uuids keeps what that panel put there."""
    path = tmp_path / "old.conf"
    path.write_text("from the old panel")
    legacy = state_dir / node.name / "files.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({str(path): _sha(b"from the old panel")}))

    log = synced(node, "files")

    assert not path.exists()
    assert f"removed {path}" in log
    assert not legacy.exists()
    assert manifest(state_dir, node, "files") == {}


def test_it_removes_a_file_when_the_node_loses_its_role(node, role, tmp_path):
    path = tmp_path / "web.conf"
    f = ManagedFile.objects.create(path=str(path), content="x")
    f.roles.add(role)
    synced(node, "files")
    node.roles.remove(role)
    synced(node, "files")
    assert not path.exists()


def test_it_fails_when_it_cannot_write_a_file(node, role, tmp_path):
    (tmp_path / "dir.conf").mkdir()
    ManagedFile.objects.create(path=str(tmp_path / "dir.conf"), content="x").roles.add(role)
    run = run_type(node, "files")
    assert run.outcome == Outcome.FAILED
    assert "dir.conf" in Node2Sync.objects.get(node=node).last_error


def test_its_error_never_shows_what_the_node_holds(
    make_node, role, state_dir, tmp_path, monkeypatch
):
    """A copy that differs after the write (a user raced it, or linked it to root's file):
    the error, which Read-only users see, names the path and never the node's checksum."""
    from nodes.transports.local import LocalTransport

    secret = b"root:$6$hash:19000:0:99999:7:::\n"  # what a root-only file holds
    real_put = LocalTransport.put_file

    async def raced_put(self, path, data, **options):
        await real_put(self, path, secret, **options)

    monkeypatch.setattr(LocalTransport, "put_file", raced_put)
    node = make_node("raced")
    node.roles.add(role)
    path = tmp_path / "app.conf"
    ManagedFile.objects.create(path=str(path), content="a\n").roles.add(role)
    assert run_type(node, "files").outcome == Outcome.FAILED
    error = Node2Sync.objects.get(node=node).last_error
    assert f"the node's copy of {path} differs from what the panel wrote" in error
    assert _sha(secret) not in error and _sha(b"a\n") not in error


def test_it_carries_shell_metacharacters_literally_and_runs_nothing(
    node, role, state_dir, tmp_path
):
    canary = tmp_path / "canary"
    marker = f"pwned-{_random()}"
    directory = tmp_path / "we ird; $(touch x) `id`"
    path = directory / f"a file; $(touch {marker}) & 'q' \"dq\" \\ `touch {marker}` |.conf"
    content = (
        f"a=$(touch {canary})\n"
        f"b=`touch {canary}`\n"
        "c='single' \"double\" \\backslash $HOME ${PATH} * ? ~ ; & | > <\n"
        "\ttab, trailing spaces   \n"
        "no newline at the end"
    )
    f = ManagedFile.objects.create(path=str(path), content=content)
    f.roles.add(role)

    log = synced(node, "files")

    assert path.read_bytes() == content.encode()
    assert str(path) in log
    assert manifest(state_dir, node, "files") == {str(path): _sha(content.encode())}
    assert "unchanged" in synced(node, "files")

    f.delete()
    synced(node, "files")

    assert not path.exists()
    for where in (Path.cwd(), tmp_path, directory, Path("/")):
        assert not (where / marker).exists()
        assert not (where / "x").exists()
    assert not canary.exists()


# --- users ----------------------------------------------------------------------------------


@pytest.fixture
def username():
    name = "pt" + _random()
    yield name
    subprocess.run(["userdel", "--remove", name], capture_output=True)


KEYS = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPanelTestKeyOne one@example\n"
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPanelTestKeyTwo two@example"
)


def test_it_creates_a_user_with_shell_and_keys_then_removes_it(node, role, state_dir, username):
    user = ManagedUser.objects.create(name=username, shell="/bin/sh", authorized_keys=KEYS)
    user.roles.add(role)

    log = synced(node, "users")

    entry = pwd.getpwnam(username)
    assert entry.pw_shell == "/bin/sh"
    keys = Path(entry.pw_dir) / ".ssh" / "authorized_keys"
    assert keys.read_text() == KEYS + "\n"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert keys.stat().st_uid == entry.pw_uid and keys.stat().st_gid == entry.pw_gid
    ssh_dir = keys.parent.stat()
    assert ssh_dir.st_mode & 0o777 == 0o700 and ssh_dir.st_uid == entry.pw_uid
    assert f"created user {username}" in log and "2 keys" in log
    record = manifest(state_dir, node, "users")[username]
    assert record == {"uid": entry.pw_uid, "origin": "created", "since": record["since"]}

    assert f"{username}: unchanged" in synced(node, "users")

    user.shell = "/bin/bash"
    user.save()
    assert "shell /bin/sh -> /bin/bash" in synced(node, "users")
    assert pwd.getpwnam(username).pw_shell == "/bin/bash"

    user.state = UserState.ABSENT
    user.save()
    log = synced(node, "users")

    with pytest.raises(KeyError):
        pwd.getpwnam(username)
    assert not Path(entry.pw_dir).exists()
    assert f"removed user {username}" in log
    assert manifest(state_dir, node, "users") == {}


def test_it_removes_a_user_deleted_in_the_panel(node, role, username):
    user = ManagedUser.objects.create(name=username)
    user.roles.add(role)
    synced(node, "users")
    pwd.getpwnam(username)

    user.delete()
    synced(node, "users")

    with pytest.raises(KeyError):
        pwd.getpwnam(username)


def test_it_leaves_alone_an_account_that_is_no_longer_the_one_it_created(
    node, role, state_dir, username
):
    user = ManagedUser.objects.create(name=username)
    user.roles.add(role)
    synced(node, "users")
    path = state_dir / str(node.uuid) / "users.json"
    path.write_text(json.dumps({username: 1}))  # as if the account were recreated by someone

    user.delete()
    log = synced(node, "users")

    pwd.getpwnam(username)
    assert "left alone" in log


def test_it_refuses_to_remove_a_system_account(node, role):
    ManagedUser.objects.create(name="daemon", state=UserState.ABSENT).roles.add(role)
    run = run_type(node, "users")
    assert run.outcome == Outcome.FAILED
    assert "system account" in Node2Sync.objects.get(node=node).last_error
    pwd.getpwnam("daemon")


# --- software -------------------------------------------------------------------------------


def test_it_runs_no_package_manager_when_everything_is_installed(node, role):
    for name in ("coreutils", "bash"):
        Package.objects.create(name=name).roles.add(role)
    log = synced(node, "software")
    assert log == "all 2 packages installed"


def test_it_reads_the_os_from_the_node_when_facts_are_missing(make_node, role, state_dir):
    node = make_node("nofacts")
    node.roles.add(role)
    Package.objects.create(name="bash").roles.add(role)
    assert synced(node, "software") == "all 1 packages installed"


def test_it_fails_clearly_on_an_os_it_cannot_install_on(make_node, role, state_dir):
    node = make_node("plan9", facts={"os": {"id": "plan9"}})
    node.roles.add(role)
    Package.objects.create(name="bash").roles.add(role)
    run = run_type(node, "software")
    assert run.outcome == Outcome.FAILED
    assert (
        "no package manager for this node's OS (plan9)"
        in node.__class__.objects.get(pk=node.pk).last_error
    )


def test_it_knows_derivatives_by_their_id_like(make_node, role, state_dir):
    node = make_node("mint", facts={"os": {"id": "linuxmint", "id_like": "ubuntu debian"}})
    node.roles.add(role)
    Package.objects.create(name="bash").roles.add(role)
    assert synced(node, "software") == "all 1 packages installed"


def test_it_reads_id_and_id_like_from_os_release():
    text = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
    assert parse_os_release(text) == ["rocky", "rhel", "centos", "fedora"]
    assert package_manager(parse_os_release(text)) == "dnf"
    assert package_manager(["arch"]) is None


def _installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return result.returncode == 0 and result.stdout.endswith(" installed")


@pytest.fixture
def without_sl():
    def remove():
        if _installed("sl"):
            subprocess.run(
                ["apt-get", "remove", "-y", "sl"],
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                capture_output=True,
                check=True,
            )

    remove()
    assert not _installed("sl")
    yield
    remove()


def test_it_installs_a_missing_package(web_ssh_node, role, without_sl):
    """One real install, over SSH: the package is downloaded and installed by apt."""
    node = web_ssh_node
    Package.objects.create(name="sl").roles.add(role)
    Package.objects.create(name="bash").roles.add(role)

    log = synced(node, "software")

    assert _installed("sl")
    assert "apt: installing sl (1 already there)" in log
    assert synced(node, "software") == "all 2 packages installed"


# --- services -------------------------------------------------------------------------------

INIT_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: cluster panel test service
### END INIT INFO
echo "$1" >> '{log}'
case "$1" in
  start) touch '{running}' ;;
  stop) rm -f '{running}' ;;
  status) [ -e '{running}' ] || exit 3 ;;
  reload) ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def init_script(tmp_path):
    """A fake SysV service /etc/init.d/pt-<random> that logs each call to a file."""
    name = "pt-" + _random()
    script = Path("/etc/init.d") / name
    log = tmp_path / f"{name}.calls"
    script.write_text(INIT_SCRIPT.format(name=name, log=log, running=tmp_path / f"{name}.run"))
    script.chmod(0o755)
    yield name, log
    subprocess.run(["update-rc.d", "-f", name, "remove"], capture_output=True)
    script.unlink()


def calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_it_starts_a_service_and_reloads_it_only_when_its_files_change(
    node, role, state_dir, tmp_path, init_script
):
    name, log = init_script
    conf = ManagedFile.objects.create(path=str(tmp_path / "svc.conf"), content="v1\n")
    conf.roles.add(role)
    service = Service.objects.create(name=name)
    service.roles.add(role)
    service.files.add(conf)

    run_nodes([node.pk])  # the watches registered files and services

    assert calls(log) == ["status", "start"]
    assert glob.glob(f"/etc/rc2.d/S*{name}")  # enabled with update-rc.d
    assert manifest(state_dir, node, "services") == {name: {conf.path: _sha(b"v1\n")}}
    assert not Node2Sync.objects.filter(node=node).exists()

    assert f"{name}: running, unchanged" in synced(node, "services")
    assert "reload" not in calls(log)

    conf.content = "v2\n"
    conf.save()  # registers files and services
    run_nodes([node.pk])

    assert calls(log).count("reload") == 1
    assert (tmp_path / "svc.conf").read_text() == "v2\n"
    log_text = SyncRun.objects.filter(action__name="services").order_by("-id").first().log
    assert f"{name}: reloaded ({conf.path})" in log_text

    synced(node, "services")
    synced(node, "files")
    assert calls(log).count("reload") == 1
    assert calls(log).count("start") == 1


def test_it_fails_clearly_for_a_service_the_node_does_not_have(node, role):
    Service.objects.create(name="pt-nosuch-service").roles.add(role)
    run = run_type(node, "services")
    assert run.outcome == Outcome.FAILED
    assert "no executable /etc/init.d/pt-nosuch-service" in Node.objects.get(pk=node.pk).last_error

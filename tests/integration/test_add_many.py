"""Adding many SSH nodes at once, on the page and with ``addnode --from-file``, against real
sshd nodes: every key shown before any node is saved, unreachable hosts listed with the
reason, a key that changed between the scan and the save refused."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from nodes.keys import fingerprint, panel_public_key
from nodes.models import Node, Role
from sync.audit import AuditEntry
from sync.inventory import parse_node_lines
from sync.models import Node2Sync
from tools.sshd import SSHServer, free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Three real sshd nodes for the whole module (none of the tests changes them)."""
    started = []
    try:
        for i in range(3):
            server = SSHServer(tmp_path_factory.mktemp(f"many{i}"), panel_public_key())
            started.append(server.start())
        yield started
    finally:
        for server in started:
            server.stop()


def lines_for(servers, extra: str = "") -> str:
    return "\n".join(f"m{i} 127.0.0.1:{s.port}" for i, s in enumerate(servers)) + extra


# --- The lines --------------------------------------------------------------------------------


def test_the_lines_are_read_with_defaults_comments_and_ipv6():
    text = "# fleet\n\nweb1 10.0.0.1\nweb2 10.0.0.2:2222 admin\nv6 [::1]:2200\nbare ::2\n"
    found, errors = parse_node_lines(text)
    assert not errors
    assert [(e.line, e.name, e.host, e.port, e.username) for e in found] == [
        (3, "web1", "10.0.0.1", 22, "root"),
        (4, "web2", "10.0.0.2", 2222, "admin"),
        (5, "v6", "::1", 2200, "root"),
        (6, "bare", "::2", 22, "root"),
    ]


def test_each_wrong_line_is_named_with_its_reason(make_node):
    make_node("taken")
    text = (
        "ok 10.0.0.1\n"
        "lonely\n"
        "Bad_Name 10.0.0.2\n"
        "p 10.0.0.3:99999\n"
        "taken 10.0.0.4\n"
        "ok 10.0.0.5\n"
        "dup 10.0.0.1\n"
        "h no..host\n"
        "u 10.0.0.6 'root'\n"
    )
    _, errors = parse_node_lines(text)
    said = {e.line: e.reason for e in errors}
    assert sorted(said) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "expected name host[:port] [user], got 1 word(s)" == said[2]
    assert "lower-case" in said[3]
    assert "port '99999'" in said[4]
    assert "already exists" in said[5]
    assert said[6] == "ok is on line 1 too" and said[7] == "10.0.0.1:22 is on line 1 too"
    assert "host name" in said[8] and "user name" in said[9]


# --- The page ---------------------------------------------------------------------------------


def test_every_key_is_shown_then_the_reachable_nodes_are_added(operator, servers):
    web = Role.objects.create(name="web")
    dead = free_port()
    lines = lines_for(servers, f"\ngone 127.0.0.1:{dead}\n")
    url = reverse("nodes:add_many")

    page = operator.post(url, {"lines": lines, "roles": ["web"]})
    text = page.content.decode()
    assert page.status_code == 200 and not Node.objects.exists()
    for server in servers:
        assert fingerprint(server.host_key) in text
    assert f"Cannot be reached: unreachable: 127.0.0.1:{dead} refused the connection" in text
    assert "Confirm 3 keys and add 3 nodes" in text

    form = {
        "lines": lines,
        "roles": ["web"],
        "scanned": lines,
        "confirmed": [f"127.0.0.1 {s.port} {s.host_key}" for s in servers],
    }
    done = operator.post(url, form)
    assert done.status_code == 302
    said = [str(m) for m in get_messages(done.wsgi_request)]
    assert said[0].startswith("Added 3 node(s): m0, m1, m2")
    assert said[1] == "Not added (no key shown for them): gone."
    nodes = Node.objects.order_by("name")
    assert [n.name for n in nodes] == ["m0", "m1", "m2"]
    assert all(n.host_key == s.host_key for n, s in zip(nodes, servers, strict=True))
    assert set(web.nodes.values_list("name", flat=True)) == {"m0", "m1", "m2"}
    assert Node2Sync.objects.filter(node__in=nodes).count() > 0
    entry = AuditEntry.objects.get(action="node.add")
    assert sorted(entry.after["nodes"]) == ["m0", "m1", "m2"]


def test_wrong_lines_scan_nothing_and_changed_lines_are_scanned_again(operator, servers):
    url = reverse("nodes:add_many")
    page = operator.post(url, {"lines": "a 127.0.0.1:1\nb\n"}).content.decode()
    assert "line 2: expected name host[:port] [user], got 1 word(s)" in page
    assert "Confirm" not in page

    lines = lines_for(servers[:1])
    form = {"lines": lines + "\n", "scanned": lines + "\nother 127.0.0.1:2\n"}
    form["confirmed"] = [f"127.0.0.1 {servers[0].port} {servers[0].host_key}"]
    page = operator.post(url, form)
    assert page.status_code == 200 and "Confirm 1 key and add 1 node" in page.content.decode()
    assert not Node.objects.exists()


def test_a_key_that_changed_after_it_was_shown_is_refused_the_others_added(operator, servers, sshd):
    moved = sshd()
    lines = lines_for(servers[:1]) + f"\nmoved 127.0.0.1:{moved.port}\n"
    shown = [servers[0], moved]
    form = {
        "lines": lines,
        "scanned": lines,
        "confirmed": [f"127.0.0.1 {s.port} {s.host_key}" for s in shown],
    }
    moved.restart_with_new_host_key()
    done = operator.post(reverse("nodes:add_many"), form)
    said = [str(m) for m in get_messages(done.wsgi_request)]
    assert said[0].startswith("Added 1 node(s): m0")
    assert said[1].startswith("Not added: moved: key changed since it was shown:")
    assert list(Node.objects.values_list("name", flat=True)) == ["m0"]


def test_readers_may_not_add_many(reader):
    assert reader.get(reverse("nodes:add_many")).status_code == 403


# --- addnode --from-file ----------------------------------------------------------------------


def addnode(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("addnode", *args, stdout=out, stderr=err)
    except CommandError as e:
        return e.returncode, out.getvalue(), f"{err.getvalue()}{e}"
    return 0, out.getvalue(), err.getvalue()


def test_the_command_refuses_a_bad_file_by_line_with_exit_2(tmp_path):
    path = tmp_path / "nodes.txt"
    path.write_text("good 10.0.0.1\n\nbad host:port:x\nworse 10.0.0.2 a b\n")
    code, _, err = addnode("--from-file", str(path))
    assert code == 2
    assert f"{path}:3: " in err and f"{path}:4: expected" in err
    assert "2 bad line(s)" in err and not Node.objects.exists()
    assert addnode("--from-file", str(tmp_path / "missing"))[0] == 2
    assert addnode("x", "--from-file", str(path))[0] == 2
    # The lines say each node's port and user: a --port or --user beside them is refused, not
    # silently ignored.
    code, _, err = addnode("--from-file", str(path), "--port", "2222", "--user", "admin")
    assert code == 2 and "--from-file takes no --port, --user" in err


def test_the_command_adds_the_reachable_nodes_with_progress(tmp_path, servers):
    dead = free_port()
    path = tmp_path / "nodes.txt"
    path.write_text(lines_for(servers, f"\ngone 127.0.0.1:{dead}\n"))
    code, out, err = addnode("--from-file", str(path))
    assert code == 1, err
    assert "Scanning the host keys of 4 node(s)..." in out
    for i, server in enumerate(servers):
        assert f"line {i + 1}: m{i} (root@127.0.0.1:{server.port}): " in out
        assert fingerprint(server.host_key) in out
        assert f"m{i}: added" in out
    assert f"line 4: gone (root@127.0.0.1:{dead}): not added, unreachable" in out
    assert "Added 3 of 4 node(s)" in err
    assert sorted(Node.objects.values_list("name", flat=True)) == ["m0", "m1", "m2"]

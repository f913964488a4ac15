"""The panel's keys during a rotation, and the authorized_keys edits, without any node."""

import os

import pytest

from nodes.keyrotation import authorized_keys_path, holds, key_line, with_line, without_key
from nodes.keys import (
    key_fingerprint,
    keys_for_node,
    load_panel_key,
    new_private_key,
    old_panel_key_path,
    write_private_key_file,
)


@pytest.fixture(autouse=True)
def own_data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"


def test_each_node_is_offered_its_own_key_first_and_the_other_only_during_a_rotation():
    current = key_fingerprint(load_panel_key())
    assert [key_fingerprint(k) for k in keys_for_node("")] == [current]
    old_key = new_private_key()
    os.link(write_private_key_file(old_key, old_panel_key_path()), old_panel_key_path())
    old = key_fingerprint(old_key)

    assert [key_fingerprint(k) for k in keys_for_node(old)] == [old, current]
    assert [key_fingerprint(k) for k in keys_for_node(current)] == [current, old]
    assert [key_fingerprint(k) for k in keys_for_node("")] == [current, old]
    old_panel_key_path().unlink()
    assert [key_fingerprint(k) for k in keys_for_node(old)] == [current]


def test_the_key_file_path_follows_sshd_tokens():
    assert authorized_keys_path("%h/.ssh/authorized_keys", "/home/a", "a") == (
        "/home/a/.ssh/authorized_keys"
    )
    assert authorized_keys_path(".ssh/authorized_keys", "/root", "root") == (
        "/root/.ssh/authorized_keys"
    )
    assert authorized_keys_path("/etc/ssh/keys/%u%%", "/home/a", "a") == "/etc/ssh/keys/a%"


def test_only_the_old_key_lines_go_and_every_other_line_stays_byte_for_byte():
    old, new = new_private_key(), new_private_key()
    old_blob = old.export_public_key().decode().split()[1]
    others = b'# notes\n\nno-pty,command="/bin/echo a b" ssh-rsa AAAAB3Nza other\r\n'
    content = others + b'from="10.0.0.1" ' + key_line(old, []).encode() + b"\n"
    content += key_line(old, []).encode()  # last line without a newline
    assert without_key(content, old_blob) == others
    added = with_line(without_key(content, old_blob), key_line(new, ["127.0.0.1"]))
    assert added.startswith(others)
    assert holds(added.decode().splitlines()[-1], new.export_public_key().decode().split()[1])
    assert added.decode().splitlines()[-1].startswith('from="127.0.0.1" ssh-ed25519 ')

"""The onboarding command's shape and bad input on the add page and ``addnode`` (no sshd)."""

from __future__ import annotations

import html
import re
import subprocess
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from nodes.keys import panel_public_key
from nodes.onboarding import clean_from, install_key_command

pytestmark = pytest.mark.django_db

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnboardingTestKey panel@test"


def command_on(page: str) -> str:
    found = re.search(r'<textarea id="key-command"[^>]*>(.*?)</textarea>', page, re.S)
    return html.unescape(found.group(1))


def test_the_command_is_one_self_contained_line_that_sh_parses():
    command = install_key_command("deploy", "10.0.0.5, 192.168.0.0/16", KEY)
    assert "\n" not in command and "://" not in command
    assert f"k='from=\"10.0.0.5,192.168.0.0/16\" {KEY}'" in command
    assert subprocess.run(["sh", "-n", "-c", command]).returncode == 0


@pytest.mark.parametrize("bad", ['10.0.0.1" ssh-rsa AAA', "a b", "x'y", "$(id)", "a;b"])
def test_from_refuses_what_would_change_the_key_line(bad):
    with pytest.raises(ValueError):
        clean_from(bad)


def test_the_add_page_shows_the_command_for_the_user_and_address_asked(operator, reader):
    page = operator.get(reverse("nodes:add")).content.decode()
    assert command_on(page) == install_key_command("root", "", panel_public_key())
    page = operator.get(reverse("nodes:add"), {"user": "deploy", "only_from": "10.1.2.3"})
    assert "u='deploy'" in command_on(page.content.decode())
    assert 'from="10.1.2.3"' in command_on(page.content.decode())
    page = operator.get(reverse("nodes:add"), {"user": "no body", "only_from": '1" x'})
    text = page.content.decode()
    assert page.status_code == 200 and "u='root'" in command_on(text)
    assert "For the user: Enter a user name" in text and "Only from (optional): " in text
    assert reader.get(reverse("nodes:add")).status_code == 403


def test_a_bad_only_from_for_the_password_install_is_a_form_error(operator):
    form = {"name": "n", "transport": "ssh", "host": "127.0.0.1", "port": 1,
            "install_password": "secret-pw", "install_from": '1.2.3.4" evil'}  # fmt: skip
    response = operator.post(reverse("nodes:add"), form)
    text = response.content.decode()
    assert response.status_code == 200 and "is not an address" in text
    assert "secret-pw" not in text


def addnode_code(*args: str) -> tuple[int, str]:
    try:
        call_command("addnode", *args, stdout=StringIO(), stderr=StringIO())
    except CommandError as e:
        return e.returncode, str(e)
    return 0, ""


def test_addnode_sends_a_password_only_with_a_fingerprint():
    code, said = addnode_code("n", "--host", "127.0.0.1", "--install-key-as", "admin")
    assert code == 2 and "--fingerprint" in said
    code, said = addnode_code("n", "--local", "--install-key-as", "admin")
    assert code == 2
    code, said = addnode_code(
        "n", "--host", "h", "--fingerprint", "SHA256:x", "--install-key-as", "a b"
    )
    assert code == 2 and "user name" in said
    code, said = addnode_code(
        "n", "--host", "h", "--fingerprint", "SHA256:x", "--install-key-as", "a",
        "--key-from", "x'y",
    )  # fmt: skip
    assert code == 2 and "is not an address" in said
    assert addnode_code("n")[0] == 2 and addnode_code()[0] == 2

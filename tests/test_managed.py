"""The data models refuse anything that could be odd in a command; the admin edits them."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from nodes.models import Role
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.services import Service
from sync.synchronizers.software import Package
from sync.synchronizers.users import ManagedUser
from sync.validators import (
    check_package_name,
    validate_absolute_path,
    validate_package_name,
    validate_posix_name,
    validate_service_name,
    validate_shell,
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", ["bash", "libc6", "g++", "python3.11", "NetworkManager", "a_b"])
def test_it_accepts_package_names(name):
    validate_package_name(name)


@pytest.mark.parametrize("name", ["", "-y", "--force", "a b", "a;b", "$(x)", "a/b", "x" * 129])
def test_it_refuses_odd_package_names(name):
    with pytest.raises(ValidationError):
        validate_package_name(name)
    with pytest.raises(ValueError, match="invalid package name"):
        check_package_name(name)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "relative/path",
        "/etc/../shadow",
        "/etc/./x",
        "/etc//x",
        "//etc/x",
        "/etc/x/",
        "/etc/x\x00y",
        "/etc/x\ny",
        "..",
    ],
)
def test_it_refuses_odd_paths(path):
    with pytest.raises(ValidationError):
        validate_absolute_path(path)


def test_it_accepts_paths_with_spaces_and_metacharacters():
    validate_absolute_path("/etc/a file; $(x) & 'q'.conf")


@pytest.mark.parametrize("name", ["-r", "Root", "a b", "1abc", "a" * 33, "a:b"])
def test_it_refuses_odd_user_names(name):
    with pytest.raises(ValidationError):
        validate_posix_name(name)


@pytest.mark.parametrize("name", ["..", ".", "-x", "a b", "a/b", "a;b"])
def test_it_refuses_odd_service_names(name):
    with pytest.raises(ValidationError):
        validate_service_name(name)


def test_it_accepts_service_names():
    for name in ("nginx", "nginx.service", "getty@tty1", "php8.2-fpm"):
        validate_service_name(name)


@pytest.mark.parametrize("shell", ["bash", "/bin/bash:x", "/bin/ba\nsh"])
def test_it_refuses_odd_shells(shell):
    with pytest.raises(ValidationError):
        validate_shell(shell)


def test_it_stores_unix_newlines_from_the_admin_form():
    f = ManagedFile(path="/tmp/x", content="a\r\nb\r\n")
    f.full_clean()
    assert f.content == "a\nb\n"


CHANGELISTS = [
    "admin:sync_package_changelist",
    "admin:sync_managedfile_changelist",
    "admin:sync_manageduser_changelist",
    "admin:sync_service_changelist",
]


@pytest.mark.parametrize("url_name", CHANGELISTS)
def test_it_renders_the_data_changelists(admin_client, url_name):
    role = Role.objects.create(name="web")
    Package.objects.create(name="bash").roles.add(role)
    ManagedFile.objects.create(path="/tmp/pt.conf", mode=0o600).roles.add(role)
    ManagedUser.objects.create(name="ptadmin").roles.add(role)
    Service.objects.create(name="pt-svc").roles.add(role)
    response = admin_client.get(reverse(url_name))
    assert response.status_code == 200


def test_it_edits_file_modes_in_octal(admin_client):
    role = Role.objects.create(name="web")
    response = admin_client.post(
        reverse("admin:sync_managedfile_add"),
        {
            "path": "/tmp/pt-admin.conf",
            "content": "x\r\n",
            "mode": "0640",
            "owner": "root",
            "group": "root",
            "roles": [role.pk],
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    f = ManagedFile.objects.get()
    assert (f.mode, f.content) == (0o640, "x\n")
    page = admin_client.get(reverse("admin:sync_managedfile_change", args=[f.pk]))
    assert 'value="0640"' in page.content.decode()


def test_it_refuses_a_bad_path_or_mode_in_the_admin(admin_client):
    response = admin_client.post(
        reverse("admin:sync_managedfile_add"),
        {"path": "/etc/../x", "content": "", "mode": "999", "owner": "root", "group": "root"},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "path" in errors and "mode" in errors
    assert not ManagedFile.objects.exists()

"""Logging in: wrong passwords are throttled (django-axes) and weak passwords are refused.

The login posts go through the real login pages, the middleware and the authentication backends,
from the addresses given as ``REMOTE_ADDR``.
"""

from datetime import timedelta
from io import StringIO

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

pytestmark = pytest.mark.django_db

User = get_user_model()
PASSWORD = "correct horse battery staple"
ATTACKER = "203.0.113.7"
ELSEWHERE = "198.51.100.20"
LOCKED_OUT = "Too many failed logins"


@pytest.fixture
def alice():
    return User.objects.create_user(
        "alice", email="alice.mcallister@example.com", password=PASSWORD
    )


def log_in(client, username: str, password: str, address: str = ATTACKER, url: str = ""):
    return client.post(
        url or reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )


def fail_until_locked_out(client, username: str, url: str = "") -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, username, "a wrong guess", url=url)


def test_it_logs_in_with_the_right_password(client, alice):
    response = log_in(client, "alice", PASSWORD)

    assert response.status_code == 302
    assert response.url == reverse("nodes:list")


def test_it_shows_the_form_again_after_a_wrong_password(client, alice):
    response = log_in(client, "alice", "a wrong guess")

    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content


def test_it_refuses_even_the_right_password_after_five_wrong_ones(client, alice):
    fail_until_locked_out(client, "alice")

    response = log_in(client, "alice", PASSWORD)

    assert response.status_code == 429
    assert LOCKED_OUT in response.content.decode()
    assert "15 minutes" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_still_lets_the_user_in_from_another_address(client, alice):
    fail_until_locked_out(client, "alice")

    response = log_in(client, "alice", PASSWORD, address=ELSEWHERE)

    assert response.status_code == 302


def test_it_still_lets_another_user_in_from_the_same_address(client, alice):
    User.objects.create_user("bob", password=PASSWORD)
    fail_until_locked_out(client, "alice")

    response = log_in(client, "bob", PASSWORD)

    assert response.status_code == 302


def test_it_lets_the_user_in_again_after_the_cool_off(client, alice):
    fail_until_locked_out(client, "alice")
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16)
    )

    response = log_in(client, "alice", PASSWORD)

    assert response.status_code == 302


def test_it_forgets_earlier_failures_after_a_successful_login(client, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, "alice", "a wrong guess")
    log_in(client, "alice", PASSWORD)
    client.logout()

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, "alice", "a wrong guess")
    response = log_in(client, "alice", PASSWORD)

    assert response.status_code == 302


def test_it_throttles_the_admin_login_too(client):
    User.objects.create_superuser("root", "", PASSWORD)
    url = reverse("admin:login")
    fail_until_locked_out(client, "root", url=url)

    response = log_in(client, "root", PASSWORD, url=url)

    assert response.status_code == 429
    assert LOCKED_OUT in response.content.decode()


@pytest.mark.parametrize(
    "weak",
    [
        "Short1!",  # too short
        "password1234",  # common
        "493817265043",  # digits only
        "alice.mcallister",  # like the user's e-mail address
    ],
)
def test_it_refuses_a_weak_password(alice, weak):
    with pytest.raises(ValidationError):
        validate_password(weak, alice)


def test_it_refuses_a_weak_password_in_the_admins_password_form(alice):
    form = AdminPasswordChangeForm(
        alice, {"password1": "password1234", "password2": "password1234"}
    )

    assert not form.is_valid()
    assert "password2" in form.errors


def test_it_accepts_a_strong_password(alice):
    validate_password("a-long-and-unusual-passphrase", alice)


def test_it_generates_an_admin_password_the_validators_accept(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    call_command("bootstrap", stdout=StringIO())
    admin = User.objects.get(username="admin")

    validate_password((tmp_path / "admin-password.txt").read_text().strip(), admin)

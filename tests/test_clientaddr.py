"""The client's address behind trusted proxies (panel/clientaddr.py), the one resolver that
django-axes and the rest of the panel use."""

from __future__ import annotations

import ipaddress

import pytest
from axes.models import AccessAttempt
from django.test import RequestFactory, override_settings
from django.urls import reverse

from panel.clientaddr import client_address

PROXIES = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"), "unix"]


def address(peer: str, forwarded: str | None = None, proxies=PROXIES) -> str:
    meta = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    with override_settings(PANEL_TRUSTED_PROXIES=proxies):
        return client_address(RequestFactory().get("/", **meta))


def test_it_ignores_the_header_of_a_client_that_is_no_trusted_proxy():
    assert address("203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert address("127.0.0.1", "198.51.100.1", proxies=[]) == "127.0.0.1"  # the default


def test_it_takes_the_rightmost_entry_that_is_no_trusted_proxy():
    # The client wrote the two on the left; 10.1.2.3 is a trusted load balancer.
    assert address("127.0.0.1", "127.0.0.3, 192.0.2.66, 198.51.100.7, 10.1.2.3") == ("198.51.100.7")


def test_it_trusts_the_unix_socket_only_when_told():
    assert address("", "198.51.100.7") == "198.51.100.7"
    assert address("", "198.51.100.7", proxies=[]) == ""


def test_it_stops_at_what_is_no_address_and_answers_the_proxy_that_passed_it_on():
    assert address("127.0.0.1", "198.51.100.7, bogus") == "127.0.0.1"
    assert address("127.0.0.1", "198.51.100.7, bogus, 10.0.0.5") == "10.0.0.5"


def test_it_answers_the_furthest_proxy_when_every_hop_is_one():
    assert address("127.0.0.1", "10.9.9.9, 10.0.0.1") == "10.9.9.9"
    assert address("127.0.0.1", "") == "127.0.0.1"


def test_an_ipv4_client_seen_through_ipv6_is_that_client():
    assert address("127.0.0.1", "::ffff:198.51.100.7") == "198.51.100.7"


@pytest.mark.django_db
def test_the_login_throttle_counts_the_resolved_client(client, django_user_model):
    django_user_model.objects.create_user("alice", password="correct horse battery staple")
    with override_settings(PANEL_TRUSTED_PROXIES=PROXIES):
        client.post(
            reverse("login"),
            {"username": "alice", "password": "a wrong guess"},
            REMOTE_ADDR="",
            HTTP_X_FORWARDED_FOR="192.0.2.66, 198.51.100.7",
        )
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["198.51.100.7"]

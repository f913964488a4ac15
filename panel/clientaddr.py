"""The address of the client behind the panel's reverse proxy: one rule for the whole panel.

Behind nginx every request comes from the proxy (127.0.0.1, or no address at all over
gunicorn's unix socket), so the login throttle saw one client, and five wrong passwords from
anywhere locked a user out for everyone. The proxy says who its client was in
``X-Forwarded-For``; a client can send that header too, so only what a trusted proxy wrote
counts: walk the header from its right end (the entry the nearest proxy added) past the
proxies named in ``PANEL_TRUSTED_PROXIES``, and the first entry that is not one of them is the
client. Anything to its left came from the client and is ignored. A request that does not come
from a trusted proxy is its own client, whatever its headers say.

django-axes asks this function (``AXES_CLIENT_IP_CALLABLE``), and so does anything else that
needs the client's address (audit entries): never ``REMOTE_ADDR`` or the header directly.
django-ipware, which axes would otherwise use, matches trusted proxies by text prefix ("10.0.0.1"
also trusts 10.0.0.10), knows no networks, and does not check that the request came from a
proxy at all.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

from panel.env import UNIX_SOCKET_PEER

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:192.0.2.1) is that IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def in_networks(text: str, networks: list) -> bool:
    """Whether the address ``text`` is in one of ``networks`` (``env_networks``'s list: its
    keywords match nothing here); "" or a text that is no address is in none."""
    address = _address(text) if text else None
    return address is not None and any(not isinstance(n, str) and address in n for n in networks)


def _trusted(peer: str) -> bool:
    """Whether ``peer`` (an address, or "" for a unix socket's peer) is a trusted proxy."""
    proxies = settings.PANEL_TRUSTED_PROXIES
    if not peer:
        return UNIX_SOCKET_PEER in proxies
    return in_networks(peer, proxies)


def client_address(request: HttpRequest) -> str:
    """The client's address: see the module's docstring. "" only over a unix socket that is
    not trusted (nothing better is known)."""
    peer = request.META.get("REMOTE_ADDR", "")
    if not _trusted(peer):
        return peer
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        address = _address(hop)
        if address is None:
            # A trusted proxy passed on something that is no address: the proxy is the last
            # party known for sure.
            return peer
        peer = str(address)
        if not _trusted(peer):
            return peer
    return peer  # every hop was a trusted proxy: the furthest one is the client

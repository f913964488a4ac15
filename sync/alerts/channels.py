"""Alert channels: the apprise URLs of ``PANEL_ALERT_URLS``, masked wherever they are shown.

apprise rather than a client of our own per service: one URL scheme per service (``mailto://``,
``slack://``, ``tgram://``, ``matrix://``, ``discord://``, ``json://`` ...), each with its own
protocol, limits and retries kept up by that project.

The URLs hold passwords and tokens. A channel is stored by the SHA-256 of its URL and shown by
its label: apprise's own privacy form of the URL (``mailto://user:****@host``,
``slack://T...A/...``) without its query. What apprise says about a failed delivery is captured
(its logger writes nowhere else: ``panel/settings.py``), and every piece of the URL that the
label masks is masked in it too before it is stored or logged.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from django.conf import settings

ERROR_CHARS = 300
# Pieces of a URL between these are what apprise masks (user, password, tokens, ids).
_PIECES = re.compile(r"[/:@?&=#,+;]+")
# Shorter pieces (ports, "hook", scheme names) say nothing secret and would mask too much.
_SECRET_MIN_CHARS = 4


class BadChannel(ValueError):
    """A URL of ``PANEL_ALERT_URLS`` that apprise does not know; the message masks it."""


@dataclass(frozen=True)
class Channel:
    """One configured receiver. ``url`` is never shown, logged or stored."""

    url: str = field(repr=False)
    key: str
    label: str

    def mask(self, text: str) -> str:
        """``text`` with every secret piece of the URL (those the label masks) masked."""
        shown = set(_PIECES.split(unquote(self.label)))
        text = text.replace(self.url, self.label)
        for piece in sorted(set(_PIECES.split(unquote(self.url))), key=len, reverse=True):
            if len(piece) >= _SECRET_MIN_CHARS and piece not in shown:
                text = text.replace(piece, "****")
        return text


def channel_for(url: str, position: int = 1) -> Channel:
    """The channel of one apprise URL; ``BadChannel`` (saying which entry, not the URL)."""
    import apprise

    with apprise.LogCapture(level=logging.WARNING):  # its complaint would quote the URL
        plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        known = f"its scheme {scheme}:// " if scheme.isalnum() else "it "
        raise BadChannel(
            f"PANEL_ALERT_URLS: entry {position} is not a URL apprise knows ({known}is not one "
            "of apprise's services, or the URL lacks what the service needs)"
        )
    label = plugin.url(privacy=True).split("?", 1)[0]
    return Channel(url=url, key=hashlib.sha256(url.encode()).hexdigest(), label=label)


def configured_channels() -> list[Channel]:
    """The channels of ``PANEL_ALERT_URLS``, in order, each once; ``BadChannel`` for a URL
    apprise does not know (the alerts process refuses to start rather than drop alerts)."""
    channels: dict[str, Channel] = {}
    for position, url in enumerate(settings.PANEL_ALERT_URLS, start=1):
        channel = channel_for(url, position)
        channels.setdefault(channel.key, channel)
    return list(channels.values())


def send(channel: Channel, title: str, body: str) -> str | None:
    """Deliver one message through apprise: None when the receiver took it, else why not (a
    line, with the URL's secrets masked). Bounded by apprise's own timeouts (connect and read,
    a few seconds for HTTP services, 15 s to connect for e-mail)."""
    import apprise

    notifier = apprise.Apprise()
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        try:
            notifier.add(channel.url)
            delivered = bool(
                notifier.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT)
            )
            problem = ""
        except Exception as e:  # a service's bug must not stop the other channels
            delivered, problem = False, f"{type(e).__name__}: {e}"
    if delivered:
        return None
    said = [line for line in captured.getvalue().splitlines() if line.strip()]
    reason = problem or (said[-1] if said else "the receiver did not take it")
    return channel.mask(reason.strip())[:ERROR_CHARS]

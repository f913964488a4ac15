"""The live refresh's protocol, one for every live page (the list and a node's page).

A live page holds one invisible poller element (``nodes/_poller.html``) that asks the page's
live URL for news, naming in ``since`` the fingerprint of what the page shows:

- while work runs or waits (the page is *active*) it asks every second (every 10 s in a hidden
  tab): the spinner must show within 2 s of a run starting;
- the answer is **204** when the fingerprint did not change, so the page keeps what it has;
- otherwise it is **200** with the changed fragments, each marked for an out-of-band swap, and a
  new poller (also out of band) that carries the new fingerprint and replaces the one that
  asked;
- once nothing runs or waits, the fast poller gets **286** with the last fragments: htmx swaps
  them, then stops polling, and the poller sent with them is a slow *watcher* (every 10 s)
  that answers 204 until something changes and then brings the fast polling back.

Why the fingerprint comes from data, never from rendered HTML: most polls of a busy fleet
change nothing, and a fingerprint that needs the HTML renders the page every second to learn
that. Each page computes it from the few values its fragments show (``fingerprint``), and
``LivePoll.answer`` calls the page's ``render`` only when something is to be sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, QueryDict
from django.template.loader import render_to_string
from django_htmx.http import HttpResponseStopPolling

# The poller's own query parameters: links built while answering a poll must drop them.
POLL_PARAMS = ("mode", "since", "ids")
FAST, WATCH = "fast", "watch"
FAST_TRIGGER = (
    "every 1s [document.visibilityState=='visible'], every 10s [document.visibilityState=='hidden']"
)
WATCH_TRIGGER = "every 10s"


def fingerprint(*parts: object) -> str:
    """A short hash of the values a page shows: equal fingerprints mean nothing to send.

    Parts are joined by their ``str``; give it values (ids, states, times), not objects whose
    text could hide a change.
    """
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def query_without_poll(request: HttpRequest) -> QueryDict:
    """The request's query (filters, sorting, pages) without the poller's parameters."""
    query = request.GET.copy()
    for key in POLL_PARAMS:
        query.pop(key, None)
    return query


class LivePoll:
    """The poller of one live page at ``url``; ``ids`` rides along for the list (see there).

    The page's filters and page numbers ride along in the poller's URL, so a poll sees the
    same rows as the page that holds it.
    """

    def __init__(self, request: HttpRequest, url: str, ids: str = "") -> None:
        self.request = request
        self.url = url
        self.ids = ids

    def element(self, digest: str, active: bool, *, oob: bool = False) -> str:
        """The poller element: fast while ``active``, else the slow watcher."""
        mode = FAST if active else WATCH
        params = query_without_poll(self.request)
        params["mode"], params["since"] = mode, digest
        if self.ids:
            params["ids"] = self.ids
        return render_to_string(
            "nodes/_poller.html",
            {
                "url": f"{self.url}?{params.urlencode()}",
                "trigger": FAST_TRIGGER if mode == FAST else WATCH_TRIGGER,
                "mode": mode,
                "oob": oob,
            },
        )

    def answer(self, digest: str, active: bool, render: Callable[[], str]) -> HttpResponse:
        """Answer a poll whose page now has fingerprint ``digest``.

        ``render`` draws the page's live fragments; it is called only when they are sent.
        """
        asked_fast = self.request.GET.get("mode") != WATCH
        unchanged = self.request.GET.get("since") == digest
        if active:
            if unchanged and asked_fast:
                return HttpResponse(status=204)
            # Changed, or the watcher saw work appear: fragments and a fast poller.
            return HttpResponse(render() + self.element(digest, True, oob=True))
        if asked_fast:
            # Nothing runs or waits: htmx swaps these last fragments, then stops this poller;
            # the watcher it is replaced with notices new work.
            return HttpResponseStopPolling(render() + self.element(digest, False, oob=True))
        if unchanged:
            return HttpResponse(status=204)
        return HttpResponse(render() + self.element(digest, False, oob=True))

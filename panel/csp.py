"""The Content-Security-Policy of every page the panel serves.

Django 5.2 has none built in. The pages load their scripts, styles, images and fonts from the
panel itself (whitenoise, no CDN) and have no inline script or style, so the policy allows only
the panel's own origin: a script that an escaping mistake let into a page, or a form pointed at
another site, is refused by the browser. htmx is told not to inject its indicator styles
(``htmx-config`` in templates/base.html) and evaluates no attribute code. Bootstrap draws its
icons (select arrows, the menu button) from ``data:`` SVG images in its CSS, hence ``img-src``.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Add ``POLICY`` to every response that has none of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", POLICY)
        return response

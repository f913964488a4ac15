"""The API's docs page (``/api/v1/docs``) draws every operation under the panel's own
Content-Security-Policy: Swagger UI's script and styles come from the panel (django-ninja's
static files), no CDN, and the ``page`` fixture fails on any refusal."""

from __future__ import annotations

from playwright.sync_api import expect


def test_the_docs_page_shows_every_operation_under_the_panels_policy(page):
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.goto("/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Cluster panel API")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any(p.endswith("/nodes/scan") for p in paths) and len(paths) >= 18
    origin = page.url.split("/api/")[0]
    assert all(url.startswith((origin, "data:")) for url in seen), seen

"""The JSON API (``/api/v1/``) on django-ninja: typed endpoints whose OpenAPI 3 schema
(``/api/v1/openapi.json``) is built from the same type hints that validate the input, and a
Swagger page (``/api/v1/docs``) served from the panel itself (ninja ships its assets;
the panel's Content-Security-Policy allows no CDN).

It calls only the action layer (``sync.actions``) and the shared queries (``sync.fleet``,
``sync.audit``), as the pages do; it is their sibling and imports nothing of ``web``.
"""

from __future__ import annotations

from ninja import NinjaAPI, Swagger

from api import editing, errors, history, nodes, work
from api.auth import TokenAuth
from api.common import router

api = NinjaAPI(
    title="Cluster panel API",
    version="1",
    description=(
        "Every request needs `Authorization: Bearer <token>` (make one with `manage.py "
        "apitoken USER` or on /account/tokens/). Read-only tokens may only GET."
    ),
    auth=TokenAuth(),
    urls_namespace="api",
    docs=Swagger(settings={"persistAuthorization": False}),
    docs_url="/docs",
    openapi_url="/openapi.json",
)
errors.install(api)
# Importing the modules registers their operations on the one router.
assert editing and nodes and work and history
api.add_router("", router)

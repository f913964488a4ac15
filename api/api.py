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

# Where a node's id and a run's id come from in the answers, for the OpenAPI links that let a
# client (and schemathesis's stateful phase) follow one operation with the next.
NODE_ID_SOURCES = {
    ("/nodes", "get", "200"): "$response.body#/items/0/id",
    ("/nodes", "post", "201"): "$response.body#/id",
    ("/nodes/{node_id}", "get", "200"): "$response.body#/id",
}
RUN_ID_SOURCES = {
    ("/nodes/{node_id}/runs", "get", "200"): "$response.body#/items/0/id",
    ("/nodes/{node_id}", "get", "200"): "$response.body#/recent_runs/0/id",
}


def add_links(schema: dict) -> dict:
    """Link the operations that make or list nodes and runs to those that take their ids."""
    paths = schema["paths"]
    prefix = next(p for p in paths if p.endswith("/nodes")).removesuffix("/nodes")
    for sources, param in ((NODE_ID_SOURCES, "node_id"), (RUN_ID_SOURCES, "run_id")):
        targets = [
            (path, method, op["operationId"])
            for path, ops in paths.items()
            if "{" + param + "}" in path
            for method, op in ops.items()
        ]
        for (path, method, status), expression in sources.items():
            response = paths[prefix + path][method]["responses"][int(status)]
            links = response.setdefault("links", {})
            for _target_path, _target_method, op_id in targets:
                links[op_id] = {"operationId": op_id, "parameters": {param: expression}}
    return schema


class PanelAPI(NinjaAPI):
    def get_openapi_schema(self, *args, **kwargs) -> dict:
        return add_links(super().get_openapi_schema(*args, **kwargs))


api = PanelAPI(
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

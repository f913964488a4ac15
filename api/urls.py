"""``/api/v1/``: exempt from the panel's login middleware, which would redirect to the login
page; every operation authenticates its bearer token itself (``api.auth``), and the schema and
docs are public (they describe, they open nothing)."""

from django.contrib.auth.decorators import login_not_required

from api.api import api

app_name = "api"
patterns, _app, _namespace = api.urls
for pattern in patterns:
    pattern.callback = login_not_required(pattern.callback)

urlpatterns = [*patterns]

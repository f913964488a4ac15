from django.apps import AppConfig


class WebConfig(AppConfig):
    """The web face: pages, forms, filters and template tags on top of ``nodes`` and ``sync``."""

    name = "web"
    verbose_name = "Web pages"

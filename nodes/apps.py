from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _after_migrate(sender, using: str = "default", apps=None, **kwargs) -> None:
    """Keep the web's two groups (Operators, Read-only) in place after every migrate."""
    from nodes.access import ensure_groups

    if apps is None:
        ensure_groups(using)
    else:
        ensure_groups(using, apps)


class NodesConfig(AppConfig):
    name = "nodes"
    verbose_name = "Cluster nodes"

    def ready(self) -> None:
        post_migrate.connect(_after_migrate, sender=self)

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _after_migrate(sender, using: str = "default", verbosity: int = 1, **kwargs) -> None:
    """After every ``migrate``: everything the cluster needs is in the database.

    The cache table too: django-q keeps the cluster's status in Django's cache (the database
    cache, so every process sees it), and a cluster started after ``migrate`` alone would
    otherwise log a missing table twice a second for ever. ``createcachetable`` skips tables
    that exist, so this costs one check per migrate.
    """
    from django.core.management import call_command

    from sync.schedule import ensure_sweep_schedule
    from sync.synchronizers import update_syncactions

    call_command("createcachetable", database=using, verbosity=0)
    update_syncactions(using)
    ensure_sweep_schedule(using)


class SyncConfig(AppConfig):
    name = "sync"
    verbose_name = "Synchronization"

    def ready(self) -> None:
        # The types were loaded with the models (sync/models.py); their data is now watched.
        from sync.synchronizers import REGISTRY, check_needs
        from sync.watching import connect

        check_needs(REGISTRY)
        connect(REGISTRY.values())
        post_migrate.connect(_after_migrate, sender=self)

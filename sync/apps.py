from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _after_migrate(sender, using: str = "default", **kwargs) -> None:
    from sync.schedule import ensure_sweep_schedule
    from sync.synchronizers import update_syncactions

    update_syncactions(using)
    ensure_sweep_schedule(using)


class SyncConfig(AppConfig):
    name = "sync"
    verbose_name = "Synchronization"

    def ready(self) -> None:
        # The types were loaded with the models (sync/models.py); their data is now watched.
        from sync.synchronizers import REGISTRY
        from sync.watching import connect

        connect(REGISTRY.values())
        post_migrate.connect(_after_migrate, sender=self)

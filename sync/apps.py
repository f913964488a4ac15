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
        from sync.synchronizers import load_builtin_types

        load_builtin_types()
        from sync import triggers  # noqa: F401

        post_migrate.connect(_after_migrate, sender=self)

from django.apps import AppConfig


class PanelConfig(AppConfig):
    name = "panel"
    verbose_name = "Cluster panel"

    def ready(self) -> None:
        """Every process of the panel starts here: make its data folder private before use.

        Done at start-up, not when the settings are imported, so reading the settings writes
        nothing. A new instance gets its secret key here too.
        """
        from django.conf import settings

        from panel.instance import ensure_secret_key, prepare_data_dir

        prepare_data_dir(settings.DATA_DIR)
        # Read without the "must not be empty" check of ``settings.SECRET_KEY``.
        if not getattr(settings._wrapped, "SECRET_KEY", ""):
            settings.SECRET_KEY = ensure_secret_key(settings.DATA_DIR)

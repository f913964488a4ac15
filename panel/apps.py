from django.apps import AppConfig


class PanelConfig(AppConfig):
    name = "panel"
    verbose_name = "Cluster panel"

    def ready(self) -> None:
        """Every process of the panel starts here: make its data folder private before use.

        Done at start-up, not when the settings are imported, so reading the settings writes
        nothing (the secret key file aside).
        """
        from django.conf import settings

        from panel.instance import prepare_data_dir

        prepare_data_dir(settings.DATA_DIR)

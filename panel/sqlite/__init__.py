"""Django's SQLite backend with the database file made private (see ``panel.instance``)."""

"""Django's SQLite backend, except that a database file is created 0600 before SQLite opens it.

Every process opens the database through here (the web server, the django-q cluster, the
commands, the test suite creating its test database), so the file, and the -wal, -shm and
-journal files SQLite gives the same mode, are private whatever the process's umask.
"""

from django.db.backends.sqlite3 import base

from panel.instance import private_sqlite_file


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        name = str(conn_params["database"])
        if not self.is_in_memory_db() and not name.startswith("file:"):
            private_sqlite_file(name)
        return super().get_new_connection(conn_params)

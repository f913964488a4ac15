"""gunicorn's settings for the panel: ``runpanel`` and the systemd unit both start it with them.

Threads, not only processes: every open Cluster nodes page polls once a second, and a poll
mostly waits on the database. ``PANEL_BIND`` is where it listens (``runpanel --addr/--port``
overrides it); behind the reverse proxy of docs/OPERATIONS.md that is 127.0.0.1.
"""

from panel.env import env_int, env_str

wsgi_app = "panel.wsgi:application"
bind = [env_str("PANEL_BIND", "127.0.0.1:8000")]
workers = env_int("PANEL_WEB_WORKERS", 2, minimum=1, maximum=64)
threads = env_int("PANEL_WEB_THREADS", 4, minimum=1, maximum=64)
worker_class = "gthread"
timeout = 60
graceful_timeout = 10
accesslog = "-"
# No control socket (gunicorn 24+ makes one under $HOME): systemd and runpanel manage the
# server, and the panel writes nothing outside its data folder.
control_socket_disable = True
# Proxy headers are trusted from the local proxy only (the default, 127.0.0.1).


def when_ready(server) -> None:
    """Once per start of the web server, in its main process: the panel's start-up work."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")
    django.setup()
    from panel.startup import on_server_start

    on_server_start("web server")

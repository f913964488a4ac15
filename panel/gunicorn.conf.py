"""gunicorn's settings for the panel: ``runpanel`` and the systemd unit both start it with them.

Threads, not only processes: every open Cluster nodes page polls once a second, and a poll
mostly waits on the database. ``PANEL_BIND`` is where it listens (``runpanel --addr/--port``
overrides it); under the systemd units gunicorn takes the unix socket of
``cluster-panel-web.socket`` instead (socket activation), which only nginx may open.
"""

import importlib
import os
import sys

from panel.env import BadSetting, env_int, env_str

# The settings the panel refuses (a weak secret key, a Redis anyone may write to...) stop the
# web server here, in one line with exit 2 as manage.py says them, before it binds: its
# workers would otherwise each fail to boot with a traceback, and systemd restart them.
try:
    importlib.import_module(os.environ.get("DJANGO_SETTINGS_MODULE", "panel.settings"))
except BadSetting as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)

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
# gunicorn trusts X-Forwarded-Proto from 127.0.0.1 and unix sockets only (its default); which
# X-Forwarded-For entry is the client is the panel's rule (PANEL_TRUSTED_PROXIES).


def when_ready(server) -> None:
    """Once per start of the web server, in its main process: the panel's start-up work."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")
    django.setup()
    from panel.startup import on_server_start

    on_server_start("web server")

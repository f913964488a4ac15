"""``qcluster`` as django-q2 runs it, after the start-up work of the panel's own processes,
and with the cluster's heartbeat.

The ``panel`` app comes first in ``INSTALLED_APPS``, so this command stands in for
django-q2's own; everything else is django-q2's.

django-q2's ``handle`` returns once its sentinel (which runs the workers) has started; the
main process then only waits for it. That wait is where the heartbeat is written
(``sync.heartbeat``): in every cluster, whatever its workers and its scheduler do, for as
long as the sentinel lives. A frozen (SIGSTOP) or killed cluster stops beating at once.
"""

import multiprocessing

from django.conf import settings
from django.db import connections
from django_q.management.commands import qcluster

from panel.startup import on_server_start


def keep_connections() -> None:
    """The cluster's processes keep their database connections between tasks
    (``CLUSTER_CONN_MAX_AGE``, with health checks): set before django-q forks its workers,
    which inherit it. The web server and the commands keep Django's one connection per
    request or command."""
    for alias in connections:
        connections.settings[alias]["CONN_MAX_AGE"] = settings.CLUSTER_CONN_MAX_AGE
        connections.settings[alias]["CONN_HEALTH_CHECKS"] = True
        connections[alias].close()  # the next one is made with the settings above


def _sentinel_alive() -> bool:
    """The cluster's sentinel is this process's one multiprocessing child; the call also
    reaps it once it has ended."""
    return bool(multiprocessing.active_children())


class Command(qcluster.Command):
    def handle(self, *args, **options):
        from sync.heartbeat import keep_beating

        on_server_start("cluster")
        keep_connections()
        result = super().handle(*args, **options)
        keep_beating(_sentinel_alive)
        return result

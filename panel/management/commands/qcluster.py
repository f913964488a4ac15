"""``qcluster`` as django-q2 runs it, after the start-up work of the panel's own processes.

The ``panel`` app comes first in ``INSTALLED_APPS``, so this command stands in for
django-q2's own; everything else is django-q2's.
"""

from django_q.management.commands import qcluster

from panel.startup import on_server_start


class Command(qcluster.Command):
    def handle(self, *args, **options):
        on_server_start("cluster")
        return super().handle(*args, **options)

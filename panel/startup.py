"""What every start of a long-running process of the panel does: the web server (gunicorn,
through ``panel/gunicorn.conf.py``) and the cluster (``manage.py qcluster``, also when
``runpanel`` starts them). One function, called from those two places only: commands that
come and go (``migrate``, ``nodes``) and the tests do not pay for it.
"""

from __future__ import annotations


def on_server_start(process: str) -> None:
    """Flag the nodes that are the panel's own server (``sync.panelhost``).

    Both callers fork afterwards (gunicorn its workers, django-q its sentinel and workers):
    the database connection used here is closed, so no child inherits it.
    """
    from django.db import connections

    from sync.panelhost import mark_at_start

    try:
        mark_at_start(process)
    finally:
        connections.close_all()

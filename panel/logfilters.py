"""Filters for the panel's logging configuration (``LOGGING`` in ``panel.settings``)."""

from __future__ import annotations

import logging


class ClusterLifecycleOnly(logging.Filter):
    """Of django-q's INFO lines, keep the cluster's own (starting, running, stopping).

    django-q logs three INFO lines per task (enqueued, processing, processed), several a
    second while a fleet converges; the ``sync`` logger already says what each run did. Its
    warnings and errors all pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.module == "cluster"

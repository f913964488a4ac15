"""Alerts: condition changes written as rows, gathered into digests, sent through apprise.

- ``changes``: a node entering or leaving a condition is a ``ConditionChange`` row, written by
  ``sync.conditions.NodeConditions.save`` (the one place conditions are saved) in the same
  transaction; ``cluster`` writes the cluster's own change (late, running again).
- ``digests``: every ``PANEL_ALERT_DIGEST_SECONDS`` at most, the changes not yet reported make
  one digest (a flapping node is one line with its count), with one delivery per channel in
  the outbox (``AlertDelivery``).
- ``channels``: the apprise URLs of ``PANEL_ALERT_URLS``, their masked labels, and sending.
- ``process``: ``manage.py alerts``, the small process outside the cluster that watches the
  cluster's heartbeat, makes the digests and empties the outbox (a dead cluster cannot report
  itself, and a receiver that is down must not slow the cluster).

healthchecks' shape (``Flip`` rows, ``sendalerts``): the change is a row, a separate loop
turns the rows into messages.
"""

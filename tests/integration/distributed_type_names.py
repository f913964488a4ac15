"""Names of the test-only types in ``distributed_types``; importing this registers nothing."""

# Runs on the node for WORK_SECONDS, long enough to kill a machine in the middle of it.
DIST_WORK = "dist-work"
# Quick; comes after DIST_WORK in the same session (a higher priority number).
DIST_NOTE = "dist-note"
DIST_TYPES = (DIST_WORK, DIST_NOTE)
WORK_SECONDS = 4

"""The django-q Schedule of the sweep: the safety net behind the kick on commit."""

from django_q.models import Schedule

SWEEP_SCHEDULE_NAME = "sync-sweep"


def ensure_sweep_schedule(using: str = "default") -> Schedule:
    """Create or repair the one sweep Schedule; running it again changes nothing."""
    schedule, _ = Schedule.objects.using(using).update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={
            "func": "sync.tasks.sweep",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    return schedule

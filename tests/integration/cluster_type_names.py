"""Names of the test-only types in ``stress_types``; importing this registers nothing."""

STRESS_TYPES = ("stress-a", "stress-b", "stress-c")
SLOW_TYPE = "stress-slow"
ALL_TYPES = (*STRESS_TYPES, SLOW_TYPE)

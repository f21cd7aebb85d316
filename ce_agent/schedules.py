"""Task schedules: cron expressions (5 fields, or croniter's 6th for seconds) checked with croniter."""

from __future__ import annotations


def cron_error(expression: str) -> str | None:
    """Why `expression` is not a valid cron schedule, or None when it is.

    croniter costs ~40 ms to import, so only `validate` and the daemon call this; `run` ignores
    schedules."""
    from croniter import croniter

    fields = expression.split()
    if len(fields) not in (5, 6):
        return f"a cron schedule has 5 fields (minute hour day month weekday) or 6 with seconds, got {len(fields)}"
    if not croniter.is_valid(expression):
        return f"not a valid cron expression: {expression!r}"
    return None

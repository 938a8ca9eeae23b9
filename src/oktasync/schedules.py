"""When ``oktasync serve`` syncs an app: every ``schedule`` (a duration, from each run's start,
the first at once) or at the times of a cron expression in the app's ``timezone``
(``schedule = "cron:*/15 * * * *"``; croniter reads it, so daylight-saving changes fall where
the zone puts them). Pure: the clock is an argument, so tests give it any time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

CRON = "cron:"


def cron_problem(text: str) -> str | None:
    """Why ``cron:EXPR`` is not a schedule (five fields: minute hour day month weekday)."""
    expression = text[len(CRON):].strip()
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        return (f"{text!r} is not a cron schedule: write cron: and five fields, minute hour "
                "day-of-month month day-of-week, such as 'cron:*/15 * * * *'")
    return None


def zone_problem(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a time zone: use an IANA name such as 'Europe/Berlin' or 'UTC'"
    return None


@dataclass(frozen=True)
class Schedule:
    """An interval (``every_s``) or a cron expression (``cron``) in ``zone``."""

    every_s: float | None = None
    cron: str | None = None
    zone: str = "UTC"

    def next_run(self, now: datetime, last_start: datetime | None) -> datetime:
        """The next time to start a run (``now`` and the result are aware datetimes)."""
        if self.cron is None:
            assert self.every_s is not None
            return now if last_start is None else last_start + timedelta(seconds=self.every_s)
        local = now.astimezone(ZoneInfo(self.zone))
        following: datetime = croniter(self.cron, local).get_next(datetime)
        return following.astimezone(now.tzinfo)

    def period_s(self, now: datetime) -> float:
        """How long between two runs around ``now`` (health: three of them without a
        success is unhealthy)."""
        if self.cron is None:
            assert self.every_s is not None
            return self.every_s
        first = self.next_run(now, None)
        return (self.next_run(first, None) - first).total_seconds()

"""When `oktasync serve` runs an app (issue 12): intervals from each run's start, cron
expressions at the right minutes in the app's time zone — judged with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from oktasync.schedules import Schedule
from tests.engine.test_config import app_with, load, problems


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_an_interval_runs_at_once_then_from_each_runs_start() -> None:
    every = Schedule(every_s=900)
    now = at("2026-12-03T10:07:30")
    assert every.next_run(now, None) == now
    assert every.next_run(now, at("2026-12-03T10:00:00")) == at("2026-12-03T10:15:00")
    assert every.period_s(now) == 900


def test_a_cron_expression_fires_at_its_minutes_never_at_once() -> None:
    quarter = Schedule(cron="*/15 * * * *")
    clock, fired = at("2026-12-03T10:07:30"), []
    for _ in range(5):
        clock = quarter.next_run(clock, None)
        fired.append(clock.strftime("%H:%M"))
    assert fired == ["10:15", "10:30", "10:45", "11:00", "11:15"]
    assert quarter.next_run(at("2026-12-03T10:15:00"), None) == at("2026-12-03T10:30:00")
    assert quarter.period_s(at("2026-12-03T10:07:30")) == 900


def test_cron_follows_the_zones_daylight_saving() -> None:
    nine = Schedule(cron="0 9 * * *", zone="Europe/Berlin")
    # 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC from the last Sunday of March
    assert nine.next_run(at("2026-03-28T00:00:00"), None) == at("2026-03-28T08:00:00")
    assert nine.next_run(at("2026-03-29T12:00:00"), None) == at("2026-03-30T07:00:00")
    assert nine.period_s(at("2026-03-28T00:00:00")) == timedelta(hours=23).total_seconds()


def test_cron_and_zone_settings_are_checked(tmp_path: Path) -> None:
    config = load(tmp_path, app_with(schedule="'cron:*/15 * * * *'",
                                     timezone="'Europe/Berlin'"))
    assert config.apps[0].schedule == Schedule(cron="*/15 * * * *", zone="Europe/Berlin")
    (found,) = problems(tmp_path, app_with(schedule="'cron:every day'"))
    assert found.startswith("app[0] (corp-okta).schedule: 'cron:every day' is not a cron "
                            "schedule"), found
    (found,) = problems(tmp_path, app_with(timezone="'Mars/Olympus'"))
    assert found == ("app[0] (corp-okta).timezone: 'Mars/Olympus' is not a time zone: use an "
                     "IANA name such as 'Europe/Berlin' or 'UTC'"), found

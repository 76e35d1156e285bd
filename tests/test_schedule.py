"""The beat schedule and the Celery configuration, without a broker."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from jobs.celery import celery_config, weekly_schedule
from recsys.settings import ConfigError, Settings


def _next_run(settings: Settings, now: dt.datetime) -> dt.datetime:
    schedule = weekly_schedule(settings)
    schedule.nowfun = lambda: now
    last_run = now - dt.timedelta(seconds=1)
    return now + schedule.remaining_estimate(last_run)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Wednesday afternoon -> next Monday 00:00 UTC.
        (
            dt.datetime(2026, 11, 18, 15, 30, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
        ),
        # Sunday 23:59 -> one minute later.
        (
            dt.datetime(2026, 11, 22, 23, 59, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
        ),
        # Monday 00:00:30, just after this week's run -> the Monday after.
        (
            dt.datetime(2026, 11, 23, 0, 0, 30, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
        ),
    ],
)
def test_default_schedule_is_monday_midnight_utc(now: dt.datetime, expected: dt.datetime) -> None:
    settings = Settings(data_dir="/tmp/x")
    assert _next_run(settings, now) == expected


def test_cron_and_timezone_are_configurable() -> None:
    settings = Settings(
        data_dir="/tmp/x", weekly_cron="30 6 * * 0", weekly_timezone="Europe/Berlin"
    )
    now = dt.datetime(2026, 11, 18, 12, 0, tzinfo=dt.UTC)
    due = _next_run(settings, now).astimezone(ZoneInfo("Europe/Berlin"))
    assert (due.weekday(), due.hour, due.minute) == (6, 6, 30)  # Sunday 06:30 in Berlin
    assert due.date() == dt.date(2026, 11, 22)


def test_bad_cron_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigError, match="CRATEDIGGER_WEEKLY_CRON"):
        weekly_schedule(Settings(data_dir="/tmp/x", weekly_cron="61 0 * * 1"))


def test_weekly_batch_settings() -> None:
    config = celery_config(Settings(data_dir="/tmp/x", broker_visibility_timeout=120))
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert config["task_serializer"] == "json" and config["accept_content"] == ["json"]
    assert config["broker_transport_options"] == {"visibility_timeout": 120}
    assert config["beat_schedule"]["weekly-run"]["task"] == "cratedigger.start_weekly_run"
    assert config["task_soft_time_limit"] < config["task_time_limit"]


@pytest.mark.parametrize(
    ("now", "week"),
    [
        (dt.datetime(2026, 11, 23, 0, 0, tzinfo=dt.UTC), dt.date(2026, 11, 23)),
        (dt.datetime(2026, 11, 22, 23, 0, tzinfo=dt.UTC), dt.date(2026, 11, 23)),  # Berlin 00:00
        (dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC), dt.date(2026, 11, 23)),  # a manual run
    ],
)
def test_a_scheduled_run_builds_the_week_that_is_starting(now: dt.datetime, week: dt.date) -> None:
    from jobs.tasks import week_to_build

    assert week_to_build(now) == week

"""The Celery application: ``celery -A jobs worker`` and ``celery -A jobs beat``.

Configuration comes from the project settings (``CRATEDIGGER_BROKER_URL`` and friends).
Importing this module creates the app; nothing else in ``jobs`` does.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.schedules import crontab

from recsys.settings import ConfigError, Settings, load_settings


def weekly_schedule(settings: Settings) -> crontab:
    """The beat schedule of the weekly run, from ``weekly_cron`` in ``weekly_timezone``."""
    from zoneinfo import ZoneInfo

    try:
        schedule = crontab.from_string(settings.weekly_cron)
    except Exception as exc:  # celery raises ValueError or its ParseException
        raise ConfigError(f"CRATEDIGGER_WEEKLY_CRON {settings.weekly_cron!r}: {exc}") from None
    schedule.tz = ZoneInfo(settings.weekly_timezone)
    return schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": settings.weekly_timezone,
        "enable_utc": True,
        # A chunk whose worker dies is delivered again, never lost; one task at a time per
        # process so that a long chunk does not hold others hostage.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": max(1, int(settings.task_time_limit * 0.9)),
        "broker_transport_options": {"visibility_timeout": settings.broker_visibility_timeout},
        "broker_connection_retry_on_startup": True,
        "result_expires": 7 * 24 * 3600,
        "result_extended": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "weekly-run": {
                "task": "cratedigger.start_weekly_run",
                "schedule": weekly_schedule(settings),
                "kwargs": {"trigger": "beat"},
            }
        },
    }


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    celery = Celery("cratedigger", include=["jobs.tasks"])
    celery.config_from_object(celery_config(settings))
    celery.conf.cratedigger_settings = settings
    return celery


app = create_celery()

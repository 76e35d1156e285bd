from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from recsys.contract import is_valid_id, parse_week, week_cutoff, week_start_of
from recsys.settings import ConfigError, load_settings


def test_defaults_put_sqlite_under_the_data_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path / "state"))
    settings = load_settings()
    assert settings.data_dir == (tmp_path / "state").resolve()
    assert settings.database_url == f"sqlite:///{(tmp_path / 'state' / 'cratedigger.db').resolve()}"
    assert settings.playlist_length == 50 and settings.max_tracks_per_artist == 2
    assert settings.spark_master == "local[*]"


def test_environment_overrides(monkeypatch) -> None:
    monkeypatch.setenv("CRATEDIGGER_DATABASE_URL", "postgresql+psycopg://h/db")
    monkeypatch.setenv("CRATEDIGGER_ALS_FACTORS", "32")
    monkeypatch.setenv("CRATEDIGGER_PLAYLIST_LENGTH", "30")
    settings = load_settings()
    assert settings.database_url == "postgresql+psycopg://h/db"
    assert settings.als_factors == 32 and settings.playlist_length == 30


@pytest.mark.parametrize(
    ("name", "value", "mentions"),
    [
        ("CRATEDIGGER_ALS_FACTORS", "many", "CRATEDIGGER_ALS_FACTORS"),
        ("CRATEDIGGER_ALS_FACTORS", "0", "CRATEDIGGER_ALS_FACTORS"),
        ("CRATEDIGGER_PLAYLIST_LENGTH", "-5", "CRATEDIGGER_PLAYLIST_LENGTH"),
        ("CRATEDIGGER_DATABASE_URL", "just-a-file.db", "not a SQLAlchemy URL"),
        ("CRATEDIGGER_LOG_FORMAT", "xml", "CRATEDIGGER_LOG_FORMAT"),
        ("CRATEDIGGER_PLAYLIST_LENGHT", "20", "unknown variable"),
        ("CRATEDIGGER_ALS_ALPHA", "nan", "CRATEDIGGER_ALS_ALPHA"),
        ("CRATEDIGGER_TUNE_EVERY_WEEKS", "-1", "CRATEDIGGER_TUNE_EVERY_WEEKS"),
    ],
)
def test_bad_configuration_is_a_clear_error(
    monkeypatch, name: str, value: str, mentions: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=mentions):
        load_settings()


def test_a_search_budget_the_celery_task_limit_would_cut_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("CRATEDIGGER_TUNE_EVERY_WEEKS", "4")
    monkeypatch.setenv("CRATEDIGGER_TUNE_BUDGET_S", "3600")
    with pytest.raises(ConfigError, match=r"tune_budget_s \(3600\) must be below task_time_limit"):
        load_settings()
    monkeypatch.setenv("CRATEDIGGER_TASK_TIME_LIMIT", "7200")
    assert load_settings().tune_budget_s == 3600.0


def test_weeks_start_on_monday_utc() -> None:
    sunday_night = dt.datetime(2026, 11, 22, 23, 30, tzinfo=dt.UTC)
    assert week_start_of(sunday_night) == dt.date(2026, 11, 16)
    # 01:00 on Monday in UTC+2 is still Sunday in UTC.
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert week_start_of(dt.datetime(2026, 11, 23, 1, 0, tzinfo=plus_two)) == dt.date(2026, 11, 16)
    assert week_cutoff(dt.date(2026, 11, 16)) == dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
    assert parse_week("2026-11-16") == dt.date(2026, 11, 16)
    with pytest.raises(ValueError, match="Monday of that week is 2026-11-16"):
        parse_week("2026-11-18")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_week("next monday")


@pytest.mark.parametrize(
    "value", ["u1", "t0000042", "user@example.com", "spotify:track:4iV5W9", "a" * 128]
)
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)


@pytest.mark.parametrize(
    "value", ["", " u1", "a b", "a" * 129, "<script>", "a/b", "x\x00", "é", "-lead", "u1\n"]
)
def test_invalid_ids(value: str) -> None:
    assert not is_valid_id(value)

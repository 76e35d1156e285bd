"""The schema revision: the constant the code checks against, and who may migrate.

Only ``cratedigger db upgrade`` (and the CLI for a SQLite database it owns: the default one,
or a file it is about to create) migrates; a weekly run and a Celery worker refuse a
database at another revision with one line naming the command to run.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cli.main import cli
from jobs.db import SchemaOutdated
from jobs.weekly import start_run
from migrations import head_revision, upgrade
from recsys.db.engine import make_engine
from recsys.db.schema import SCHEMA_REVISION, current_revision, is_up_to_date
from recsys.settings import Settings

OLD = "0004"
WEEK = dt.date(2026, 11, 16)


def _revision(database_url: str) -> str | None:
    engine = make_engine(database_url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def _outdated(database_url: str) -> str:
    where = make_url(database_url).render_as_string(hide_password=True)
    return (
        f"the database at {where} has schema revision {OLD}, this version needs "
        f"{SCHEMA_REVISION}: run `cratedigger db upgrade`"
    )


def test_the_schema_revision_is_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_REVISION, (
        "a new migration needs SCHEMA_REVISION in recsys/db/schema.py set to its revision"
    )


def test_is_up_to_date_only_at_the_schema_revision(database_url: str) -> None:
    engine = make_engine(database_url)
    assert current_revision(engine) is None and not is_up_to_date(engine)
    upgrade(database_url, OLD)
    assert current_revision(engine) == OLD and not is_up_to_date(engine)
    upgrade(database_url)
    assert current_revision(engine) == SCHEMA_REVISION and is_up_to_date(engine)
    engine.dispose()


def test_a_weekly_run_refuses_another_revision_and_never_migrates(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "state", database_url=database_url)
    upgrade(database_url, OLD)
    with pytest.raises(SchemaOutdated, match=re.escape(_outdated(database_url))):
        start_run(settings, tmp_path, WEEK, "test")
    assert _revision(database_url) == OLD

    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaOutdated, match="9999, newer than this version"):
        start_run(settings, tmp_path, WEEK, "test")


def test_the_cli_refuses_a_database_it_does_not_own_until_db_upgrade(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(database_url, OLD)  # an existing SQLite file, or PostgreSQL
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CRATEDIGGER_DATABASE_URL", database_url)
    runner = CliRunner()
    refused = runner.invoke(cli, ["status"])
    assert refused.exit_code == 1
    assert f"Error: {_outdated(database_url)}" in refused.output.splitlines()
    assert _revision(database_url) == OLD

    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(cli, ["status"]).stdout == "no weekly runs yet\n"


def test_the_cli_migrates_the_default_database_and_a_sqlite_file_it_creates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    default = f"sqlite:///{state / 'cratedigger.db'}"
    upgrade(default, OLD)  # made by an earlier version
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(state))
    runner = CliRunner()
    assert runner.invoke(cli, ["status"]).stdout == "no weekly runs yet\n"
    assert _revision(default) == SCHEMA_REVISION

    new = f"sqlite:///{tmp_path / 'new' / 'cratedigger.db'}"
    monkeypatch.setenv("CRATEDIGGER_DATABASE_URL", new)
    assert runner.invoke(cli, ["status"]).stdout == "no weekly runs yet\n"
    assert _revision(new) == SCHEMA_REVISION

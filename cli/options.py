"""What every ``cratedigger`` command shares: settings, the schema rule, options, errors, bars.

The schema rule: a command that uses the database needs it at
:data:`recsys.db.schema.SCHEMA_REVISION`. The CLI brings a SQLite database it owns there
itself — the default one (``DATA_DIR/cratedigger.db``, when ``CRATEDIGGER_DATABASE_URL`` is
not set) and a SQLite file that does not exist yet; any other database must have been
upgraded with ``cratedigger db upgrade`` (or the containers' migrate service), else the
command stops with one line saying so.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import make_url
from tqdm import tqdm

from recsys.contract import parse_week, week_start_of
from recsys.settings import ConfigError, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

WEEK_HELP = "Monday (UTC) of the week; default: the current week."


def owns_database(settings: Settings) -> bool:
    """Whether the CLI may migrate the database itself: the default SQLite file, or a SQLite
    file that does not exist yet (the CLI is about to create it)."""
    if "database_url" not in settings.model_fields_set:
        return True
    url = make_url(settings.database_url)
    return url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file()


def command_settings(*, database: bool = False) -> Settings:
    """Load the settings and set up logging. ``database``: the command uses the database, so
    bring a database the CLI owns to the schema revision and refuse any other that is not
    there (:class:`jobs.db.SchemaOutdated`)."""
    from recsys.logs import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    if database:
        if owns_database(settings):
            from migrations import upgrade

            upgrade(settings.database_url)
        else:
            from jobs.db import require_schema

            require_schema(settings)
    return settings


def friendly_errors(command: F) -> F:
    """Turn input, configuration and schema errors into a one-line message and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from jobs.aggregate import InputError
        from jobs.db import SchemaOutdated
        from recsys.db.repository import RunAlreadyActive, RunNotActive

        try:
            return command(*args, **kwargs)
        except (
            ConfigError,
            InputError,
            ValueError,
            FileNotFoundError,
            RunAlreadyActive,
            RunNotActive,
            SchemaOutdated,
        ) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def week_option(help_text: str = WEEK_HELP, *names: str) -> Callable[[F], F]:
    """``--week YYYY-MM-DD`` (or the option ``names``), passed on as the Monday's date
    (default: this week's)."""

    def convert(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dt.date:
        if value is None:
            return week_start_of(dt.datetime.now(dt.UTC))
        try:
            return parse_week(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    names = names or ("--week",)
    return click.option(*names, metavar="YYYY-MM-DD", callback=convert, help=help_text)


def data_option(help_text: str, *, required: bool = False) -> Callable[[F], F]:
    """``--data DIR``: an existing data directory (catalog/ and events/), as ``data_dir``."""
    return click.option(
        "--data",
        "data_dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        required=required,
        default=None,
        help=help_text,
    )


class SourceName(click.ParamType):  # type: ignore[type-arg]
    """A source of events: an existing data directory, or ``bigquery://PROJECT/DATASET``."""

    name = "DIR|bigquery://PROJECT/DATASET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from jobs.sources import SourceError, check_source_name

        text = str(value)
        try:
            name = check_source_name(text)
        except SourceError as exc:
            self.fail(str(exc), param, ctx)
        return name if name.startswith("bigquery://") else str(Path(name).absolute())


def source_option(help_text: str, *, required: bool = False) -> Callable[[F], F]:
    """``--data``: a data directory or a BigQuery dataset (:mod:`jobs.sources`), as
    ``data_dir``."""
    return click.option(
        "--data", "data_dir", type=SourceName(), required=required, default=None, help=help_text
    )


#: ``--port``: the port the web server listens on (``serve``, ``demo``).
port_option = click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)


def progress(total: int, name: str, unit: str = "chunk") -> tqdm:
    """A progress bar on the terminal (the weekly run's progress factory)."""
    return tqdm(total=total, desc=name, unit=unit, dynamic_ncols=True)

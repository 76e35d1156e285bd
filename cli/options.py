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
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class Output:
    """What the group's options ask of every command's output: ``verbosity`` (``-v``
    once: INFO, twice: DEBUG; none: warnings and errors only) and ``progress`` (bars on
    standard error: True, False, or None for "when it is a terminal")."""

    verbosity: int = 0
    progress: bool | None = None

    def log_level(self, settings: Settings) -> str:
        """``-v`` wins; then ``CRATEDIGGER_LOG_LEVEL`` when it is set; else WARNING: the
        command's own output says what it did."""
        if self.verbosity:
            return "DEBUG" if self.verbosity > 1 else "INFO"
        if "log_level" in settings.model_fields_set:
            return settings.log_level
        return "WARNING"

    @property
    def show_progress(self) -> bool:
        return sys.stderr.isatty() if self.progress is None else self.progress


#: Set by the ``cratedigger`` group from its options, once per invocation.
output = Output()


def command_settings(*, database: bool = False) -> Settings:
    """Load the settings and set up logging. ``database``: the command uses the database
    (:func:`prepare_database`)."""
    from recsys.logs import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(output.log_level(settings), settings.log_format)
    if database:
        prepare_database(settings)
    return settings


def prepare_database(settings: Settings) -> None:
    """Bring a database the CLI owns to the schema revision and refuse any other that is
    not there (:class:`jobs.db.SchemaOutdated`)."""
    if owns_database(settings):
        from migrations import upgrade

        upgrade(settings.database_url)
    else:
        from jobs.db import require_schema

        require_schema(settings)


class DataError(click.ClickException):
    """The input data cannot be used as given (a data directory without events...): one
    line, exit status 2, like a usage error."""

    exit_code = 2


def friendly_errors(command: F) -> F:
    """Turn input, configuration and schema errors into a one-line message: exit status 2
    for unusable input data (:class:`jobs.aggregate.InputError`), 1 for the others."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from jobs.aggregate import InputError
        from jobs.db import SchemaOutdated
        from recsys.db.repository import RunAlreadyActive, RunNotActive

        try:
            return command(*args, **kwargs)
        except InputError as exc:
            raise DataError(str(exc)) from None
        except (
            ConfigError,
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
    """A progress bar on standard error (the weekly run's progress factory): drawn when it
    is a terminal or with ``--progress``, else a bar that prints nothing."""
    return tqdm(
        total=total,
        desc=name,
        unit=unit,
        dynamic_ncols=True,
        disable=not output.show_progress,
        file=sys.stderr,
    )

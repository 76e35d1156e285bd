"""Where a week's events and catalog come from: a data directory, or BigQuery tables.

Every source ends as a data directory in the contract's layout (``catalog/``, ``events/``)
that the Spark aggregation reads, so the same validation, deduplication and quarantine
apply whatever the source. A directory is read where it is; a BigQuery dataset is staged
first (:mod:`jobs.bigquery`: the week's window, through Arrow, into Parquet).

A source is named by a string, the ``--data`` option or ``CRATEDIGGER_SOURCE_DIR``:
a path, or ``bigquery://PROJECT/DATASET``.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from jobs.bigquery import BigQueryConfig

BIGQUERY_SCHEME = "bigquery://"
_PROJECT = r"[a-z][a-z0-9-]{4,29}"
_DATASET = r"[A-Za-z0-9_]{1,1024}"
_BIGQUERY_NAME = re.compile(rf"^bigquery://(?P<project>{_PROJECT})/(?P<dataset>{_DATASET})/?$")


class SourceError(ValueError):
    """A source cannot be named or read; the message says which and why, in one line."""


class EventSource(Protocol):
    """A week's input, as a data directory the aggregation reads."""

    def describe(self) -> str:
        """What the source is, for logs and the run's record."""
        ...

    def stage(self, cutoff: dt.datetime, into: Path) -> Path:
        """The data directory of the events before ``cutoff`` (``into`` if it copies)."""
        ...


@dataclass(frozen=True)
class DirectorySource:
    """A data directory in the contract's layout, read in place."""

    path: Path

    def describe(self) -> str:
        return str(self.path)

    def stage(self, cutoff: dt.datetime, into: Path) -> Path:
        return self.path


def is_bigquery(name: str | Path) -> bool:
    return str(name).startswith(BIGQUERY_SCHEME)


def open_source(name: str | Path, bigquery: BigQueryConfig) -> EventSource:
    """The source ``name`` designates: ``bigquery://PROJECT/DATASET`` (read with
    ``bigquery``, :meth:`jobs.bigquery.BigQueryConfig.of`) or a directory."""
    text = str(name)
    if not is_bigquery(text):
        return DirectorySource(Path(text))
    match = _BIGQUERY_NAME.match(text)
    if match is None:
        raise SourceError(
            f"{text!r} is not a BigQuery source: write bigquery://PROJECT/DATASET "
            "(a project id of 6-30 lowercase letters, digits and hyphens; a dataset of "
            "letters, digits and underscores)"
        )
    from jobs.bigquery import BigQuerySource

    return BigQuerySource(bigquery, match["project"], match["dataset"])


def check_source_name(name: str) -> str:
    """``name`` if it names a source (an existing directory, or a well-formed BigQuery
    dataset), else :class:`SourceError`; for the CLI and the Celery entry point."""
    if is_bigquery(name):
        if _BIGQUERY_NAME.match(name) is None:
            raise SourceError(f"{name!r} is not of the form bigquery://PROJECT/DATASET")
        return name
    if not Path(name).is_dir():
        raise SourceError(f"data directory {name} does not exist")
    return name


@contextmanager
def staged(source: EventSource, cutoff: dt.datetime, into: Path) -> Iterator[Path]:
    """The source's data directory while the block runs; a staged copy is removed after
    (a staging left by a killed process is replaced by the next attempt)."""
    if into.exists():
        shutil.rmtree(into)
    data_dir = source.stage(cutoff, into)
    try:
        yield data_dir
    finally:
        if into.exists():
            shutil.rmtree(into, ignore_errors=True)

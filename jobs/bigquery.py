"""BigQuery in and out: the week's events and catalog from tables, the published playlists
to a date-partitioned table.

In: :class:`BigQuerySource` queries each contract table (``CRATEDIGGER_BIGQUERY_*_TABLE``)
for the week's window, ``[CRATEDIGGER_EARLIEST_EVENT_AT, cut-off)`` on the events'
partition column, with query parameters (only table names, checked against a strict
pattern, are written into the SQL), reads the result through Arrow (the Storage Read API
when ``CRATEDIGGER_BIGQUERY_STORAGE_API`` is on) and writes it as Parquet in the
contract's layout. The Spark aggregation then validates it like any file: a warehouse row
that breaks the contract is quarantined with its reason, its ``source_file`` naming the
table. Every job carries ``CRATEDIGGER_BIGQUERY_LABELS`` and
``CRATEDIGGER_BIGQUERY_MAXIMUM_BYTES_BILLED``; :func:`estimate` dry-runs the week's queries.

Out: :func:`export_week` writes a published week's playlists to
``CRATEDIGGER_BIGQUERY_EXPORT_TABLE`` (partitioned by day on ``week_start``): a load job of
Parquet into a staging table that expires by itself, then one ``MERGE`` that deletes the
week's old rows and inserts the new ones atomically, so an export run twice leaves the
week's rows once. The export runs after publishing and never un-publishes a week; its
state is in ``playlist_exports``.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.errors import describe_error
from jobs.sources import SourceError
from recsys.contract import ARTISTS, PLAYS, THUMBS, TRACKS, USERS, TableSpec
from recsys.settings import Settings

if TYPE_CHECKING:
    from google.cloud import bigquery

log = logging.getLogger(__name__)

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
#: The export table's columns, in order.
EXPORT_COLUMNS = (
    ("week_start", "DATE"),
    ("user_id", "STRING"),
    ("position", "INT64"),
    ("track_id", "STRING"),
    ("score", "FLOAT64"),
    ("reason", "STRING"),
    ("kind", "STRING"),
    ("model_version", "STRING"),
    ("weekly_run_id", "INT64"),
    ("exported_at", "TIMESTAMP"),
)
_EXPORT_ARROW = pa.schema(
    [
        ("week_start", pa.date32()),
        ("user_id", pa.string()),
        ("position", pa.int64()),
        ("track_id", pa.string()),
        ("score", pa.float64()),
        ("reason", pa.string()),
        ("kind", pa.string()),
        ("model_version", pa.string()),
        ("weekly_run_id", pa.int64()),
        ("exported_at", pa.timestamp("us", tz="UTC")),
    ]
)
#: How long a staging table lives if the export that made it dies before dropping it.
STAGING_LIFETIME = dt.timedelta(days=1)


@dataclass(frozen=True)
class BigQueryConfig:
    """What the BigQuery source and export need of the settings (``of(settings)``)."""

    tables: tuple[tuple[str, str], ...]  # (contract table, BigQuery table), users optional
    window_start: dt.datetime
    export_table: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    maximum_bytes_billed: int = 0
    location: str = ""
    storage_api: bool = True
    retry_deadline_s: float = 120.0
    api_endpoint: str = ""

    @classmethod
    def of(cls, settings: Settings) -> BigQueryConfig:
        tables = [
            ("artists", settings.bigquery_artists_table),
            ("tracks", settings.bigquery_tracks_table),
            ("plays", settings.bigquery_plays_table),
            ("thumbs", settings.bigquery_thumbs_table),
        ]
        if settings.bigquery_users_table:
            tables.append(("users", settings.bigquery_users_table))
        return cls(
            tables=tuple(tables),
            window_start=settings.earliest_event_at,
            export_table=settings.bigquery_export_table,
            labels=tuple(sorted(settings.bigquery_labels.items())),
            maximum_bytes_billed=settings.bigquery_maximum_bytes_billed,
            location=settings.bigquery_location,
            storage_api=settings.bigquery_storage_api,
            retry_deadline_s=settings.bigquery_retry_deadline_s,
            api_endpoint=settings.bigquery_api_endpoint,
        )


class BigQueryError(SourceError):
    """BigQuery refused or could not be reached; the message names the table and cause."""


def client(config: BigQueryConfig, project: str) -> bigquery.Client:
    """A client for ``project``: Google's endpoint with the application default
    credentials, or ``CRATEDIGGER_BIGQUERY_API_ENDPOINT`` (an emulator) anonymously."""
    try:
        from google.cloud import bigquery
    except ImportError as exc:  # the extra is not installed
        raise BigQueryError(
            "BigQuery needs google-cloud-bigquery: pip install 'cratedigger[bigquery]'"
        ) from exc
    location = config.location or None
    if not config.api_endpoint:
        return bigquery.Client(project=project, location=location)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=project,
        location=location,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=config.api_endpoint),
    )


def _job_config(config: BigQueryConfig, parameters: Iterable[Any], **extra: Any) -> Any:
    from google.cloud import bigquery

    return bigquery.QueryJobConfig(
        query_parameters=list(parameters),
        labels=dict(config.labels),
        maximum_bytes_billed=config.maximum_bytes_billed or None,
        **extra,
    )


def _retry(config: BigQueryConfig) -> Any:
    """The client's retry policy, bounded by ``CRATEDIGGER_BIGQUERY_RETRY_DEADLINE_S``."""
    from google.cloud import bigquery

    return bigquery.DEFAULT_RETRY.with_deadline(config.retry_deadline_s)


def _quoted(project: str, dataset: str, table: str) -> str:
    """A table reference for SQL; the parts were checked against strict patterns."""
    for part in (dataset, table):
        if not _TABLE_NAME.match(part):
            raise BigQueryError(f"{part!r} is not a BigQuery dataset or table name")
    return f"`{project}.{dataset}.{table}`"


def _failure(what: str, exc: BaseException) -> BigQueryError:
    return BigQueryError(f"BigQuery {what}: {describe_error(exc)}")


def _transient() -> tuple[type[BaseException], ...]:
    """Errors worth another try: the service or the network being away for a while."""
    from google.api_core import exceptions
    from requests.exceptions import ConnectionError as RequestsConnectionError

    return (
        exceptions.ServiceUnavailable,
        exceptions.InternalServerError,
        exceptions.BadGateway,
        exceptions.GatewayTimeout,
        exceptions.TooManyRequests,
        RequestsConnectionError,
        ConnectionError,
        TimeoutError,
    )


@dataclass(frozen=True)
class TableQuery:
    """The query of one contract table for a week, with its parameters."""

    spec: TableSpec
    table: str
    sql: str
    parameters: tuple[Any, ...] = field(default=())


@dataclass(frozen=True)
class BigQuerySource:
    """The contract's tables in one BigQuery dataset (see the module's docstring)."""

    config: BigQueryConfig
    project: str
    dataset: str

    def describe(self) -> str:
        return f"bigquery://{self.project}/{self.dataset}"

    def tables(self) -> list[tuple[TableSpec, str]]:
        """(contract table, BigQuery table name); the users table only when configured."""
        specs = {spec.name: spec for spec in (ARTISTS, TRACKS, PLAYS, THUMBS, USERS)}
        return [(specs[kind], table) for kind, table in self.config.tables]

    def queries(self, cutoff: dt.datetime, bq: bigquery.Client) -> list[TableQuery]:
        """One query per table: the contract's columns the table has (a missing required
        one is an error naming it), and for events the window on the time column."""
        from google.api_core import exceptions
        from google.cloud import bigquery

        out = []
        for spec, table in self.tables():
            reference = _quoted(self.project, self.dataset, table)
            try:
                reference_id = f"{self.project}.{self.dataset}.{table}"
                found = bq.get_table(reference_id, retry=_retry(self.config))
                columns = {f.name for f in found.schema}
            except exceptions.NotFound as exc:
                raise BigQueryError(
                    f"BigQuery table {self.project}.{self.dataset}.{table} ({spec.name}) "
                    "does not exist"
                ) from exc
            except Exception as exc:  # every client and API error, told in one line
                raise _failure(f"table {table}", exc) from exc
            missing = [name for name in spec.columns if name not in columns]
            if missing:
                raise BigQueryError(
                    f"BigQuery table {self.project}.{self.dataset}.{table} ({spec.name}) has "
                    f"no column {', '.join(missing)}"
                )
            selected = ", ".join(f"`{name}`" for name in spec.names if name in columns)
            sql = f"SELECT {selected} FROM {reference}"
            parameters: tuple[Any, ...] = ()
            if spec in (PLAYS, THUMBS):
                time = spec.time_column
                sql += f" WHERE `{time}` >= @window_start AND `{time}` < @cutoff"
                parameters = (
                    bigquery.ScalarQueryParameter(
                        "window_start", "TIMESTAMP", self.config.window_start
                    ),
                    bigquery.ScalarQueryParameter("cutoff", "TIMESTAMP", cutoff),
                )
            out.append(TableQuery(spec, table, sql, parameters))
        return out

    def stage(self, cutoff: dt.datetime, into: Path) -> Path:
        """Write each table's window as Parquet under ``into`` in the contract's layout."""
        bq = client(self.config, self.project)
        try:
            for query in self.queries(cutoff, bq):
                self._stage_one(bq, query, into)
        finally:
            bq.close()  # type: ignore[no-untyped-call]
        return into

    def _stage_one(self, bq: bigquery.Client, query: TableQuery, into: Path) -> None:
        spec = query.spec
        name = f"bigquery-{self.project}.{self.dataset}.{query.table}.parquet"
        if spec in (PLAYS, THUMBS):
            target = into / "events" / spec.name / name
        else:
            target = into / "catalog" / f"{spec.name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            job = bq.query(
                query.sql,
                job_config=_job_config(self.config, query.parameters),
                retry=_retry(self.config),
            )
            table = job.result(retry=_retry(self.config)).to_arrow(
                create_bqstorage_client=self.config.storage_api
            )
        except Exception as exc:  # every client and API error, told in one line
            raise _failure(f"query of {query.table}", exc) from exc
        pq.write_table(table, target)
        log.info(
            "staged %d %s row(s) from %s.%s.%s (%s bytes processed)",
            table.num_rows,
            spec.name,
            self.project,
            self.dataset,
            query.table,
            job.total_bytes_processed,
        )


def estimate(source: BigQuerySource, cutoff: dt.datetime) -> list[tuple[str, int]]:
    """(table, bytes) each of the week's queries would scan: dry runs, nothing billed."""
    bq = client(source.config, source.project)
    try:
        out = []
        for query in source.queries(cutoff, bq):
            config = _job_config(
                source.config, query.parameters, dry_run=True, use_query_cache=False
            )
            try:
                job = bq.query(query.sql, job_config=config, retry=_retry(source.config))
            except Exception as exc:
                raise _failure(f"dry run of {query.table}", exc) from exc
            out.append((query.table, int(job.total_bytes_processed or 0)))
        return out
    finally:
        bq.close()  # type: ignore[no-untyped-call]


def export_table_parts(config: BigQueryConfig) -> tuple[str, str, str]:
    project, dataset, table = config.export_table.split(".")
    return project, dataset, table


def ensure_export_table(
    bq: bigquery.Client, project: str, dataset: str, table: str, retry: Any
) -> None:
    """Create the export table (day partitions on week_start) if it does not exist."""
    from google.api_core import exceptions
    from google.cloud import bigquery

    reference = f"{project}.{dataset}.{table}"
    try:
        bq.get_table(reference, retry=retry)
        return
    except exceptions.NotFound:
        pass
    definition = bigquery.Table(
        reference, schema=[bigquery.SchemaField(n, t) for n, t in EXPORT_COLUMNS]
    )
    definition.time_partitioning = bigquery.TimePartitioning(field="week_start")
    bq.create_table(definition, exists_ok=True, retry=retry)


def export_rows(
    config: BigQueryConfig, week_start: dt.date, rows: pa.Table, weekly_run_id: int
) -> int:
    """Replace the week's partition of the export table with ``rows`` (a table of
    :data:`_EXPORT_ARROW`'s columns); returns the rows written. Raises
    :class:`BigQueryError` with the cause."""
    from google.cloud import bigquery

    project, dataset, table = export_table_parts(config)
    staging = f"{table}__staging_{week_start:%Y%m%d}_run{weekly_run_id}"
    bq = client(config, project)
    retry = _retry(config)
    try:
        ensure_export_table(bq, project, dataset, table, retry)
        buffer = io.BytesIO()
        pq.write_table(rows.cast(_EXPORT_ARROW), buffer)
        buffer.seek(0)
        schema = [bigquery.SchemaField(n, t) for n, t in EXPORT_COLUMNS]
        load = bq.load_table_from_file(
            buffer,
            f"{project}.{dataset}.{staging}",
            job_config=bigquery.LoadJobConfig(
                source_format="PARQUET",
                schema=schema,
                write_disposition="WRITE_TRUNCATE",
                labels=dict(config.labels),
            ),
        )
        load.result(retry=retry)
        staged_table = bq.get_table(f"{project}.{dataset}.{staging}", retry=retry)
        staged_table.expires = dt.datetime.now(dt.UTC) + STAGING_LIFETIME
        bq.update_table(staged_table, ["expires"], retry=retry)
        names = ", ".join(n for n, _ in EXPORT_COLUMNS)
        values = ", ".join(f"S.{n}" for n, _ in EXPORT_COLUMNS)
        # One statement: BigQuery applies a MERGE atomically, so readers see the week's
        # old rows or its new ones, never none or both.
        merge = (
            f"MERGE {_quoted(project, dataset, table)} T"
            f" USING (SELECT * FROM {_quoted(project, dataset, staging)}"
            " WHERE week_start = @week) S ON FALSE"
            " WHEN NOT MATCHED BY SOURCE AND T.week_start = @week THEN DELETE"
            f" WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
        )
        parameter = bigquery.ScalarQueryParameter("week", "DATE", week_start)
        bq.query(merge, job_config=_job_config(config, [parameter]), retry=retry).result(
            retry=retry
        )
        bq.delete_table(f"{project}.{dataset}.{staging}", not_found_ok=True, retry=retry)
    except BigQueryError:
        raise
    except Exception as exc:
        raise _failure(f"export to {config.export_table}", exc) from exc
    finally:
        bq.close()  # type: ignore[no-untyped-call]
    return int(rows.num_rows)


def is_transient(exc: BaseException) -> bool:
    """Whether an export failure is worth retrying (the service or network away)."""
    cause: BaseException | None = exc
    transient = _transient()
    while cause is not None:
        if isinstance(cause, transient):
            return True
        cause = cause.__cause__
    return False


def export_week(config: BigQueryConfig, db: Any, week_start: dt.date) -> int:
    """Export the week's published playlists to ``CRATEDIGGER_BIGQUERY_EXPORT_TABLE``,
    recording the attempt in ``playlist_exports``; returns the rows written. Raises
    :class:`BigQueryError` (recorded as the export's error) if BigQuery fails; the week
    stays published."""
    from recsys.db import repository

    destination = config.export_table
    if not destination:
        raise BigQueryError("no export table: set CRATEDIGGER_BIGQUERY_EXPORT_TABLE")
    with db.begin() as session:
        published = repository.published_rows(session, week_start)
        if published is None:
            raise BigQueryError(f"the week of {week_start} is not published: nothing to export")
        run_id, rows = published
        attempt = repository.begin_export(session, week_start, destination, run_id)
    now = dt.datetime.now(dt.UTC)
    columns = list(zip(*rows, strict=True)) if rows else [()] * 7
    table = pa.table(
        {
            "week_start": pa.array([week_start] * len(rows), pa.date32()),
            "user_id": pa.array(columns[0], pa.string()),
            "position": pa.array(columns[1], pa.int64()),
            "track_id": pa.array(columns[2], pa.string()),
            "score": pa.array(columns[3], pa.float64()),
            "reason": pa.array(columns[4], pa.string()),
            "kind": pa.array(columns[5], pa.string()),
            "model_version": pa.array(columns[6], pa.string()),
            "weekly_run_id": pa.array([run_id] * len(rows), pa.int64()),
            "exported_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
        }
    )
    try:
        written = export_rows(config, week_start, table, run_id)
    except BigQueryError as exc:
        with db.begin() as session:
            repository.end_export(session, week_start, destination, error=str(exc))
        log.warning("export of the week of %s, attempt %d, failed: %s", week_start, attempt, exc)
        raise
    with db.begin() as session:
        repository.end_export(session, week_start, destination, rows=written)
    log.info("exported %d playlist row(s) of %s to %s", written, week_start, destination)
    return written

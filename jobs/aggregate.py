"""PySpark aggregation: raw events and catalog -> validated catalog + one row per (listener, track).

``extract_*`` read files, ``transform_*`` are pure DataFrame -> DataFrame functions (tested on
small frames), ``load_*`` write, and :func:`run_aggregation` wires them. :func:`main` is the
``spark-submit`` entry point; it sets no master, so the same file runs on a laptop
(``cratedigger aggregate``) and on a cluster (``spark-submit jobs/aggregate.py ...``).

Confidence of a (listener, track) pair, from its plays and latest thumb::

    thumb = -1:  confidence = -thumb_down_confidence      (preference 0, held strongly)
    otherwise:   confidence = ln(1 + completed + skip_weight * skips)
                              + (thumb_up_boost if thumb = +1 else 0)

A play is completed when ``ms_played >= min(30 000, duration_ms / 2)``; every other play
is a skip. ALS multiplies the confidence by ``alpha``.

A file that cannot be read at all (a truncated ``.gz``, a CSV file without a header line, a
``.parquet`` file that is not Parquet) is an :class:`InputError` whose message is one line
naming the file; with ``unreadable_files="quarantine"`` an events file of that kind is instead
recorded in the quarantine as one row of kind ``file`` and the other files are aggregated.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import datetime as dt
import gzip
import json
import logging
import os
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial, reduce
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote, urlparse

from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.contract import (
    ARTIST_COLUMNS,
    COMPLETED_MS,
    EARLIEST_EVENT,
    EVENT_FORMATS,
    ID_PATTERN,
    MAX_MS_PLAYED,
    PLAY_COLUMNS,
    THUMB_COLUMNS,
    TRACK_COLUMNS,
    USER_COLUMNS,
)
from recsys.contract import (
    QuarantineReason as R,
)

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
QUARANTINE_COLUMNS = ("kind", "reason", "source_file", "user_id", "track_id", "record")
#: The quarantine kind of a whole unreadable file (the other kinds are tables).
FILE_KIND = "file"
UNREADABLE_MODES = ("fail", "quarantine")

#: What Spark raises: its own errors (captured from the JVM) and other Java exceptions.
SPARK_ERRORS = (PySparkException, Py4JJavaError)


class InputError(ValueError):
    """The data directory cannot be read as the contract describes; the message says where.

    The message is one line. ``path`` is the file at fault, when one file is.
    """

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class AggregationParams:
    """What one aggregation counts.

    Attributes
    ----------
    cutoff : datetime.datetime
        Only events strictly before this instant count (timezone-aware).
    skip_weight, thumb_up_boost, thumb_down_confidence : float
        Confidence weights (see the module doc).
    earliest_event_at : datetime.datetime
        Events before this instant are quarantined as ``timestamp_before_earliest``.
    unreadable_files : str
        ``"fail"``: a file that cannot be read raises :class:`InputError`; ``"quarantine"``:
        an unreadable events file becomes one quarantine row of kind ``file`` and the run goes
        on without it. Catalog files are required reading either way.
    """

    cutoff: dt.datetime
    skip_weight: float = 0.25
    thumb_up_boost: float = 2.0
    thumb_down_confidence: float = 2.0
    earliest_event_at: dt.datetime = EARLIEST_EVENT
    unreadable_files: str = "fail"

    def __post_init__(self) -> None:
        if self.cutoff.tzinfo is None:
            raise ValueError("cutoff must be timezone-aware (UTC)")
        if self.earliest_event_at.tzinfo is None:
            raise ValueError("earliest_event_at must be timezone-aware (UTC)")
        if self.earliest_event_at >= self.cutoff:
            raise ValueError(
                f"earliest_event_at {self.earliest_event_at.isoformat()} must be before the "
                f"cutoff {self.cutoff.isoformat()}"
            )
        if self.unreadable_files not in UNREADABLE_MODES:
            raise ValueError(
                f"unreadable_files must be 'fail' or 'quarantine', got {self.unreadable_files!r}"
            )


@dataclass(frozen=True)
class AggregationPaths:
    """Where one aggregation writes (all Parquet datasets, replaced on every run)."""

    root: Path
    quarantine: Path

    @property
    def interactions(self) -> Path:
        return self.root / "interactions"

    @property
    def tracks(self) -> Path:
        return self.root / "tracks"

    @property
    def artists(self) -> Path:
        return self.root / "artists"

    @property
    def users(self) -> Path:
        return self.root / "users"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


@dataclass
class AggregationSummary:
    cutoff: str
    events_read: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)
    interactions: int = 0
    users: int = 0
    tracks: int = 0
    artists: int = 0
    seconds: float = 0.0
    #: Events files left out as unreadable (``unreadable_files="quarantine"``): ``path``, the
    #: ``kind`` of events it held and the one-line ``error``.
    files_quarantined: list[dict[str, str]] = field(default_factory=list)

    @property
    def quarantined_total(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.quarantined.values())


# ---------------------------------------------------------------------------------- extract


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in (".gz", ".bz2", ".snappy", ".zst"):
        name = name.removesuffix(suffix)
    for fmt, suffixes in (
        ("parquet", (".parquet",)),
        ("csv", (".csv",)),
        ("jsonl", (".jsonl", ".ndjson", ".json")),
    ):
        if name.endswith(suffixes):
            return fmt
    return None


def list_files(path: Path) -> dict[str, list[Path]]:
    """Data files under ``path`` (a file or a folder, searched recursively) by format.

    Hidden files and Spark's marker files (``.*``, ``_*``) are skipped. Links to folders are
    followed (``events/plays/2026 -> /archive/2026``); a file or folder reached twice, through
    two links or a link to an ancestor folder, is listed once, by its first path in sorted
    order. A link to nothing is listed, so that reading it says so.

    Raises
    ------
    InputError
        If a file has an extension this job does not read, or a folder cannot be listed.
    """
    found: dict[str, list[Path]] = defaultdict(list)
    for candidate in _walk(path) if path.is_dir() else [path]:
        fmt = _format_of(candidate)
        if fmt is None:
            raise InputError(
                f"{candidate}: unsupported file type; expected one of "
                f"{', '.join('.' + f for f in EVENT_FORMATS)} (optionally .gz)",
                candidate,
            )
        found[fmt].append(candidate)
    return dict(found)


def _walk(root: Path) -> list[Path]:
    """The files under the folder ``root``, links followed, each real file and folder once."""
    files: list[Path] = []
    # Real paths seen: a link back to an ancestor would otherwise never end, and two links to
    # one folder would read its files twice.
    seen: set[str] = set()

    def visit(folder: Path) -> None:
        real = os.path.realpath(folder)
        if real in seen:
            log.info("%s: already listed (it is %s); not read twice", folder, real)
            return
        seen.add(real)
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            raise InputError(f"{folder}: cannot list the folder ({_os_error(exc)})") from None
        for entry in entries:
            if entry.name.startswith((".", "_")):
                continue
            if entry.is_dir():
                visit(entry)
            elif entry.is_file() or entry.is_symlink():
                real_file = os.path.realpath(entry)
                if real_file not in seen:
                    seen.add(real_file)
                    files.append(entry)

    visit(root)
    return files


def _os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


_COMPRESSION_NAMES = {".gz": "gzip", ".bz2": "bzip2", ".snappy": "Snappy", ".zst": "Zstandard"}
_FORMAT_NAMES = {"csv": "CSV", "jsonl": "JSON Lines", "parquet": "Parquet"}


def _file_type(path: Path) -> str:
    """``gzip file``, ``CSV file``...: what a file must be for this job to read it."""
    compression = _COMPRESSION_NAMES.get(path.suffix.lower())
    if compression is not None:
        return f"{compression} file"
    return f"{_FORMAT_NAMES.get(_format_of(path) or '', 'data')} file"


def _check_opens(path: Path) -> None:
    """Raise InputError unless ``path`` opens for reading (and starts as gzip, for ``.gz``)."""
    try:
        with path.open("rb") as handle:
            start = handle.read(2)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({_os_error(exc)})", path) from None
    if path.suffix.lower() == ".gz" and start and start != b"\x1f\x8b":
        raise InputError(f"{path}: not a gzip file (it does not start with 1f 8b)", path)


@contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    # utf-8-sig: spreadsheet programs start their CSV exports with a byte order mark. Invalid
    # UTF-8 is replaced, as Spark does when it reads the rows.
    options: dict[str, Any] = {"encoding": "utf-8-sig", "errors": "replace", "newline": ""}
    suffix = path.suffix.lower()
    if suffix in (".snappy", ".zst"):
        raise InputError(
            f"{path}: cannot read the header of a {_file_type(path)}; compress CSV files "
            "with gzip (.gz) or bzip2 (.bz2)",
            path,
        )
    opener: Callable[..., IO[str]] = (
        gzip.open if suffix == ".gz" else bz2.open if suffix == ".bz2" else open
    )
    with opener(path, "rt", **options) as handle:
        yield handle


def _csv_header(path: Path, required: Sequence[str]) -> list[str]:
    """The column names of a CSV file, stripped of spaces and of a UTF-8 byte order mark.

    The header is the first record (RFC 4180: a quoted name may hold a comma or a line break)
    after any empty lines, as Spark reads it. A blank name becomes ``_c<index>`` (Spark's name
    for an unnamed column).

    Raises
    ------
    InputError
        If the file cannot be read, has no header line (a first line naming none of the
        ``required`` columns is data, not a header) or names a column twice.
    """
    _check_opens(path)
    try:
        with _open_text(path) as handle:
            row = next((record for record in csv.reader(handle) if record), None)
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        raise InputError(
            f"{path}: cannot read the CSV header ({_one_line(str(exc))})", path
        ) from None
    names = [name.strip() or f"_c{index}" for index, name in enumerate(row or [])]
    if not set(names) & set(required):
        if row is None:
            detail = "the file is empty"
        elif not "".join(row).strip():
            detail = "the first line is blank"
        else:
            first = ",".join(row)
            detail = f"the first line is {first[:60]!r}" + ("…" if len(first) > 60 else "")
        raise InputError(
            f"{path}: no header line; expected columns {','.join(required)} ({detail})", path
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        listed = ", ".join(map(repr, repeated))
        raise InputError(f"{path}: CSV header names {listed} more than once", path)
    return names


def _parquet_schema_key(path: Path) -> tuple[tuple[str, str], ...]:
    """The columns and types of a Parquet file (footer only), to group compatible files.

    Raises
    ------
    InputError
        If the file is not Parquet, or holds a column of a type Spark cannot read (Spark then
        refuses the whole file, whichever columns are asked for).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_opens(path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(
            f"{path}: not a readable Parquet file ({_one_line(str(exc))})", path
        ) from None
    key = tuple(sorted((f.name, str(f.type)) for f in schema))
    odd = [f"{name!r} of type {type_}" for name, type_ in key if _SPARK_UNREADABLE.search(type_)]
    if odd:
        raise InputError(
            f"{path}: not a readable Parquet file (Spark cannot read column {', '.join(odd)})",
            path,
        )
    return key


#: Arrow types of Parquet columns Spark 4 refuses (TIME, FLOAT16, decimals over 38 digits).
_SPARK_UNREADABLE = re.compile(r"\btime(?:32|64)\[|\bhalffloat\b|\bdecimal256\((?:39|[4-7]\d)\b")
#: Nanosecond times (pandas' default) are read as integers and converted here: Spark has no
#: nanosecond type and refuses them otherwise (PARQUET_TYPE_ILLEGAL).
_NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"


def _read_parquet(spark: SparkSession, names: Sequence[str], *, nanos: bool) -> DataFrame:
    """Read Parquet files of one schema; with ``nanos``, nanosecond times come as longs."""
    reader = spark.read.option("mergeSchema", "true")
    if not nanos:
        return reader.parquet(*names)
    # The setting is read when the schema is resolved, here on the driver: the executors then
    # read the column as the long the plan asks for. It is set only for this call so that
    # other reads in the session keep Spark's behaviour.
    previous = spark.conf.get(_NANOS_AS_LONG, None)
    spark.conf.set(_NANOS_AS_LONG, "true")
    try:
        return reader.parquet(*names)
    finally:
        if previous is None:
            spark.conf.unset(_NANOS_AS_LONG)
        else:
            spark.conf.set(_NANOS_AS_LONG, previous)


def _empty_raw(spark: SparkSession, columns: Sequence[str]) -> DataFrame:
    fields = [T.StructField(name, T.StringType()) for name in (*columns, CORRUPT, "source_file")]
    return spark.createDataFrame([], T.StructType(fields))


_Checked = TypeVar("_Checked")


def _readable(
    files: Sequence[Path],
    check: Callable[[Path], _Checked],
    skip: Collection[Path],
    on_unreadable: Callable[[InputError], None] | None,
) -> list[tuple[Path, _Checked]]:
    """``(file, check(file))`` of the files not skipped whose check passes.

    A failed check (an InputError) is raised, or, with ``on_unreadable``, handed to it and
    the file left out.
    """
    passed = []
    for file in files:
        if file in skip:
            continue
        try:
            passed.append((file, check(file)))
        except InputError as error:
            if on_unreadable is None:
                raise
            on_unreadable(error)
    return passed


def extract_table(
    spark: SparkSession,
    path: Path,
    columns: Sequence[str],
    *,
    required: Sequence[str] | None = None,
    typed: dict[str, T.DataType] | None = None,
    skip: Collection[Path] = (),
    on_unreadable: Callable[[InputError], None] | None = None,
) -> DataFrame:
    """Read every file under ``path`` into one DataFrame of string ``columns``.

    Columns named in ``typed`` keep that type (list columns of the catalog; in CSV files and
    text columns they are JSON arrays such as ``[0.5, 0.25]``, and null when they are not).
    Lines that cannot be parsed keep their raw text in ``_corrupt_record``; ``source_file``
    names the file of each row. A missing column is all null, so its rows fail validation.

    Parameters
    ----------
    required : sequence of str, optional
        The columns of the table that a CSV header names (default: ``columns``); a first line
        naming none of them is not a header.
    skip : collection of Path
        Files to leave out (found unreadable before).
    on_unreadable : callable, optional
        Called with the InputError of each file found unreadable before Spark reads it; the
        file is then left out. Without it, the error is raised.

    Raises
    ------
    InputError
        If a file has an unsupported type, or (without ``on_unreadable``) a file cannot be
        read: it does not open, a CSV file has no header line, a Parquet file is not Parquet.
    """
    typed = typed or {}
    required = tuple(required or columns)
    frames: list[DataFrame] = []
    for fmt, files in list_files(path).items():
        if fmt == "csv":
            by_header: dict[tuple[str, ...], list[str]] = defaultdict(list)
            header_of = partial(_csv_header, required=required)
            for file, names_in_header in _readable(files, header_of, skip, on_unreadable):
                by_header[tuple(names_in_header)].append(str(file))
            for header, names in by_header.items():
                schema = T.StructType(
                    [T.StructField(name, T.StringType()) for name in header]
                    + [T.StructField(CORRUPT, T.StringType())]
                )
                # The schema is these files' own header, so applying it by position is applying
                # it by name (enforceSchema: Spark's own header check would fail on a header
                # with spaces or a byte order mark). RFC 4180, as Python's csv module and every
                # spreadsheet write it: escape='"' reads doubled quotes ("say ""hi"""), and
                # multiLine a quoted line break (a title over two lines); line by line, that
                # row would split into two malformed ones. multiLine reads a file in one task,
                # yet measured faster than line by line split in 2 or 3 tasks on 2 cores (2M
                # plays, 95 MB: 0.8x the time; 8M, 380 MB: 0.77x): only a cluster reading a
                # few huge CSV files loses parallelism. Without column pruning, a line of the
                # wrong length is malformed even when the header has columns this job skips.
                frames.append(
                    spark.read.options(columnPruning="false")
                    .csv(
                        names,
                        header=True,
                        schema=schema,
                        enforceSchema=True,
                        escape='"',
                        mode="PERMISSIVE",
                        columnNameOfCorruptRecord=CORRUPT,
                        multiLine=True,
                    )
                    .withColumn("source_file", F.col("_metadata.file_path"))
                )
        elif fmt == "jsonl":
            names = [str(f) for f, _ in _readable(files, _check_opens, skip, on_unreadable)]
            if not names:
                continue
            # Every column as text, list columns too: a typed read would turn a whole line
            # into a corrupt record when one optional value (an embedding) has another type.
            schema = T.StructType(
                [T.StructField(name, T.StringType()) for name in columns]
                + [T.StructField(CORRUPT, T.StringType())]
            )
            frames.append(
                spark.read.json(
                    names, schema=schema, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT
                ).withColumn("source_file", F.col("_metadata.file_path"))
            )
        else:
            # Files whose column types differ (int32 and int64, or a number and a string)
            # cannot be read as one dataset: Spark refuses to merge their schemas. Each group
            # of files with one schema is read on its own; the columns are cast below.
            by_schema: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
            for file, key in _readable(files, _parquet_schema_key, skip, on_unreadable):
                by_schema[key].append(str(file))
            for key, names in by_schema.items():
                nanos = {name for name, type_ in key if type_.startswith("timestamp[ns")}
                try:
                    frame = _read_parquet(spark, names, nanos=bool(nanos))
                except SPARK_ERRORS as exc:
                    # Spark resolves the schema now and names no file: the files of one schema
                    # fail alike (a type that _SPARK_UNREADABLE does not know).
                    cause = _spark_cause(exc)
                    for name in names:
                        error = InputError(
                            f"{name}: not a readable Parquet file ({cause})", Path(name)
                        )
                        if on_unreadable is None:
                            raise error from None
                        on_unreadable(error)
                    continue
                for name in nanos & set(columns):
                    # Spark reads INT96 times (which Arrow also calls nanoseconds) as times.
                    if isinstance(frame.schema[name].dataType, T.LongType):
                        frame = frame.withColumn(name, _micros_from_nanos(name))
                frames.append(
                    frame.withColumn(CORRUPT, F.lit(None).cast("string")).withColumn(
                        "source_file", F.col("_metadata.file_path")
                    )
                )
    if not frames:
        frames.append(_empty_raw(spark, columns))
    return reduce(DataFrame.unionByName, [_normalise(f, columns, typed) for f in frames])


def _micros_from_nanos(name: str) -> Column:
    """Nanoseconds since the epoch as a timestamp, truncated to microseconds (floor)."""
    return F.expr(f"timestamp_micros((`{name}` - pmod(`{name}`, 1000)) div 1000)")


def _normalise(frame: DataFrame, columns: Sequence[str], typed: dict[str, T.DataType]) -> DataFrame:
    """``columns`` as text (or their ``typed`` type), ``_corrupt_record``, ``source_file``.

    Text is made valid UTF-8 (U+FFFD for invalid bytes): a JSON line that is not UTF-8 keeps
    its raw bytes as the corrupt record, and a Parquet string column may hold any bytes; the
    Parquet written from them would then be unreadable by pyarrow and pandas.
    """
    present = set(frame.columns)
    selected = []
    for name in columns:
        wanted = typed.get(name, T.StringType())
        if name not in present:
            selected.append(F.lit(None).cast(wanted).alias(name))
        elif name not in typed:
            selected.append(F.make_valid_utf8(F.col(name).cast(wanted)).alias(name))
        elif frame.schema[name].dataType == wanted:
            selected.append(F.col(name))
        elif isinstance(frame.schema[name].dataType, T.StringType):
            # A list as JSON text (CSV, JSON Lines); anything else is no value.
            selected.append(F.from_json(F.col(name), wanted.simpleString()).alias(name))
        else:
            # A list column of another element type (e.g. double): cast what can be cast.
            selected.append(F.expr(f"try_cast(`{name}` AS {wanted.simpleString()})").alias(name))
    corrupt = F.make_valid_utf8(F.col(CORRUPT)).alias(CORRUPT)
    return frame.select(*selected, corrupt, F.col("source_file"))


def find_catalog_file(data_dir: Path, name: str, *, required: bool = True) -> Path | None:
    """``catalog/<name>.<ext>`` or the folder ``catalog/<name>/``; exactly one must exist."""
    catalog = data_dir / "catalog"

    def is_table(path: Path) -> bool:
        if path.is_dir():
            return path.name == name
        return _format_of(path) is not None and path.name.lower().split(".")[0] == name

    matches = sorted(filter(is_table, catalog.glob(f"{name}*"))) if catalog.is_dir() else []
    if not matches:
        if required:
            raise InputError(f"{catalog}/{name}.{{parquet,csv,jsonl}} not found")
        return None
    if len(matches) > 1:
        raise InputError(f"several catalog files for {name!r}: {', '.join(map(str, matches))}")
    return matches[0]


# -------------------------------------------------------------------------------- transform


def _blank(column: Column) -> Column:
    return column.isNull() | (F.trim(column) == "")


#: ID_PATTERN ends in ``$``, which in a Java (and Python) regex also matches before a final
#: line terminator: "u1\n" would pass. ``\z`` is the very end of the text.
_ID_REGEX = ID_PATTERN.removesuffix("$") + r"\z"


def _bad_id(column: Column) -> Column:
    return ~column.rlike(_ID_REGEX)


def _integer(name: str, sql_type: str) -> Column:
    """The text column ``name`` as a whole number: ``1000``, `` 1000 ``, ``1000.0`` and ``1e3``
    are 1000; ``12.5``, ``NaN``, ``Infinity``, text and values out of range are null.

    Numbers reach this as text, and a whole number may come written as a float: pandas stores
    an integer column with one missing value as float64, and JSON does not tell 1000 from
    1000.0.
    """
    text = f"trim(`{name}`)"
    number = f"try_cast({text} AS DOUBLE)"
    return F.expr(
        f"coalesce(try_cast({text} AS {sql_type}), "
        f"if({number} % 1 = 0, try_cast({number} AS {sql_type}), NULL))"
    )


def _quarantine(frame: DataFrame, kind: str, fields: Sequence[str]) -> DataFrame:
    record = F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(n) for n in fields])))
    user = F.col("user_id") if "user_id" in frame.columns else F.lit(None).cast("string")
    track = F.col("track_id") if "track_id" in frame.columns else F.lit(None).cast("string")
    return frame.select(
        F.lit(kind).alias("kind"),
        F.col("reason"),
        F.col("source_file"),
        user.cast("string").alias("user_id"),
        track.cast("string").alias("track_id"),
        record.alias("record"),
    )


def _split(frame: DataFrame, reason: Column) -> tuple[DataFrame, DataFrame]:
    tagged = frame.withColumn("reason", reason)
    return tagged.where(F.col("reason").isNull()).drop("reason"), tagged.where(
        F.col("reason").isNotNull()
    )


def _dedupe_by_id(frame: DataFrame, key: str, order: Sequence[str]) -> tuple[DataFrame, DataFrame]:
    """Keep one row per ``key`` (the first by ``order``); the others are ``duplicate_id``."""
    rank = F.row_number().over(
        Window.partitionBy(key).orderBy(*[F.col(c).asc_nulls_last() for c in order])
    )
    ranked = frame.withColumn("_rank", rank)
    kept = ranked.where(F.col("_rank") == 1).drop("_rank")
    extra = (
        ranked.where(F.col("_rank") > 1)
        .drop("_rank")
        .withColumn("reason", F.lit(R.DUPLICATE_ID.value))
    )
    return kept, extra


def transform_artists(raw: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Validated artists (``artist_id``, ``name``) and quarantined rows."""
    artist_id, name = F.trim(F.col("artist_id")), F.col("name")
    reason = (
        F.when(F.col(CORRUPT).isNotNull(), R.MALFORMED_RECORD.value)
        .when(_blank(artist_id), R.MISSING_ARTIST_ID.value)
        .when(_bad_id(artist_id), R.INVALID_ARTIST_ID.value)
        .when(_blank(name), R.MISSING_NAME.value)
    )
    valid, bad = _split(raw.withColumn("artist_id", artist_id), reason)
    valid, duplicates = _dedupe_by_id(valid, "artist_id", ["name", "source_file"])
    quarantine = _quarantine(bad.unionByName(duplicates), "artists", ARTIST_COLUMNS)
    return valid.select("artist_id", "name"), quarantine


def transform_tracks(raw: DataFrame, artists: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Validated tracks whose artist exists, and quarantined rows."""
    track_id, artist_id = F.trim(F.col("track_id")), F.trim(F.col("artist_id"))
    duration = _integer("duration_ms", "BIGINT")
    known_artists = artists.select("artist_id", F.lit(True).alias("_artist_known"))
    frame = (
        raw.withColumn("track_id", track_id)
        .withColumn("artist_id", artist_id)
        .withColumn("_duration", duration)
        .join(known_artists, "artist_id", "left")
    )
    reason = (
        F.when(F.col(CORRUPT).isNotNull(), R.MALFORMED_RECORD.value)
        .when(_blank(F.col("track_id")), R.MISSING_TRACK_ID.value)
        .when(_bad_id(F.col("track_id")), R.INVALID_TRACK_ID.value)
        .when(_blank(F.col("title")), R.MISSING_TITLE.value)
        .when(_blank(F.col("artist_id")), R.MISSING_ARTIST_ID.value)
        .when(
            F.col("_duration").isNull()
            | (F.col("_duration") <= 0)
            | (F.col("_duration") > MAX_MS_PLAYED),
            R.INVALID_DURATION.value,
        )
        .when(F.col("_artist_known").isNull(), R.UNKNOWN_ARTIST.value)
    )
    valid, bad = _split(frame, reason)
    valid, duplicates = _dedupe_by_id(valid, "track_id", ["title", "artist_id", "source_file"])
    columns = [*TRACK_COLUMNS, "released_at", "embedding", "tags"]
    quarantine = _quarantine(
        bad.unionByName(duplicates).withColumn("duration_ms", F.col("duration_ms").cast("string")),
        "tracks",
        TRACK_COLUMNS,
    )
    valid = valid.withColumn("duration_ms", F.col("_duration")).withColumn(
        "released_at", F.expr("try_cast(released_at AS DATE)")
    )
    return valid.select(*columns), quarantine


def transform_users(raw: DataFrame) -> tuple[DataFrame, DataFrame]:
    user_id = F.trim(F.col("user_id"))
    reason = (
        F.when(F.col(CORRUPT).isNotNull(), R.MALFORMED_RECORD.value)
        .when(_blank(user_id), R.MISSING_USER_ID.value)
        .when(_bad_id(user_id), R.INVALID_USER_ID.value)
    )
    valid, bad = _split(raw.withColumn("user_id", user_id), reason)
    valid, duplicates = _dedupe_by_id(valid, "user_id", ["display_name", "source_file"])
    quarantine = _quarantine(bad.unionByName(duplicates), "users", ("user_id", "display_name"))
    return valid.select("user_id", "display_name"), quarantine


def validate_events(
    raw: DataFrame,
    kind: str,
    *,
    tracks: DataFrame,
    users: DataFrame | None,
    cutoff: dt.datetime,
    earliest: dt.datetime = EARLIEST_EVENT,
) -> tuple[DataFrame, DataFrame]:
    """Split raw ``plays`` or ``thumbs`` into valid typed rows and quarantined rows.

    Valid events are stamped at or after ``earliest`` and before ``cutoff``.

    Valid plays have ``user_id, track_id, event_at, ms_played, duration_ms``; valid thumbs
    ``user_id, track_id, event_at, value``. Quarantined rows carry the first failing
    ``reason``: structure and missing fields first, then malformed values, ranges, time
    limits, and last the catalog look-ups (unknown track, then unknown user).
    """
    if kind == "plays":
        time_column, amount_column, fields = "played_at", "ms_played", PLAY_COLUMNS
        missing_amount, invalid_amount = R.MISSING_MS_PLAYED, R.INVALID_MS_PLAYED
        amount_type = "BIGINT"
    elif kind == "thumbs":
        time_column, amount_column, fields = "rated_at", "value", THUMB_COLUMNS
        missing_amount, invalid_amount = R.MISSING_VALUE, R.INVALID_THUMB_VALUE
        amount_type = "INT"
    else:
        raise ValueError(f"kind must be 'plays' or 'thumbs', got {kind!r}")
    # The catalog is small next to the events: broadcasting it avoids shuffling every event.
    catalog = F.broadcast(
        tracks.select("track_id", "duration_ms", F.lit(True).alias("_track_known"))
    )
    frame = (
        raw.withColumn("user_id", F.trim(F.col("user_id")))
        .withColumn("track_id", F.trim(F.col("track_id")))
        .withColumn("event_at", F.expr(f"try_cast(trim(`{time_column}`) AS TIMESTAMP)"))
        .withColumn("_amount", _integer(amount_column, amount_type))
        .join(catalog, "track_id", "left")
    )
    if users is not None:
        frame = frame.join(
            users.select("user_id", F.lit(True).alias("_user_known")), "user_id", "left"
        )
        unknown_user = F.col("_user_known").isNull()
    else:
        unknown_user = F.lit(False)
    # Aware datetimes: PySpark converts a naive one with the Python process's local time
    # zone, which would move both limits by the host's UTC offset.
    cutoff_literal = F.lit(cutoff.astimezone(dt.UTC)).cast("timestamp")
    earliest_literal = F.lit(earliest.astimezone(dt.UTC)).cast("timestamp")
    amount = F.col("_amount")
    if kind == "plays":
        amount_out_of_range = (amount < 0) | (amount > MAX_MS_PLAYED)
        range_reason = R.MS_PLAYED_OUT_OF_RANGE.value
    else:
        amount_out_of_range = ~amount.isin(1, -1)
        range_reason = R.INVALID_THUMB_VALUE.value
    reason = (
        F.when(F.col(CORRUPT).isNotNull(), R.MALFORMED_RECORD.value)
        .when(_blank(F.col("user_id")), R.MISSING_USER_ID.value)
        .when(_blank(F.col("track_id")), R.MISSING_TRACK_ID.value)
        .when(_blank(F.col(time_column)), R.MISSING_TIMESTAMP.value)
        .when(_blank(F.col(amount_column)), missing_amount.value)
        .when(_bad_id(F.col("user_id")), R.INVALID_USER_ID.value)
        .when(_bad_id(F.col("track_id")), R.INVALID_TRACK_ID.value)
        .when(F.col("event_at").isNull(), R.INVALID_TIMESTAMP.value)
        .when(amount.isNull(), invalid_amount.value)
        .when(amount_out_of_range, range_reason)
        .when(F.col("event_at") >= cutoff_literal, R.TIMESTAMP_AFTER_CUTOFF.value)
        .when(F.col("event_at") < earliest_literal, R.TIMESTAMP_BEFORE_EARLIEST.value)
        .when(F.col("_track_known").isNull(), R.UNKNOWN_TRACK.value)
        .when(unknown_user, R.UNKNOWN_USER.value)
    )
    valid, bad = _split(frame, reason)
    quarantine = _quarantine(bad, kind, fields)
    if kind == "plays":
        valid = valid.select(
            "user_id", "track_id", "event_at", amount.alias("ms_played"), "duration_ms"
        )
    else:
        valid = valid.select("user_id", "track_id", "event_at", amount.alias("value"))
    return valid, quarantine


def transform_interactions(
    plays: DataFrame, thumbs: DataFrame, params: AggregationParams
) -> DataFrame:
    """One row per (listener, track) with counts, latest thumb, the first and last event time
    and confidence (see the module doc)."""
    completed = F.col("ms_played") >= F.least(F.lit(COMPLETED_MS), F.col("duration_ms") / 2)
    played = plays.groupBy("user_id", "track_id").agg(
        F.count(F.lit(1)).alias("plays"),
        F.sum(completed.cast("int")).alias("completed"),
        F.min("event_at").alias("first_played_at"),
        F.max("event_at").alias("last_played_at"),
    )
    # The latest thumb wins; on a tie in time the larger value does, so the result is stable.
    rated = (
        thumbs.groupBy("user_id", "track_id")
        .agg(
            F.max(F.struct("event_at", "value")).alias("_latest"),
            F.min("event_at").alias("first_rated_at"),
        )
        .select(
            "user_id",
            "track_id",
            F.col("_latest.value").alias("thumb"),
            F.col("_latest.event_at").alias("last_rated_at"),
            "first_rated_at",
        )
    )
    joined = played.join(rated, ["user_id", "track_id"], "full")
    plays_n = F.coalesce(F.col("plays"), F.lit(0)).cast("int")
    completed_n = F.coalesce(F.col("completed"), F.lit(0)).cast("int")
    thumb = F.coalesce(F.col("thumb"), F.lit(0)).cast("int")
    skips = plays_n - completed_n
    positive = F.log1p(completed_n + F.lit(params.skip_weight) * skips) + F.when(
        thumb == 1, F.lit(params.thumb_up_boost)
    ).otherwise(F.lit(0.0))
    confidence = F.when(thumb == -1, F.lit(-params.thumb_down_confidence)).otherwise(positive)
    return joined.select(
        "user_id",
        "track_id",
        plays_n.alias("plays"),
        completed_n.alias("completed"),
        skips.alias("skips"),
        thumb.alias("thumb"),
        F.least("first_played_at", "first_rated_at").alias("first_event_at"),
        F.greatest("last_played_at", "last_rated_at").alias("last_event_at"),
        confidence.cast("double").alias("confidence"),
    )


# ------------------------------------------------------------------------------------ load


def load_parquet(frame: DataFrame, path: Path) -> None:
    frame.write.mode("overwrite").parquet(str(path))


# ------------------------------------------------------------------------------------- run


def run_aggregation(
    spark: SparkSession,
    data_dir: Path,
    paths: AggregationPaths,
    params: AggregationParams,
    *,
    extra_thumbs: Path | None = None,
) -> AggregationSummary:
    """Validate and aggregate ``data_dir`` into ``paths``; returns the counts.

    ``extra_thumbs`` is a folder of further thumb event files in the contract's format
    (the web app's feedback, exported by :mod:`jobs.feedback`); they are validated,
    counted and quarantined like the data directory's own.

    Raises
    ------
    InputError
        If the data directory lacks the catalog or the plays folder, or holds files of an
        unsupported type, or a file cannot be read (an events file only with
        ``params.unreadable_files == "fail"``). The message is one line naming the file.
    """
    try:
        return _aggregate(spark, data_dir, paths, params, extra_thumbs)
    except SPARK_ERRORS as exc:
        error = _read_failure(exc)
        if error is None:
            raise
        # The Java stack trace is for debugging; the caller shows the one line.
        log.debug("Spark failed reading %s", error.path, exc_info=True)
        raise error from None


def _aggregate(
    spark: SparkSession,
    data_dir: Path,
    paths: AggregationPaths,
    params: AggregationParams,
    extra_thumbs: Path | None,
) -> AggregationSummary:
    started = time.perf_counter()
    # Absolute and normalised, as Spark names the files it fails to read.
    data_dir = Path(os.path.abspath(data_dir))
    if not data_dir.is_dir():
        raise InputError(f"data directory {data_dir} does not exist")
    plays_dir = data_dir / "events" / "plays"
    if not plays_dir.exists():
        raise InputError(f"{plays_dir} not found: a data directory needs events/plays/")
    thumbs_dir = data_dir / "events" / "thumbs"
    summary = AggregationSummary(cutoff=params.cutoff.isoformat())
    cached: list[DataFrame] = []
    try:
        artists_raw = extract_table(spark, _required(data_dir, "artists"), ARTIST_COLUMNS)
        artists, artists_bad = transform_artists(artists_raw)
        artists = artists.cache()
        tracks_raw = extract_table(
            spark,
            _required(data_dir, "tracks"),
            (*TRACK_COLUMNS, "released_at", "embedding", "tags"),
            required=TRACK_COLUMNS,
            typed={"embedding": T.ArrayType(T.FloatType()), "tags": T.ArrayType(T.StringType())},
        )
        tracks, tracks_bad = transform_tracks(tracks_raw, artists)
        tracks = tracks.cache()
        cached += [artists, tracks]
        users_file = find_catalog_file(data_dir, "users", required=False)
        users: DataFrame | None = None
        quarantine_parts = [artists_bad, tracks_bad]
        if users_file is not None:
            users_raw = extract_table(
                spark, users_file, (*USER_COLUMNS, "display_name"), required=USER_COLUMNS
            )
            users, users_bad = transform_users(users_raw)
            users = users.cache()
            cached.append(users)
            quarantine_parts.append(users_bad)

        valid: dict[str, DataFrame] = {}
        valid_counts: dict[str, int] = {}
        unreadable: list[tuple[str, InputError]] = []
        thumb_folders = [thumbs_dir]
        if extra_thumbs is not None:
            thumb_folders.append(Path(os.path.abspath(extra_thumbs)))
        for kind, folders, columns in (
            ("plays", [plays_dir], PLAY_COLUMNS),
            ("thumbs", thumb_folders, THUMB_COLUMNS),
        ):
            # Parsed once: the valid and the quarantined branch both read this cache.
            raw, summary.events_read[kind], left_out = _extract_events(
                spark, folders, columns, params.unreadable_files
            )
            cached.append(raw)
            unreadable += [(kind, error) for error in left_out]
            good, bad = validate_events(
                raw,
                kind,
                tracks=tracks,
                users=users,
                cutoff=params.cutoff,
                earliest=params.earliest_event_at,
            )
            deduped = good.dropDuplicates().persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(deduped)
            valid_counts[kind] = _count(good)
            summary.duplicates_dropped[kind] = valid_counts[kind] - _count(deduped)
            valid[kind] = deduped
            quarantine_parts.append(bad)
        if unreadable:
            quarantine_parts.append(_file_quarantine(spark, [e for _, e in unreadable]))
            summary.files_quarantined = [
                {"path": str(error.path), "kind": kind, "error": str(error)}
                for kind, error in unreadable
            ]

        quarantine = reduce(DataFrame.unionByName, quarantine_parts)
        load_parquet(quarantine.coalesce(1), paths.quarantine)
        written_quarantine = spark.read.parquet(str(paths.quarantine))
        for row in written_quarantine.groupBy("kind", "reason").count().collect():
            summary.quarantined.setdefault(row["kind"], {})[row["reason"]] = int(row["count"])
        for kind, read in summary.events_read.items():
            accounted = valid_counts[kind] + sum(summary.quarantined.get(kind, {}).values())
            if accounted != read:  # every row is either valid or quarantined, never lost
                raise RuntimeError(f"{kind}: read {read} rows but accounted for {accounted}")

        interactions = transform_interactions(valid["plays"], valid["thumbs"], params)
        load_parquet(interactions, paths.interactions)
        interactions = spark.read.parquet(str(paths.interactions))
        summary.interactions = _count(interactions)
        if users is None:
            users = (
                interactions.select("user_id")
                .distinct()
                .withColumn("display_name", F.lit(None).cast("string"))
            )
        for frame, path in ((users, paths.users), (tracks, paths.tracks), (artists, paths.artists)):
            load_parquet(frame, path)
        summary.users = _count(users)
        summary.tracks = _count(tracks)
        summary.artists = _count(artists)
    finally:
        # Also when a file fails: a long-lived session (the worker's) must not keep the cache.
        for frame in cached:
            frame.unpersist()
    summary.seconds = round(time.perf_counter() - started, 3)
    # Written last and renamed into place: a folder with a summary is a complete aggregation.
    partial = paths.summary.with_name(paths.summary.name + ".partial")
    partial.write_text(json.dumps(asdict(summary), indent=2, sort_keys=True))
    partial.replace(paths.summary)
    log.info(
        "aggregated %d interactions of %d listeners; quarantined %d rows and %d unreadable files",
        summary.interactions,
        summary.users,
        summary.quarantined_total - len(summary.files_quarantined),
        len(summary.files_quarantined),
    )
    return summary


def _extract_events(
    spark: SparkSession, folders: Sequence[Path], columns: Sequence[str], unreadable_files: str
) -> tuple[DataFrame, int, list[InputError]]:
    """The events under ``folders``, persisted, their count and the files left out.

    With ``unreadable_files == "quarantine"``, a file found unreadable (before Spark reads it,
    or when Spark fails on it) is left out and the rest read again; each round leaves out one
    more file, so this ends. Otherwise the first unreadable file raises.
    """
    quarantine = unreadable_files == "quarantine"
    left_out: dict[Path, InputError] = {}

    def leave_out(error: InputError) -> None:
        assert error.path is not None, error
        log.warning("%s; the file is quarantined", error)
        left_out[error.path] = error

    while True:
        parts = [
            extract_table(
                spark,
                folder,
                columns,
                skip=left_out.keys(),
                on_unreadable=leave_out if quarantine else None,
            )
            for folder in folders
            if folder.exists()
        ]
        raw = reduce(DataFrame.unionByName, parts) if parts else _empty_raw(spark, columns)
        raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            return raw, _count(raw), list(left_out.values())
        except SPARK_ERRORS as exc:
            raw.unpersist()
            error = _read_failure(exc)
            if not quarantine or error is None or error.path in left_out:
                raise
            leave_out(error)


def _read_failure(exc: BaseException) -> InputError | None:
    """The one-line InputError naming the file Spark failed to read, if ``exc`` is that.

    Spark reports a file it cannot read as FAILED_READ_FILE with the file's URI as the
    ``path`` parameter; the cause (``EOFException: Unexpected end of input stream``) is the
    deepest Java exception.
    """
    chain = _java_chain(exc)
    uri = None
    for throwable in chain:
        try:
            parameters = throwable.getMessageParameters()
        except Exception:  # py4j: not a SparkThrowable
            continue
        if parameters is not None and parameters.containsKey("path"):
            uri = str(parameters.get("path"))
            break
    if uri is None:
        return None
    path = Path(unquote(urlparse(uri).path) if uri.startswith("file:") else uri)
    return InputError(f"{path}: not a readable {_file_type(path)} ({_spark_cause(exc)})", path)


def _java_chain(exc: BaseException) -> list[Any]:
    """The Java exception behind ``exc`` and its causes (py4j proxies), outermost first."""
    chain: list[Any] = []
    throwable = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    while throwable is not None and len(chain) < 20:
        chain.append(throwable)
        throwable = throwable.getCause()
    return chain


def _spark_cause(exc: BaseException) -> str:
    """``EOFException: Unexpected end of input stream``: the deepest cause, on one line."""
    chain = _java_chain(exc)
    if not chain:
        return _one_line(str(exc).strip().split("\n")[0])
    root = chain[-1]
    message = root.getMessage()
    cause = root.getClass().getSimpleName() + (f": {message}" if message else "")
    return _one_line(re.sub(r"\s*SQLSTATE: \w+\.?", "", cause))


def _file_quarantine(spark: SparkSession, errors: Sequence[InputError]) -> DataFrame:
    """One quarantine row (kind ``file``) per unreadable file, its error as the record."""
    schema = T.StructType([T.StructField(name, T.StringType()) for name in QUARANTINE_COLUMNS])
    rows = [
        (FILE_KIND, R.UNREADABLE_FILE.value, _file_uri(error.path), None, None, str(error))
        for error in errors
    ]
    return spark.createDataFrame(rows, schema)


def _file_uri(path: Path | None) -> str | None:
    # Spark's form of _metadata.file_path (file:/tmp/x.csv), which the other rows carry.
    return None if path is None else "file:" + path.absolute().as_uri().removeprefix("file://")


def _required(data_dir: Path, name: str) -> Path:
    path = find_catalog_file(data_dir, name)
    assert path is not None
    return path


def _count(frame: DataFrame) -> int:
    return int(frame.count())


def _utc_instant(text: str) -> dt.datetime:
    """An ISO date or time; without an offset it is UTC (as event times are)."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or time") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def parse_arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, AggregationParams]:
    """The spark-submit arguments and the AggregationParams they give."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data directory (contract layout)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (local or mounted)")
    parser.add_argument("--quarantine", type=Path, required=True, help="quarantine dataset path")
    parser.add_argument(
        "--cutoff", type=_utc_instant, required=True, help="ISO time; only earlier events count"
    )
    parser.add_argument("--skip-weight", type=float, default=0.25)
    parser.add_argument("--thumb-up-boost", type=float, default=2.0)
    parser.add_argument("--thumb-down-confidence", type=float, default=2.0)
    parser.add_argument(
        "--earliest-event-at",
        type=_utc_instant,
        default=EARLIEST_EVENT,
        help="ISO time; earlier events are quarantined (default: 2000-01-01T00:00:00Z)",
    )
    parser.add_argument(
        "--unreadable-files",
        choices=UNREADABLE_MODES,
        default="fail",
        help="a file that cannot be read: fail the run naming it (default), or quarantine "
        "the whole file (events files) and go on",
    )
    parser.add_argument(
        "--feedback-thumbs", type=Path, default=None, help="folder of the web app's thumbs"
    )
    args = parser.parse_args(argv)
    params = AggregationParams(
        cutoff=args.cutoff,
        skip_weight=args.skip_weight,
        thumb_up_boost=args.thumb_up_boost,
        thumb_down_confidence=args.thumb_down_confidence,
        earliest_event_at=args.earliest_event_at,
        unreadable_files=args.unreadable_files,
    )
    return args, params


def main(argv: Sequence[str] | None = None) -> int:
    """``spark-submit jobs/aggregate.py --data DIR --out DIR --quarantine DIR --cutoff ISO``."""
    args, params = parse_arguments(argv)
    from jobs.spark import get_spark

    spark = get_spark(None, app_name="cratedigger-aggregate")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = run_aggregation(
        spark,
        args.data,
        AggregationPaths(args.out, args.quarantine),
        params,
        extra_thumbs=args.feedback_thumbs,
    )
    print(json.dumps(asdict(summary)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__: list[Any] = [
    "FILE_KIND",
    "AggregationParams",
    "AggregationPaths",
    "AggregationSummary",
    "InputError",
    "extract_table",
    "list_files",
    "parse_arguments",
    "run_aggregation",
    "transform_artists",
    "transform_interactions",
    "transform_tracks",
    "transform_users",
    "validate_events",
]

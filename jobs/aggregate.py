"""PySpark aggregation: raw events and catalog -> validated catalog + one row per (listener, track).

``extract_*`` read files, ``validate_*`` and ``transform_*`` are pure DataFrame -> DataFrame
functions (tested on small frames), ``load_*`` write, and :func:`run_aggregation` wires them.
The tables, their validation rules and the confidence formula are the data contract's
(:mod:`recsys.contract`); this module runs them on Spark.

:func:`main` is the ``spark-submit`` entry point; it sets no master, so the same file runs on
a laptop (``cratedigger aggregate``) and on a cluster (``spark-submit jobs/aggregate.py ...``),
with the defaults of the settings (``CRATEDIGGER_*``) in both.

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
import shutil
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from functools import partial, reduce
from pathlib import Path
from typing import IO, Any, TypeVar, assert_never
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_type

from recsys.contract import (
    ARTISTS,
    COMPLETED_MS,
    CONFIDENCE_SCALES,
    DECAY_FLOOR,
    EARLIEST_EVENT,
    EVENT_FORMATS,
    ID_COLUMNS,
    ID_PATTERN,
    TABLES,
    TRACKS,
    USERS,
    Check,
    ConfidenceParams,
    Rule,
    TableSpec,
    text_format_of,
)
from recsys.contract import QuarantineReason as R
from recsys.settings import ENV_PREFIX, ConfigError, Settings, load_settings

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


_CONFIDENCE = ConfidenceParams()


@dataclass(frozen=True)
class AggregationParams:
    """What one aggregation counts.

    Attributes
    ----------
    cutoff : datetime.datetime
        Only events strictly before this instant count (timezone-aware).
    skip_weight, thumb_up_boost, thumb_down_confidence, confidence_scale, half_life_days
        The confidence formula's weights: :attr:`confidence`, defaults and ranges of
        :class:`recsys.contract.ConfidenceParams` (a pair's age runs to ``cutoff``).
    earliest_event_at : datetime.datetime
        Events before this instant are quarantined as ``timestamp_before_earliest``.
    unreadable_files : str
        ``"fail"``: a file that cannot be read raises :class:`InputError`; ``"quarantine"``:
        an unreadable events file becomes one quarantine row of kind ``file`` and the run goes
        on without it. Catalog files are required reading either way.
    """

    cutoff: dt.datetime
    skip_weight: float = _CONFIDENCE.skip_weight
    thumb_up_boost: float = _CONFIDENCE.thumb_up_boost
    thumb_down_confidence: float = _CONFIDENCE.thumb_down_confidence
    confidence_scale: str = _CONFIDENCE.confidence_scale
    half_life_days: float = _CONFIDENCE.half_life_days
    earliest_event_at: dt.datetime = EARLIEST_EVENT
    unreadable_files: str = "fail"

    def __post_init__(self) -> None:
        _ = self.confidence  # ConfidenceParams raises ValueError naming a weight out of range
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

    @property
    def confidence(self) -> ConfidenceParams:
        return ConfidenceParams.of(self)

    @classmethod
    def from_settings(
        cls, settings: Settings, cutoff: dt.datetime, **overrides: Any
    ) -> AggregationParams:
        """The params for the run of ``cutoff``: every other field is the setting of its name
        (``CRATEDIGGER_*``), or its value in ``overrides``."""
        names = [f.name for f in fields(cls) if f.name != "cutoff"]
        return cls(cutoff, **({name: getattr(settings, name) for name in names} | overrides))


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

    @property
    def staged(self) -> Path:
        """The validated events while the aggregation runs (removed when it ends)."""
        return self.root / "_staged"


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


_COMPRESSION_NAMES = {".gz": "gzip", ".bz2": "bzip2", ".snappy": "Snappy", ".zst": "Zstandard"}
_FORMAT_NAMES = {"csv": "CSV", "jsonl": "JSON Lines", "parquet": "Parquet"}
_FORMATS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in _COMPRESSION_NAMES:
        name = name.removesuffix(suffix)
    return next((fmt for suffix, fmt in _FORMATS.items() if name.endswith(suffix)), None)


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
    uris = [_spark_uri(name) for name in names]
    if not nanos:
        return reader.parquet(*uris)
    # The setting is read when the schema is resolved, here on the driver: the executors then
    # read the column as the long the plan asks for. It is set only for this call so that
    # other reads in the session keep Spark's behaviour.
    previous = spark.conf.get(_NANOS_AS_LONG, None)
    spark.conf.set(_NANOS_AS_LONG, "true")
    try:
        return reader.parquet(*uris)
    finally:
        if previous is None:
            spark.conf.unset(_NANOS_AS_LONG)
        else:
            spark.conf.set(_NANOS_AS_LONG, previous)


def _text_schema(*names: str) -> T.StructType:
    return T.StructType([T.StructField(name, T.StringType()) for name in names])


def _empty_raw(
    spark: SparkSession, columns: Sequence[str], typed: Mapping[str, T.DataType] | None = None
) -> DataFrame:
    """No rows, in the form of :func:`extract_table`."""
    fields = [T.StructField(name, (typed or {}).get(name, T.StringType())) for name in columns]
    schema = T.StructType(fields + _text_schema(CORRUPT, "source_file").fields)
    return spark.createDataFrame([], schema)


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
    native: Mapping[str, T.DataType] | None = None,
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
    native : mapping of str to DataType, optional
        Columns that Parquet files hold in this type (or, for a whole number, in any
        integer type) keep the type they are read in instead of becoming text, so that the
        rules need not parse them back; where the files' types differ, ``bigint`` when all
        are integers, else text (a CSV file beside them).
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
                csv_files = spark.read.options(columnPruning="false").csv(
                    [_spark_uri(name) for name in names],
                    header=True,
                    schema=_text_schema(*header, CORRUPT),
                    enforceSchema=True,
                    escape='"',
                    mode="PERMISSIVE",
                    columnNameOfCorruptRecord=CORRUPT,
                    multiLine=True,
                )
                frames.append(_normalise(csv_files, columns, typed))
        elif fmt == "jsonl":
            names = [str(f) for f, _ in _readable(files, _check_opens, skip, on_unreadable)]
            if not names:
                continue
            # Every column as text, list columns too: a typed read would turn a whole line
            # into a corrupt record when one optional value (an embedding) has another type.
            schema = _text_schema(*columns, CORRUPT)
            json_files = spark.read.json(
                [_spark_uri(name) for name in names],
                schema=schema,
                mode="PERMISSIVE",
                columnNameOfCorruptRecord=CORRUPT,
            )
            frames.append(_normalise(json_files, columns, typed))
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
                frames.append(_normalise(frame, columns, typed, native or {}, corrupt=False))
    if not frames:
        return _empty_raw(spark, columns, typed)
    for name in native or {}:
        types = {frame.schema[name].dataType for frame in frames}
        if len(types) > 1:
            common = "bigint" if all(isinstance(t, _INTEGRAL) for t in types) else "string"
            frames = [frame.withColumn(name, F.col(name).cast(common)) for frame in frames]
    return reduce(DataFrame.unionByName, frames)


def _micros_from_nanos(name: str) -> Column:
    """Nanoseconds since the epoch as a timestamp, truncated to microseconds (floor)."""
    return F.expr(f"timestamp_micros((`{name}` - pmod(`{name}`, 1000)) div 1000)")


def _normalise(
    frame: DataFrame,
    columns: Sequence[str],
    typed: dict[str, T.DataType],
    native: Mapping[str, T.DataType] | None = None,
    *,
    corrupt: bool = True,
) -> DataFrame:
    """``columns`` as text (or their ``typed`` type), ``_corrupt_record`` (null without
    ``corrupt``: Parquet has none, and a column of that name is not Spark's) and
    ``source_file``, the file of each row. A column of ``native`` (see :func:`extract_table`)
    whose type is that one's keeps it.

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
        elif _native(frame.schema[name].dataType, (native or {}).get(name)):
            selected.append(F.col(name))
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
    record = F.make_valid_utf8(F.col(CORRUPT)) if corrupt else F.lit(None).cast("string")
    return frame.select(
        *selected, record.alias(CORRUPT), F.col("_metadata.file_path").alias("source_file")
    )


_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def _native(read: T.DataType, native: T.DataType | None) -> bool:
    """Whether a column read as ``read`` keeps its type (:func:`extract_table`): it is the
    ``native`` type, or both are integer types (the rules then cast it, and a value out
    of the contract type's range is unparsable, as its text would be)."""
    if native is None:
        return False
    return read == native or (isinstance(read, _INTEGRAL) and isinstance(native, _INTEGRAL))


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


def _parsed(field: pa.Field) -> Column | None:
    """The text column ``field`` as its contract type, null where it is not a value of it;
    None for text and list columns, which are kept as read, except text of a format
    (:data:`recsys.contract.TEXT_FORMATS`): normalised, and null where it is not of it."""
    if (text_format := text_format_of(field)) is not None:
        value = F.expr(text_format.sql(field.name))
        return F.when(value.rlike(f"^(?:{text_format.pattern})$"), value)
    if pa.types.is_string(field.type) or pa.types.is_list(field.type):
        return None
    sql_type = from_arrow_type(field.type).simpleString().upper()
    if pa.types.is_integer(field.type):
        return _integer(field.name, sql_type)
    return F.expr(f"try_cast(trim(`{field.name}`) AS {sql_type})")


def _instant(moment: dt.datetime | None, name: str) -> Column:
    if moment is None:
        raise ValueError(f"{name} is required by the rules of an events table")
    # Aware datetimes: PySpark converts a naive one with the Python process's local time
    # zone, which would move the limit by the host's UTC offset.
    return F.lit(moment.astimezone(dt.UTC)).cast("timestamp")


def _record(fields: Sequence[str]) -> Column:
    """A quarantined row's record: the raw line of a malformed one, else ``fields`` as a JSON
    object of text (a column read typed, as Spark writes it as text)."""
    values = [F.col(name).cast("string").alias(name) for name in fields]
    return F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*values)))


def _quarantine(frame: DataFrame, kind: str, fields: Sequence[str]) -> DataFrame:
    """The :data:`QUARANTINE_COLUMNS` of ``frame``'s rows; the record holds ``fields``."""
    record = _record(fields)
    ids = [
        (F.col(name) if name in frame.columns else F.lit(None)).cast("string").alias(name)
        for name in ("user_id", "track_id")
    ]
    return frame.select(
        F.lit(kind).alias("kind"), "reason", "source_file", *ids, record.alias("record")
    )


def validate_table(
    raw: DataFrame,
    table: TableSpec,
    known: Mapping[str, DataFrame | None],
    *,
    unique: bool = False,
    cutoff: dt.datetime | None = None,
    earliest: dt.datetime | None = None,
) -> tuple[DataFrame, DataFrame]:
    """Split raw rows by ``table``'s rules: (valid rows with ``table``'s columns in their
    contract types, then the carried ones; quarantine rows with the first failing reason).

    Ids are trimmed of spaces and typed columns parsed before the rules run; a quarantined
    row's record holds its text columns as read.

    Parameters
    ----------
    known : mapping of str to DataFrame or None
        For each column of a ``Check.UNKNOWN`` rule: the rows keyed by it that its value
        must be in (their other columns are carried to the valid rows); None: any value.
    unique : bool
        One row per id (the first column): the first by the other text columns and the
        file; the others are quarantined as ``duplicate_id``.
    cutoff, earliest : datetime.datetime, optional
        The limits of the ``AFTER_CUTOFF`` and ``BEFORE_EARLIEST`` rules.
    """
    tagged, parsed, carried = _tag(raw, table, known, cutoff=cutoff, earliest=earliest)
    valid = tagged.where(F.col("reason").isNull()).drop("reason")
    bad = tagged.where(F.col("reason").isNotNull())
    if unique:
        key = table.names[0]
        order = [f.name for f in table.schema if pa.types.is_string(f.type) and f.name != key]
        rank = F.row_number().over(
            Window.partitionBy(key).orderBy(
                *[F.col(c).asc_nulls_last() for c in (*order, "source_file")]
            )
        )
        ranked = valid.withColumn("_rank", rank)
        valid = ranked.where(F.col("_rank") == 1).drop("_rank")
        duplicates = ranked.where(F.col("_rank") > 1).drop("_rank")
        bad = bad.unionByName(duplicates.withColumn("reason", F.lit(R.DUPLICATE_ID.value)))
    columns = [parsed[n].alias(n) if n in parsed else F.col(n) for n in table.names]
    return valid.select(*columns, *carried), _quarantine(bad, table.name, _record_fields(table))


def _record_fields(table: TableSpec) -> list[str]:
    """The columns a quarantined row's record holds: the table's, as read, lists left out."""
    return [f.name for f in table.schema if not pa.types.is_list(f.type)]


def _tag(
    raw: DataFrame,
    table: TableSpec,
    known: Mapping[str, DataFrame | None],
    *,
    cutoff: dt.datetime | None,
    earliest: dt.datetime | None,
) -> tuple[DataFrame, dict[str, Column], list[str]]:
    """``raw`` with ids trimmed, typed columns parsed into ``_<name>`` columns (the returned
    mapping of name to column), the ``known`` frames' other columns carried (their names
    returned) and ``reason``, the first failing rule of ``table``'s (null: a valid row).

    A column read in its contract type (``native`` of :func:`extract_table`) is its own
    parsed value, and blank only when null."""
    frame = raw
    parsed: dict[str, Column] = {}
    typed = {f.name for f in raw.schema.fields if not isinstance(f.dataType, T.StringType)}
    for column in table.schema:
        if column.name in ID_COLUMNS:
            frame = frame.withColumn(column.name, F.trim(F.col(column.name)))
        elif column.name in typed and not pa.types.is_list(column.type):
            sql_type = from_arrow_type(column.type).simpleString()
            frame = frame.withColumn(
                f"_{column.name}", F.expr(f"try_cast(`{column.name}` AS {sql_type})")
            )
            parsed[column.name] = F.col(f"_{column.name}")
        elif (value := _parsed(column)) is not None:
            frame = frame.withColumn(f"_{column.name}", value)
            parsed[column.name] = F.col(f"_{column.name}")
    carried: list[str] = []
    for name, rows in known.items():
        if rows is not None:
            carried += [c for c in rows.columns if c != name]
            frame = frame.join(rows.withColumn(f"_known_{name}", F.lit(True)), name, "left")

    def failing(rule: Rule) -> Column:
        name = rule.column or ""
        match rule.check:
            case Check.MALFORMED:
                return F.col(CORRUPT).isNotNull()
            case Check.BLANK if name in typed:
                return F.col(name).isNull()
            case Check.BLANK:
                return _blank(F.col(name))
            case Check.NOT_AN_ID:
                return ~F.col(name).rlike(_ID_REGEX)
            case Check.UNPARSABLE:
                return parsed[name].isNull()
            case Check.OUT_OF_RANGE if rule.values is not None:
                return ~parsed[name].isin(*rule.values)
            case Check.OUT_OF_RANGE:
                assert rule.bounds is not None  # a Rule has bounds or values
                low, high = rule.bounds
                return (parsed[name] < low) | (parsed[name] > high)
            case Check.AFTER_CUTOFF:
                return parsed[name] >= _instant(cutoff, "cutoff")
            case Check.BEFORE_EARLIEST:
                return parsed[name] < _instant(earliest, "earliest")
            case Check.UNKNOWN:
                return F.lit(False) if known[name] is None else F.col(f"_known_{name}").isNull()
        assert_never(rule.check)

    first, *others = table.rules
    reason = reduce(
        lambda chain, rule: chain.when(failing(rule), rule.reason.value),
        others,
        F.when(failing(first), first.reason.value),
    )
    return frame.withColumn("reason", reason), parsed, carried


#: The columns :func:`stage_events` adds to the table's: the first failing rule's reason
#: (null: a valid row), and for quarantined rows only, their file and record.
STAGE_COLUMNS = ("reason", "source_file", "record")


def stage_events(
    raw: DataFrame,
    kind: str,
    *,
    tracks: DataFrame,
    users: DataFrame | None,
    cutoff: dt.datetime,
    earliest: dt.datetime = EARLIEST_EVENT,
) -> DataFrame:
    """Raw ``plays`` or ``thumbs`` validated once, every row kept: the table's columns in
    their contract types (null where a quarantined row's value is not one of it), the
    catalog's carried ones (``duration_ms`` of plays), then :data:`STAGE_COLUMNS`.

    Valid events are stamped at or after ``earliest`` and before ``cutoff``. A quarantined
    row's reason is the first failing rule of the table's (``recsys.contract.PLAYS``,
    ``THUMBS``): structure and missing fields first, then malformed values, ranges, time
    limits, and last the catalog look-ups (unknown track, then unknown user).

    The aggregation writes this frame once and splits what it reads back
    (:func:`split_events`: valid plays ``user_id, track_id, event_at, ms_played,
    duration_ms``, valid thumbs ``user_id, track_id, event_at, value``), so the rules run
    once per event whichever branch needs it.
    """
    if kind not in ("plays", "thumbs"):
        raise ValueError(f"kind must be 'plays' or 'thumbs', got {kind!r}")
    table = TABLES[kind]
    catalog = tracks.select("track_id", *(["duration_ms"] if kind == "plays" else []))
    known = {
        # The catalog is small next to the events: broadcasting it avoids shuffling them.
        "track_id": F.broadcast(catalog),
        "user_id": None if users is None else F.broadcast(users.select("user_id")),
    }
    tagged, parsed, carried = _tag(raw, table, known, cutoff=cutoff, earliest=earliest)
    quarantined = F.col("reason").isNotNull()
    record = _record(_record_fields(table))
    return tagged.select(
        *[(parsed[n] if n in parsed else F.col(n)).alias(n) for n in table.names],
        *carried,
        "reason",
        F.when(quarantined, F.col("source_file")).alias("source_file"),
        F.when(quarantined, record).alias("record"),
    )


def split_events(staged: DataFrame, kind: str) -> tuple[DataFrame, DataFrame]:
    """The valid events of a :func:`stage_events` frame (its time column named
    ``event_at``) and its quarantine rows (:data:`QUARANTINE_COLUMNS`)."""
    table = TABLES[kind]
    reason = F.col("reason")
    valid = staged.where(reason.isNull()).select(
        *[c for c in staged.columns if c not in STAGE_COLUMNS]
    )
    bad = staged.where(reason.isNotNull()).select(
        F.lit(table.name).alias("kind"), *QUARANTINE_COLUMNS[1:]
    )
    return valid.withColumnRenamed(table.time_column, "event_at"), bad


def confidence_column(params: ConfidenceParams, cutoff: dt.datetime) -> Column:
    """The confidence of rows with integer columns ``completed``, ``skips`` and ``thumb`` and
    the timestamp ``last_event_at`` (its age runs to ``cutoff``).

    The Spark twin of :func:`recsys.contract.confidence` (the formula of its module doc);
    ``tests/test_contract.py`` checks that they agree.
    """
    completed, skips, thumb = F.col("completed"), F.col("skips"), F.col("thumb")
    listened = completed + F.lit(params.skip_weight) * skips
    shaped = F.log1p(listened) if params.confidence_scale == "log" else listened.cast("double")
    positive = shaped + F.when(thumb == 1, F.lit(params.thumb_up_boost)).otherwise(F.lit(0.0))
    if params.half_life_days > 0:
        seconds = F.lit(cutoff.timestamp()) - F.unix_micros(F.col("last_event_at")) / F.lit(1e6)
        age_days = F.greatest(seconds / F.lit(86_400.0), F.lit(0.0))
        weight = F.pow(F.lit(0.5), age_days / F.lit(params.half_life_days))
        positive = positive * F.greatest(weight, F.lit(DECAY_FLOOR))
    confidence = F.when(thumb == -1, F.lit(-params.thumb_down_confidence)).otherwise(positive)
    return confidence.cast("double")


#: The columns of a ``pairs`` frame (:func:`aggregate_pairs`) that count events, not pairs:
#: the valid rows and the distinct ones among them.
ROWS, DISTINCT = "_rows", "_distinct"


def _distinct_events(events: DataFrame) -> DataFrame:
    """``events`` with identical rows made one, ``_copies`` counting them, hash-partitioned
    by (listener, track): the per-pair aggregation after it reuses that shuffle."""
    pairs = events.repartition("user_id", "track_id")
    return pairs.groupBy(*events.columns).agg(F.count(F.lit(1)).alias("_copies"))


def aggregate_pairs(plays: DataFrame, thumbs: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Valid plays and thumbs, identical rows counted once, summed per (listener, track).

    One shuffle per table (:func:`_distinct_events`): the duplicates go within the
    aggregation's own. Each frame also has :data:`ROWS` and :data:`DISTINCT`, the valid
    events of the pair and the distinct ones, so a summary pass over these (small) frames
    counts the duplicates dropped.
    """
    distinct_plays = _distinct_events(plays)
    completed = F.col("ms_played") >= F.least(F.lit(COMPLETED_MS), F.col("duration_ms") / 2)
    played = distinct_plays.groupBy("user_id", "track_id").agg(
        F.count(F.lit(1)).alias("plays"),
        F.sum(completed.cast("int")).alias("completed"),
        F.min("event_at").alias("first_played_at"),
        F.max("event_at").alias("last_played_at"),
        F.sum("_copies").alias(ROWS),
        F.count(F.lit(1)).alias(DISTINCT),
    )
    # The latest thumb wins; on a tie in time the larger value does, so the result is stable.
    rated = (
        _distinct_events(thumbs)
        .groupBy("user_id", "track_id")
        .agg(
            F.max(F.struct("event_at", "value")).alias("_latest"),
            F.min("event_at").alias("first_rated_at"),
            F.sum("_copies").alias(ROWS),
            F.count(F.lit(1)).alias(DISTINCT),
        )
        .select(
            "user_id",
            "track_id",
            F.col("_latest.value").alias("thumb"),
            F.col("_latest.event_at").alias("last_rated_at"),
            "first_rated_at",
            ROWS,
            DISTINCT,
        )
    )
    return played, rated


def join_pairs(played: DataFrame, rated: DataFrame, params: AggregationParams) -> DataFrame:
    """The interactions of :func:`aggregate_pairs`' frames: one row per (listener, track)
    with counts, latest thumb, the first and last event time and confidence
    (:func:`confidence_column`)."""
    joined = played.drop(ROWS, DISTINCT).join(
        rated.drop(ROWS, DISTINCT), ["user_id", "track_id"], "full"
    )
    plays_n = F.coalesce(F.col("plays"), F.lit(0)).cast("int")
    completed_n = F.coalesce(F.col("completed"), F.lit(0)).cast("int")
    return joined.select(
        "user_id",
        "track_id",
        plays_n.alias("plays"),
        completed_n.alias("completed"),
        (plays_n - completed_n).alias("skips"),
        F.coalesce(F.col("thumb"), F.lit(0)).cast("int").alias("thumb"),
        F.least("first_played_at", "first_rated_at").alias("first_event_at"),
        F.greatest("last_played_at", "last_rated_at").alias("last_event_at"),
    ).withColumn("confidence", confidence_column(params.confidence, params.cutoff))


def transform_interactions(
    plays: DataFrame, thumbs: DataFrame, params: AggregationParams
) -> DataFrame:
    """One row per (listener, track) of valid plays and thumbs, identical events counted
    once (:func:`aggregate_pairs`, then :func:`join_pairs`)."""
    return join_pairs(*aggregate_pairs(plays, thumbs), params)


# ------------------------------------------------------------------------------------ load


def load_parquet(frame: DataFrame, path: Path) -> None:
    frame.write.mode("overwrite").parquet(_spark_uri(path))


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


def check_layout(data_dir: Path) -> None:
    """Refuse, in one line and before Spark starts, a data directory that cannot hold a
    week: missing, without ``catalog/artists`` and ``catalog/tracks``, or without any
    file of plays under ``events/plays/``.

    Raises
    ------
    InputError
    """
    if not data_dir.is_dir():
        raise InputError(f"data directory {data_dir} does not exist")
    plays_dir = data_dir / "events" / "plays"
    if not plays_dir.exists():
        raise InputError(f"{plays_dir} not found: a data directory needs events/plays/")
    if not any(list_files(plays_dir).values()):
        raise InputError(f"{plays_dir} holds no file of plays (.parquet, .csv or .jsonl)")
    for table in (ARTISTS, TRACKS):
        find_catalog_file(data_dir, table.name)


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
    check_layout(data_dir)
    plays_dir = data_dir / "events" / "plays"
    thumbs_dir = data_dir / "events" / "thumbs"
    summary = AggregationSummary(cutoff=params.cutoff.isoformat())
    cached: list[DataFrame] = []
    try:
        artists, artists_bad = _catalog(spark, data_dir, ARTISTS)
        known_artists = {"artist_id": artists.select("artist_id")}  # a track's artist exists
        tracks, tracks_bad = _catalog(spark, data_dir, TRACKS, known_artists)
        cached += [artists, tracks]
        users: DataFrame | None = None
        quarantine_parts = [artists_bad, tracks_bad]
        if find_catalog_file(data_dir, USERS.name, required=False) is not None:
            users, users_bad = _catalog(spark, data_dir, USERS)
            cached.append(users)
            quarantine_parts.append(users_bad)

        valid: dict[str, DataFrame] = {}
        unreadable: list[tuple[str, InputError]] = []
        thumb_folders = [thumbs_dir]
        if extra_thumbs is not None:
            thumb_folders.append(Path(os.path.abspath(extra_thumbs)))
        for kind, folders in (("plays", [plays_dir]), ("thumbs", thumb_folders)):
            stage = partial(
                stage_events,
                kind=kind,
                tracks=tracks,
                users=users,
                cutoff=params.cutoff,
                earliest=params.earliest_event_at,
            )
            staged, summary.events_read[kind], left_out = _stage_events(
                spark, folders, TABLES[kind], stage, paths.staged / kind, params.unreadable_files
            )
            unreadable += [(kind, error) for error in left_out]
            valid[kind], bad = split_events(staged, kind)
            quarantine_parts.append(bad)
        if unreadable:
            quarantine_parts.append(_file_quarantine(spark, [e for _, e in unreadable]))
            summary.files_quarantined = [
                {"path": str(error.path), "kind": kind, "error": str(error)}
                for kind, error in unreadable
            ]

        # Written by every task in parallel; read back, only its kind and reason columns.
        load_parquet(reduce(DataFrame.unionByName, quarantine_parts), paths.quarantine)
        written_quarantine = spark.read.parquet(_spark_uri(paths.quarantine))
        for row in written_quarantine.groupBy("kind", "reason").count().collect():
            summary.quarantined.setdefault(row["kind"], {})[row["reason"]] = int(row["count"])

        # Validated once and deduplicated within the per-pair shuffle; the pairs are cached
        # for the summary pass (valid and duplicate events) and the join.
        played, rated = aggregate_pairs(valid["plays"], valid["thumbs"])
        pairs = {"plays": played, "thumbs": rated}
        for kind, frame in pairs.items():
            frame.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(frame)
            totals = frame.agg(F.sum(ROWS), F.sum(DISTINCT)).first()
            valid_rows, distinct = (int(value or 0) for value in (totals or (0, 0)))
            summary.duplicates_dropped[kind] = valid_rows - distinct
            accounted = valid_rows + sum(summary.quarantined.get(kind, {}).values())
            read = summary.events_read[kind]
            if accounted != read:  # every row is either valid or quarantined, never lost
                raise RuntimeError(f"{kind}: read {read} rows but accounted for {accounted}")

        interactions = join_pairs(played, rated, params)
        load_parquet(interactions, paths.interactions)
        interactions = spark.read.parquet(_spark_uri(paths.interactions))
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
        shutil.rmtree(paths.staged, ignore_errors=True)
    summary.seconds = round(time.perf_counter() - started, 3)
    # Written last and renamed into place: a folder with a summary is a complete aggregation.
    unfinished = paths.summary.with_name(paths.summary.name + ".partial")
    unfinished.write_text(json.dumps(asdict(summary), indent=2, sort_keys=True))
    unfinished.replace(paths.summary)
    log.info(
        "aggregated %d interactions of %d listeners; quarantined %d rows and %d unreadable files",
        summary.interactions,
        summary.users,
        summary.quarantined_total - len(summary.files_quarantined),
        len(summary.files_quarantined),
    )
    return summary


def _stage_events(
    spark: SparkSession,
    folders: Sequence[Path],
    table: TableSpec,
    stage: Callable[[DataFrame], DataFrame],
    path: Path,
    unreadable_files: str,
) -> tuple[DataFrame, int, list[InputError]]:
    """The events under ``folders`` validated once (``stage``: :func:`stage_events`) and
    written to ``path``, read back; their count and the files left out.

    One pass over the event files: the quarantine and the aggregation then read the staged
    Parquet (typed, and its count is in the files' footers) instead of reading and
    validating the files again. Writing decodes every value, so a file Spark cannot read
    fails here, where it can be left out.

    With ``unreadable_files == "quarantine"``, a file found unreadable (before Spark reads it,
    or when Spark fails on it) is left out and the rest read again; each round leaves out one
    more file, so this ends. Otherwise the first unreadable file raises.

    Typed Parquet columns stay typed (``native`` of :func:`extract_table`): the table's
    times and numbers.
    """
    quarantine = unreadable_files == "quarantine"
    left_out: dict[Path, InputError] = {}
    columns = table.columns
    native = {
        f.name: from_arrow_type(f.type)
        for f in table.schema
        if f.name not in ID_COLUMNS and not (pa.types.is_string(f.type) or pa.types.is_list(f.type))
    }

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
                native=native,
                skip=left_out.keys(),
                on_unreadable=leave_out if quarantine else None,
            )
            for folder in folders
            if folder.exists()
        ]
        raw = reduce(DataFrame.unionByName, parts) if parts else _empty_raw(spark, columns)
        try:
            load_parquet(stage(raw), path)
        except SPARK_ERRORS as exc:
            error = _read_failure(exc)
            if not quarantine or error is None or error.path in left_out:
                raise
            leave_out(error)
            continue
        staged = spark.read.parquet(_spark_uri(path))
        return staged, _count(staged), list(left_out.values())


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


def _spark_uri(path: Path | str) -> str:
    """``path``, a path of the driver's file system, as the ``file:`` URI Spark reads and
    writes: a bare ``/mnt/events`` would be a path of the cluster's default file system,
    HDFS on Dataproc and EMR. Not percent-encoded: Hadoop takes the path as written."""
    return "file://" + os.path.abspath(path)


def _file_uri(path: Path | None) -> str | None:
    # Spark's form of _metadata.file_path (file:/tmp/x.csv), which the other rows carry.
    return None if path is None else "file:" + path.absolute().as_uri().removeprefix("file://")


def _catalog(
    spark: SparkSession,
    data_dir: Path,
    table: TableSpec,
    known: Mapping[str, DataFrame | None] | None = None,
) -> tuple[DataFrame, DataFrame]:
    """The catalog table's valid rows, one per id and cached, and its quarantine rows.

    Raises
    ------
    InputError
        If the table's file is missing or cannot be read.
    """
    path = find_catalog_file(data_dir, table.name)
    assert path is not None  # required: not found raises
    typed = {f.name: from_arrow_type(f.type) for f in table.schema if pa.types.is_list(f.type)}
    raw = extract_table(spark, path, table.names, required=table.columns, typed=typed)
    valid, quarantine = validate_table(raw, table, known or {}, unique=True)
    return valid.cache(), quarantine


def _count(frame: DataFrame) -> int:
    return int(frame.count())


def _utc_instant(text: str) -> dt.datetime:
    """An ISO date or time; without an offset it is UTC (as event times are)."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or time") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


#: The spark-submit options whose default is the setting of the same name.
_SETTING_OPTIONS: dict[str, dict[str, Any]] = {
    "skip_weight": {"type": float},
    "thumb_up_boost": {"type": float},
    "thumb_down_confidence": {"type": float},
    "confidence_scale": {"choices": CONFIDENCE_SCALES},
    "half_life_days": {"type": float},
    "earliest_event_at": {"type": _utc_instant},
    "unreadable_files": {"choices": UNREADABLE_MODES},
}


def parse_arguments(
    argv: Sequence[str] | None, settings: Settings | None = None
) -> tuple[argparse.Namespace, AggregationParams]:
    """The spark-submit arguments and the AggregationParams they give.

    Every option defaults to ``settings`` (default: :func:`recsys.settings.load_settings`,
    the ``CRATEDIGGER_*`` environment), as ``cratedigger aggregate`` reads them; a flag
    overrides its setting.

    Raises
    ------
    recsys.settings.ConfigError
        If ``settings`` is None and a ``CRATEDIGGER_*`` variable is invalid.
    SystemExit
        If an argument is missing or invalid (argparse's usage message, status 2).
    """
    settings = settings or load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data directory (contract layout)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (local or mounted)")
    parser.add_argument("--quarantine", type=Path, required=True, help="quarantine dataset path")
    parser.add_argument(
        "--cutoff", type=_utc_instant, required=True, help="ISO time; only earlier events count"
    )
    for name, option in _SETTING_OPTIONS.items():
        setting = f"{ENV_PREFIX}{name.upper()}, now {getattr(settings, name)}"
        described = Settings.model_fields[name].description or name.replace("_", " ")
        help_text = f"{described} (default: {setting})".replace("%", "%%")
        parser.add_argument("--" + name.replace("_", "-"), **option, help=help_text)
    parser.add_argument(
        "--feedback-thumbs", type=Path, default=None, help="folder of the web app's thumbs"
    )
    args = parser.parse_args(argv)
    given = {name: value for name in _SETTING_OPTIONS if (value := getattr(args, name)) is not None}
    try:
        params = AggregationParams.from_settings(settings, args.cutoff, **given)
    except ValueError as exc:
        parser.error(str(exc))
    return args, params


def main(argv: Sequence[str] | None = None) -> int:
    """``spark-submit jobs/aggregate.py --data DIR --out DIR --quarantine DIR --cutoff ISO``.

    The master is spark-submit's; every other setting comes from the ``CRATEDIGGER_*``
    environment as for ``cratedigger aggregate`` (:func:`parse_arguments`; shuffle
    partitions: ``CRATEDIGGER_SPARK_SHUFFLE_PARTITIONS``). Returns the exit status: 2 when a
    variable is invalid (the message names it, on standard error).
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args, params = parse_arguments(argv, settings)
    from jobs.spark import get_spark

    spark = get_spark(
        None,
        app_name="cratedigger-aggregate",
        shuffle_partitions=settings.spark_shuffle_partitions,
    )
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
    "aggregate_pairs",
    "confidence_column",
    "extract_table",
    "join_pairs",
    "list_files",
    "parse_arguments",
    "run_aggregation",
    "split_events",
    "stage_events",
    "transform_interactions",
    "validate_table",
]

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
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
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


class InputError(ValueError):
    """The data directory cannot be read as the contract describes; the message says where."""


@dataclass(frozen=True)
class AggregationParams:
    cutoff: dt.datetime
    skip_weight: float = 0.25
    thumb_up_boost: float = 2.0
    thumb_down_confidence: float = 2.0

    def __post_init__(self) -> None:
        if self.cutoff.tzinfo is None:
            raise ValueError("cutoff must be timezone-aware (UTC)")


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

    Hidden files and Spark's marker files (``.*``, ``_*``) are skipped.

    Raises
    ------
    InputError
        If a file has an extension this job does not read.
    """
    candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    found: dict[str, list[Path]] = defaultdict(list)
    for candidate in candidates:
        relative = candidate.relative_to(path) if path.is_dir() else Path(candidate.name)
        if any(part.startswith((".", "_")) for part in relative.parts):
            continue
        fmt = _format_of(candidate)
        if fmt is None:
            raise InputError(
                f"{candidate}: unsupported file type; expected one of "
                f"{', '.join('.' + f for f in EVENT_FORMATS)} (optionally .gz)"
            )
        found[fmt].append(candidate)
    return dict(found)


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file, stripped of spaces and of a UTF-8 byte order mark.

    A blank name becomes ``_c<index>`` (Spark's name for an unnamed column).

    Raises
    ------
    InputError
        If the file has no header line or names a column twice.
    """
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    # utf-8-sig: spreadsheet programs start their CSV exports with a byte order mark.
    with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as handle:
        row = next(csv.reader(handle), None)
    if not row:
        raise InputError(f"{path}: CSV file has no header line")
    names = [name.strip() or f"_c{index}" for index, name in enumerate(row)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        listed = ", ".join(map(repr, repeated))
        raise InputError(f"{path}: CSV header names {listed} more than once")
    return names


def _parquet_schema_key(path: Path) -> tuple[tuple[str, str], ...]:
    """The columns and types of a Parquet file (footer only), to group compatible files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    return tuple(sorted((f.name, str(f.type)) for f in schema))


def _empty_raw(spark: SparkSession, columns: Sequence[str]) -> DataFrame:
    fields = [T.StructField(name, T.StringType()) for name in (*columns, CORRUPT, "source_file")]
    return spark.createDataFrame([], T.StructType(fields))


def extract_table(
    spark: SparkSession,
    path: Path,
    columns: Sequence[str],
    *,
    typed: dict[str, T.DataType] | None = None,
) -> DataFrame:
    """Read every file under ``path`` into one DataFrame of string ``columns``.

    Columns named in ``typed`` keep that type (list columns of the catalog). Lines that
    cannot be parsed keep their raw text in ``_corrupt_record``; ``source_file`` names the
    file of each row. A missing column is all null, so its rows fail validation.
    """
    typed = typed or {}
    frames: list[DataFrame] = []
    for fmt, files in list_files(path).items():
        if fmt == "csv":
            by_header: dict[tuple[str, ...], list[str]] = defaultdict(list)
            for file in files:
                by_header[tuple(_csv_header(file))].append(str(file))
            for header, names in by_header.items():
                schema = T.StructType(
                    [T.StructField(name, T.StringType()) for name in header]
                    + [T.StructField(CORRUPT, T.StringType())]
                )
                # The schema is these files' own header, so applying it by position is applying
                # it by name (enforceSchema: Spark's own header check would fail on a header
                # with spaces or a byte order mark). escape='"' reads RFC 4180 doubled quotes
                # ("say ""hi""") as every common CSV writer produces them. Without column
                # pruning, a line of the wrong length is malformed even when the header has
                # columns that this job does not read.
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
                        multiLine=False,
                    )
                    .withColumn("source_file", F.col("_metadata.file_path"))
                )
        elif fmt == "jsonl":
            schema = T.StructType(
                [T.StructField(name, typed.get(name, T.StringType())) for name in columns]
                + [T.StructField(CORRUPT, T.StringType())]
            )
            frames.append(
                spark.read.json(
                    [str(f) for f in files],
                    schema=schema,
                    mode="PERMISSIVE",
                    columnNameOfCorruptRecord=CORRUPT,
                ).withColumn("source_file", F.col("_metadata.file_path"))
            )
        else:
            # Files whose column types differ (int32 and int64, or a number and a string)
            # cannot be read as one dataset: Spark refuses to merge their schemas. Each group
            # of files with one schema is read on its own; the columns are cast below.
            by_schema: dict[tuple[tuple[str, str], ...], list[str]] = defaultdict(list)
            for file in files:
                by_schema[_parquet_schema_key(file)].append(str(file))
            for names in by_schema.values():
                frame = spark.read.option("mergeSchema", "true").parquet(*names)
                frames.append(
                    frame.withColumn(CORRUPT, F.lit(None).cast("string")).withColumn(
                        "source_file", F.col("_metadata.file_path")
                    )
                )
    if not frames:
        frames.append(_empty_raw(spark, columns))
    normalised = []
    for frame in frames:
        present = set(frame.columns)
        selected = []
        for name in columns:
            wanted = typed.get(name, T.StringType())
            if name in present and (name not in typed or frame.schema[name].dataType == wanted):
                selected.append(F.col(name).cast(wanted).alias(name))
            elif name in present and name in typed:
                # A list column of another element type (e.g. double): cast what can be cast.
                selected.append(
                    F.expr(f"try_cast(`{name}` AS {wanted.simpleString()})").alias(name)
                )
            else:
                selected.append(F.lit(None).cast(wanted).alias(name))
        selected += [F.col(CORRUPT), F.col("source_file")]
        normalised.append(frame.select(*selected))
    return reduce(DataFrame.unionByName, normalised)


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
    duration = F.expr("try_cast(duration_ms AS BIGINT)")
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
) -> tuple[DataFrame, DataFrame]:
    """Split raw ``plays`` or ``thumbs`` into valid typed rows and quarantined rows.

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
        .withColumn("_amount", F.expr(f"try_cast(trim(`{amount_column}`) AS {amount_type})"))
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
    earliest = F.lit(EARLIEST_EVENT.astimezone(dt.UTC)).cast("timestamp")
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
        .when(F.col("event_at") < earliest, R.TIMESTAMP_BEFORE_2000.value)
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
        unsupported type.
    """
    started = time.perf_counter()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"data directory {data_dir} does not exist")
    plays_dir = data_dir / "events" / "plays"
    if not plays_dir.exists():
        raise InputError(f"{plays_dir} not found: a data directory needs events/plays/")
    thumbs_dir = data_dir / "events" / "thumbs"
    summary = AggregationSummary(cutoff=params.cutoff.isoformat())

    artists_raw = extract_table(spark, _required(data_dir, "artists"), ARTIST_COLUMNS)
    artists, artists_bad = transform_artists(artists_raw)
    artists = artists.cache()
    tracks_raw = extract_table(
        spark,
        _required(data_dir, "tracks"),
        (*TRACK_COLUMNS, "released_at", "embedding", "tags"),
        typed={"embedding": T.ArrayType(T.FloatType()), "tags": T.ArrayType(T.StringType())},
    )
    tracks, tracks_bad = transform_tracks(tracks_raw, artists)
    tracks = tracks.cache()
    users_file = find_catalog_file(data_dir, "users", required=False)
    users: DataFrame | None = None
    quarantine_parts = [artists_bad, tracks_bad]
    if users_file is not None:
        users_raw = extract_table(spark, users_file, (*USER_COLUMNS, "display_name"))
        users, users_bad = transform_users(users_raw)
        users = users.cache()
        quarantine_parts.append(users_bad)

    valid: dict[str, DataFrame] = {}
    cached: list[DataFrame] = [artists, tracks] + ([users] if users is not None else [])
    valid_counts: dict[str, int] = {}
    thumb_folders = [thumbs_dir] + ([extra_thumbs] if extra_thumbs is not None else [])
    for kind, folders, columns in (
        ("plays", [plays_dir], PLAY_COLUMNS),
        ("thumbs", thumb_folders, THUMB_COLUMNS),
    ):
        parts = [extract_table(spark, folder, columns) for folder in folders if folder.exists()]
        raw = reduce(DataFrame.unionByName, parts) if parts else _empty_raw(spark, columns)
        # Parse the files once: the valid and the quarantined branch both read this cache.
        raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
        summary.events_read[kind] = _count(raw)
        good, bad = validate_events(raw, kind, tracks=tracks, users=users, cutoff=params.cutoff)
        deduped = good.dropDuplicates().persist(StorageLevel.MEMORY_AND_DISK)
        valid_counts[kind] = _count(good)
        summary.duplicates_dropped[kind] = valid_counts[kind] - _count(deduped)
        valid[kind] = deduped
        quarantine_parts.append(bad)
        cached += [raw, deduped]

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
    for frame in cached:
        frame.unpersist()
    summary.seconds = round(time.perf_counter() - started, 3)
    paths.summary.write_text(json.dumps(asdict(summary), indent=2, sort_keys=True))
    log.info(
        "aggregated %d interactions of %d listeners; quarantined %d rows",
        summary.interactions,
        summary.users,
        summary.quarantined_total,
    )
    return summary


def _required(data_dir: Path, name: str) -> Path:
    path = find_catalog_file(data_dir, name)
    assert path is not None
    return path


def _count(frame: DataFrame) -> int:
    return int(frame.count())


def main(argv: Sequence[str] | None = None) -> int:
    """``spark-submit jobs/aggregate.py --data DIR --out DIR --quarantine DIR --cutoff ISO``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data directory (contract layout)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (local or mounted)")
    parser.add_argument("--quarantine", type=Path, required=True, help="quarantine dataset path")
    parser.add_argument("--cutoff", required=True, help="ISO timestamp; only earlier events count")
    parser.add_argument("--skip-weight", type=float, default=0.25)
    parser.add_argument("--thumb-up-boost", type=float, default=2.0)
    parser.add_argument("--thumb-down-confidence", type=float, default=2.0)
    parser.add_argument(
        "--feedback-thumbs", type=Path, default=None, help="folder of the web app's thumbs"
    )
    args = parser.parse_args(argv)
    cutoff = dt.datetime.fromisoformat(args.cutoff)
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=dt.UTC)
    from jobs.spark import get_spark

    spark = get_spark(None, app_name="cratedigger-aggregate")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = run_aggregation(
        spark,
        args.data,
        AggregationPaths(args.out, args.quarantine),
        AggregationParams(
            cutoff, args.skip_weight, args.thumb_up_boost, args.thumb_down_confidence
        ),
        extra_thumbs=args.feedback_thumbs,
    )
    print(json.dumps(asdict(summary)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__: list[Any] = [
    "AggregationParams",
    "AggregationPaths",
    "AggregationSummary",
    "InputError",
    "extract_table",
    "list_files",
    "run_aggregation",
    "transform_artists",
    "transform_interactions",
    "transform_tracks",
    "transform_users",
    "validate_events",
]

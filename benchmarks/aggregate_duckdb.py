"""The aggregation on DuckDB: the single-machine reference for the Spark job.

:func:`duckdb_aggregate` runs the contract's row checks (:mod:`recsys.contract`: the same
rules in the same order, so the same quarantine reasons; catalog ids unique by the same
order; identical valid events counted once) and the same confidence formula as
:mod:`jobs.aggregate`, on a data directory of Parquet files (what ``cratedigger simulate``
writes), and writes ``interactions.parquet``, ``users.parquet`` and ``quarantine.parquet``.
It reads Parquet only: the CSV and JSON Lines readers and the unreadable-file handling of
the Spark job are not reproduced.

Run as a script, it times the Spark job (its own process, JVM included: CPU of the reaped
children) and DuckDB (in this process) on the same input, prints wall and CPU seconds and
their ratios, and checks that both wrote the same interactions and quarantine rows::

    .venv/bin/python benchmarks/aggregate_duckdb.py --data /tmp/scale-cache/S/data
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.contract import (
    ARTISTS,
    COMPLETED_MS,
    DECAY_FLOOR,
    EARLIEST_EVENT,
    ID_COLUMNS,
    ID_PATTERN,
    PLAYS,
    THUMBS,
    TRACKS,
    USERS,
    Check,
    ConfidenceParams,
    TableSpec,
    week_cutoff,
)
from recsys.contract import QuarantineReason as R

#: The cut-off of benchmarks/scale.py's week (2026-11-16), the default here.
DEFAULT_CUTOFF = week_cutoff(dt.date(2026, 11, 16))
INTERACTION_COLUMNS = (
    "user_id",
    "track_id",
    "plays",
    "completed",
    "skips",
    "thumb",
    "first_event_at",
    "last_event_at",
    "confidence",
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _instant(moment: dt.datetime) -> str:
    return f"TIMESTAMPTZ {_text(moment.astimezone(dt.UTC).isoformat())}"


def _files(folder: Path) -> list[str]:
    found = [p for p in sorted(folder.rglob("*.parquet")) if not p.name.startswith((".", "_"))]
    return [str(p.resolve()) for p in found]


def _catalog_file(data_dir: Path, name: str) -> list[str]:
    folder = data_dir / "catalog" / name
    single = data_dir / "catalog" / f"{name}.parquet"
    return _files(folder) if folder.is_dir() else [str(single.resolve())] if single.exists() else []


def _source(con: Any, view: str, files: Sequence[str], table: TableSpec) -> dict[str, str]:
    """``view``: the files' rows, every column of ``table`` (null where a file has none),
    ``source_file`` in Spark's ``file:/...`` form; returns the DuckDB type of each column."""
    if not files:
        columns = ", ".join(f"NULL::VARCHAR AS {_quote(n)}" for n in table.names)
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {columns}, "
            "NULL::VARCHAR AS source_file WHERE false"
        )
        return dict.fromkeys(table.names, "VARCHAR")
    listed = ", ".join(_text(f) for f in files)
    relation = f"read_parquet([{listed}], union_by_name = true, filename = true)"
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    present = {row[0]: str(row[1]) for row in described}
    columns = ", ".join(_quote(n) if n in present else f"NULL AS {_quote(n)}" for n in table.names)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {columns}, "
        f"'file:' || filename AS source_file FROM {relation}"
    )
    return {name: present.get(name, "VARCHAR") for name in table.names}


_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")


def _parsed(field: pa.Field, source_type: str) -> str | None:
    """The DuckDB twin of the Spark job's parse of a typed column (None: kept as read).

    A column the files already hold as an integer or a time is taken as it is: the Spark
    job's round trip through text gives the same value."""
    name = _quote(field.name)
    text = f"trim(CAST({name} AS VARCHAR))"
    if pa.types.is_integer(field.type) and source_type in _INTEGER_TYPES:
        return f"CAST({name} AS BIGINT)"
    if pa.types.is_timestamp(field.type) and source_type.startswith("TIMESTAMP"):
        return name
    if pa.types.is_integer(field.type):
        number = f"TRY_CAST({text} AS DOUBLE)"
        strict = (
            f"CASE WHEN regexp_full_match({text}, '[+-]?[0-9]+') "
            f"THEN TRY_CAST({text} AS BIGINT) END"
        )
        whole = f"CASE WHEN {number} % 1 = 0 THEN TRY_CAST({number} AS BIGINT) END"
        return f"coalesce({strict}, {whole})"
    if pa.types.is_timestamp(field.type):
        return f"TRY_CAST({name} AS TIMESTAMPTZ)"
    return None


def _validated(
    con: Any,
    view: str,
    table: TableSpec,
    types: Mapping[str, str],
    known: Mapping[str, str | None],
    *,
    unique: bool = False,
    cutoff: dt.datetime | None = None,
    earliest: dt.datetime | None = None,
) -> None:
    """``<view>_tagged``: the rows of ``view``, ids trimmed, typed columns parsed (``_<name>``),
    ``reason`` the first failing rule (null: valid), as :func:`jobs.aggregate.validate_table`."""
    selected = []
    parsed: dict[str, str] = {}
    for field in table.schema:
        name = _quote(field.name)
        if field.name in ID_COLUMNS:
            selected.append(f"trim(CAST({name} AS VARCHAR)) AS {name}")
            continue
        selected.append(name)
        if (expression := _parsed(field, types[field.name])) is not None:
            selected.append(f"{expression} AS {_quote('_' + field.name)}")
            parsed[field.name] = _quote("_" + field.name)
    joins = []
    for column, other in known.items():
        if other is not None:
            joins.append(
                f"LEFT JOIN (SELECT {_quote(column)} AS _k FROM {other}) AS k_{column} "
                f"ON r.{_quote(column)} = k_{column}._k"
            )
    pattern = ID_PATTERN.removeprefix("^").removesuffix("$")

    def failing(rule: Any) -> str:
        column = _quote(rule.column or "")
        match rule.check:
            case Check.MALFORMED:
                return "false"  # Parquet has no corrupt records
            case Check.BLANK:
                return f"({column} IS NULL OR trim(CAST({column} AS VARCHAR)) = '')"
            case Check.NOT_AN_ID:
                return f"NOT regexp_full_match({column}, {_text(pattern)})"
            case Check.UNPARSABLE:
                return f"{parsed[rule.column]} IS NULL"
            case Check.OUT_OF_RANGE if rule.values is not None:
                return f"{parsed[rule.column]} NOT IN ({', '.join(map(str, rule.values))})"
            case Check.OUT_OF_RANGE:
                low, high = rule.bounds
                return f"({parsed[rule.column]} < {low} OR {parsed[rule.column]} > {high})"
            case Check.AFTER_CUTOFF:
                assert cutoff is not None
                return f"{parsed[rule.column]} >= {_instant(cutoff)}"
            case Check.BEFORE_EARLIEST:
                assert earliest is not None
                return f"{parsed[rule.column]} < {_instant(earliest)}"
            case Check.UNKNOWN:
                other = known[rule.column]
                return "false" if other is None else f"k_{rule.column}._k IS NULL"
        raise AssertionError(rule.check)

    cases = " ".join(
        f"WHEN {failing(rule)} THEN {_text(rule.reason.value)}" for rule in table.rules
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {view}_tagged AS SELECT r.*, CASE {cases} END AS reason "
        f"FROM (SELECT {', '.join(selected)}, source_file FROM {view}) AS r {' '.join(joins)}"
    )
    if unique:
        key = _quote(table.names[0])
        order = [
            _quote(f.name)
            for f in table.schema
            if pa.types.is_string(f.type) and f.name != table.names[0]
        ]
        ordering = ", ".join(f"{c} ASC NULLS LAST" for c in (*order, "source_file"))
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {view}_tagged AS SELECT * EXCLUDE (_rank, reason), "
            f"CASE WHEN reason IS NULL AND _rank > 1 THEN {_text(R.DUPLICATE_ID.value)} "
            "ELSE reason END AS reason FROM ("
            f"SELECT *, CASE WHEN reason IS NULL THEN row_number() OVER (PARTITION BY "
            f"reason IS NULL, {key} ORDER BY {ordering}) END AS _rank FROM {view}_tagged)"
        )


def _confidence(params: ConfidenceParams, cutoff: dt.datetime) -> str:
    """The DuckDB twin of :func:`jobs.aggregate.confidence_column`."""
    listened = f"(completed + {params.skip_weight!r} * skips)"
    shaped = f"ln(1 + {listened})" if params.confidence_scale == "log" else f"{listened}::DOUBLE"
    positive = f"({shaped} + CASE WHEN thumb = 1 THEN {params.thumb_up_boost!r} ELSE 0.0 END)"
    if params.half_life_days > 0:
        seconds = f"({cutoff.timestamp()!r} - epoch_us(last_event_at) / 1e6)"
        age = f"greatest({seconds} / 86400.0, 0.0)"
        weight = f"pow(0.5, {age} / {params.half_life_days!r})"
        positive = f"({positive} * greatest({weight}, {DECAY_FLOOR!r}))"
    return (
        f"CAST(CASE WHEN thumb = -1 THEN {-params.thumb_down_confidence!r} "
        f"ELSE {positive} END AS DOUBLE)"
    )


def _one(con: Any, query: str) -> tuple[Any, ...]:
    row = con.execute(query).fetchone()
    assert row is not None, query
    return tuple(row)


def _first(a: str, b: str, pick: str) -> str:
    return f"{pick}(coalesce({a}, {b}), coalesce({b}, {a}))"


def run_duckdb(
    data_dir: Path,
    out_dir: Path,
    cutoff: dt.datetime = DEFAULT_CUTOFF,
    *,
    params: ConfidenceParams | None = None,
    earliest: dt.datetime = EARLIEST_EVENT,
    threads: int | None = None,
) -> dict[str, Any]:
    """Aggregate ``data_dir`` into ``out_dir`` on DuckDB; returns the counts (the Spark job's
    summary fields: ``events_read``, ``duplicates_dropped``, ``quarantined``, ...)."""
    import duckdb

    params = params or ConfidenceParams()
    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": threads or os.cpu_count() or 1})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        con.execute("SET preserve_insertion_order = false")
        data_dir = data_dir.resolve()
        types = _source(con, "artists", _catalog_file(data_dir, "artists"), ARTISTS)
        _validated(con, "artists", ARTISTS, types, {}, unique=True)
        con.execute(
            "CREATE TEMP VIEW artists_valid AS SELECT * FROM artists_tagged WHERE reason IS NULL"
        )
        types = _source(con, "tracks", _catalog_file(data_dir, "tracks"), TRACKS)
        known_artists = {"artist_id": "artists_valid"}
        _validated(con, "tracks", TRACKS, types, known_artists, unique=True)
        con.execute(
            "CREATE TEMP TABLE tracks_valid AS SELECT track_id, _duration_ms AS duration_ms "
            "FROM tracks_tagged WHERE reason IS NULL"
        )
        users_files = _catalog_file(data_dir, "users")
        kinds = ["artists", "tracks"]
        if users_files:
            types = _source(con, "users", users_files, USERS)
            _validated(con, "users", USERS, types, {}, unique=True)
            con.execute(
                "CREATE TEMP TABLE users_valid AS SELECT user_id, display_name FROM users_tagged "
                "WHERE reason IS NULL"
            )
            kinds.append("users")
        known_users = "users_valid" if users_files else None
        for table in (PLAYS, THUMBS):
            types = _source(con, table.name, _files(data_dir / "events" / table.name), table)
            known = {"track_id": "tracks_valid", "user_id": known_users}
            _validated(con, table.name, table, types, known, cutoff=cutoff, earliest=earliest)
            kinds.append(table.name)
        con.execute(
            "CREATE TEMP TABLE plays_valid AS SELECT DISTINCT p.user_id, p.track_id, "
            "p._played_at AS event_at, p._ms_played AS ms_played, t.duration_ms "
            "FROM plays_tagged p JOIN tracks_valid t USING (track_id) WHERE p.reason IS NULL"
        )
        con.execute(
            "CREATE TEMP TABLE thumbs_valid AS SELECT DISTINCT user_id, track_id, "
            "_rated_at AS event_at, _value AS value FROM thumbs_tagged WHERE reason IS NULL"
        )
        completed = f"ms_played >= least({COMPLETED_MS}, duration_ms / 2)"
        played = (
            "SELECT user_id, track_id, count(*) AS plays, "
            f"sum(CAST({completed} AS INTEGER)) AS completed, min(event_at) AS first_played_at, "
            "max(event_at) AS last_played_at FROM plays_valid GROUP BY ALL"
        )
        rated = (
            "SELECT user_id, track_id, max({'e': event_at, 'v': value}) AS _latest, "
            "min(event_at) AS first_rated_at FROM thumbs_valid GROUP BY ALL"
        )
        joined = (
            "SELECT user_id, track_id, CAST(coalesce(plays, 0) AS INTEGER) AS plays, "
            "CAST(coalesce(completed, 0) AS INTEGER) AS completed, "
            "CAST(coalesce(plays, 0) - coalesce(completed, 0) AS INTEGER) AS skips, "
            "CAST(coalesce(_latest.v, 0) AS INTEGER) AS thumb, "
            f"{_first('first_played_at', 'first_rated_at', 'least')} AS first_event_at, "
            f"{_first('last_played_at', '_latest.e', 'greatest')} AS last_event_at "
            f"FROM ({played}) FULL OUTER JOIN ({rated}) USING (user_id, track_id)"
        )
        interactions = (
            "SELECT user_id, track_id, plays, completed, skips, thumb, "
            "CAST(first_event_at AS TIMESTAMP) AS first_event_at, "
            "CAST(last_event_at AS TIMESTAMP) AS last_event_at, "
            f"{_confidence(params, cutoff)} AS confidence FROM ({joined})"
        )
        con.execute(f"COPY ({interactions}) TO {_text(str(out_dir / 'interactions.parquet'))}")
        if users_files:
            users = "SELECT * FROM users_valid"
        else:
            users = (
                "SELECT DISTINCT user_id, NULL::VARCHAR AS display_name FROM "
                f"read_parquet({_text(str(out_dir / 'interactions.parquet'))})"
            )
        con.execute(f"COPY ({users}) TO {_text(str(out_dir / 'users.parquet'))}")
        quarantine = " UNION ALL ".join(
            f"SELECT {_text(kind)} AS kind, reason, source_file, "
            f"{'CAST(user_id AS VARCHAR)' if kind in ('plays', 'thumbs', 'users') else 'NULL'} "
            f"AS user_id, "
            f"{'CAST(track_id AS VARCHAR)' if kind in ('plays', 'thumbs', 'tracks') else 'NULL'} "
            f"AS track_id FROM {kind}_tagged WHERE reason IS NOT NULL"
            for kind in kinds
        )
        con.execute(f"COPY ({quarantine}) TO {_text(str(out_dir / 'quarantine.parquet'))}")
        summary: dict[str, Any] = {"events_read": {}, "duplicates_dropped": {}, "quarantined": {}}
        for kind in ("plays", "thumbs"):
            read, valid = _one(
                con, f"SELECT count(*), count(*) FILTER (reason IS NULL) FROM {kind}_tagged"
            )
            (distinct,) = _one(con, f"SELECT count(*) FROM {kind}_valid")
            summary["events_read"][kind] = read
            summary["duplicates_dropped"][kind] = valid - distinct
        for kind, reason, count in con.execute(
            f"SELECT kind, reason, count(*) FROM ({quarantine}) GROUP BY ALL"
        ).fetchall():
            summary["quarantined"].setdefault(kind, {})[reason] = count
        for name in ("interactions", "users"):
            path = _text(str(out_dir / f"{name}.parquet"))
            (summary[name],) = _one(con, f"SELECT count(*) FROM read_parquet({path})")
        return summary
    finally:
        con.close()


def duckdb_aggregate(data_dir: Path, out_dir: Path, cutoff: dt.datetime = DEFAULT_CUTOFF) -> float:
    """The wall seconds of :func:`run_duckdb` on ``data_dir`` into ``out_dir`` (default
    cut-off: the week of benchmarks/scale.py, 2026-11-16)."""
    started = time.perf_counter()
    run_duckdb(Path(data_dir), Path(out_dir), cutoff)
    return time.perf_counter() - started


# ------------------------------------------------------------------------- the comparison


def _spark_child(data_dir: Path, out_dir: Path, cutoff: dt.datetime) -> None:
    """Run the Spark job here as ``cratedigger aggregate`` does (settings from the
    environment; the session and its JVM started and stopped); print its summary."""
    from dataclasses import asdict

    from jobs.aggregate import AggregationParams, AggregationPaths, run_aggregation
    from jobs.spark import spark_session
    from recsys.settings import load_settings

    settings = load_settings()
    params = AggregationParams.from_settings(settings, cutoff)
    with spark_session(
        settings.spark_master,
        shuffle_partitions=settings.spark_shuffle_partitions,
        driver_memory=settings.spark_driver_memory,
    ) as spark:
        summary = run_aggregation(
            spark, data_dir, AggregationPaths(out_dir / "agg", out_dir / "quarantine"), params
        )
    print(json.dumps(asdict(summary)))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_spark(data_dir: Path, out_dir: Path, cutoff: dt.datetime) -> dict[str, Any]:
    """Wall and CPU seconds (the JVM included) of the Spark job in a child process."""
    cpu, started = _children_cpu(), time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--spark-child",
            str(data_dir),
            str(out_dir),
            cutoff.isoformat(),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": _children_cpu() - cpu, "summary": summary}


def time_duckdb(data_dir: Path, out_dir: Path, cutoff: dt.datetime) -> dict[str, Any]:
    cpu, started = time.process_time(), time.perf_counter()
    summary = run_duckdb(data_dir, out_dir, cutoff)
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "summary": summary,
    }


def _sorted_table(path: Path, keys: Sequence[str]) -> pa.Table:
    table = pq.read_table(path)
    table = table.select([c for c in table.column_names if c in INTERACTION_COLUMNS])
    return table.sort_by([(k, "ascending") for k in keys])


def compare_interactions(spark_dir: Path, duckdb_file: Path) -> str:
    """``same rows`` (every column equal), ``same rows, confidence within 1e-9 relative``, or
    a description of the first difference."""
    keys = ("user_id", "track_id")
    left = _sorted_table(spark_dir, keys)
    right = _sorted_table(duckdb_file, keys)
    if left.num_rows != right.num_rows:
        return f"DIFFERENT: {left.num_rows} rows (Spark) against {right.num_rows} (DuckDB)"
    exact = True
    for name in INTERACTION_COLUMNS:
        a, b = left.column(name).to_pylist(), right.column(name).to_pylist()
        if name == "confidence":
            if a != b:
                exact = False
                worst = max(
                    (abs(x - y) / max(abs(x), 1e-300) for x, y in zip(a, b, strict=True)),
                    default=0.0,
                )
                if not worst <= 1e-9 or any(math.isnan(x) for x in a):
                    return f"DIFFERENT: confidence differs by up to {worst:.3g} relative"
            continue
        if name.endswith("_at"):
            a = [None if v is None else v.replace(tzinfo=None) for v in a]
            b = [None if v is None else v.replace(tzinfo=None) for v in b]
        if a != b:
            index = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
            return f"DIFFERENT: column {name} at row {index}: {a[index]!r} against {b[index]!r}"
    return "same rows" if exact else "same rows, confidence within 1e-9 relative"


def compare_quarantine(spark_dir: Path, duckdb_file: Path) -> str:
    """Whether both quarantined the same rows: (kind, reason, source file, ids) as multisets."""
    columns = ["kind", "reason", "source_file", "user_id", "track_id"]

    def rows(path: Path) -> Counter[tuple[Any, ...]]:
        table = pq.read_table(path, columns=columns)
        return Counter(zip(*(table.column(c).to_pylist() for c in columns), strict=True))

    left, right = rows(spark_dir), rows(duckdb_file)
    if left == right:
        return f"same {sum(left.values())} rows (kind, reason, source_file, user_id, track_id)"
    only_spark, only_duckdb = sum((left - right).values()), sum((right - left).values())
    return f"DIFFERENT: {only_spark} only in Spark's, {only_duckdb} only in DuckDB's"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="a data directory of Parquet files")
    parser.add_argument("--cutoff", default=DEFAULT_CUTOFF.isoformat(), help="ISO time (UTC)")
    parser.add_argument("--work", type=Path, default=None, help="output folder (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--spark-child", nargs=3, metavar=("DATA", "OUT", "CUTOFF"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.spark_child:
        data, out, cutoff = args.spark_child
        _spark_child(Path(data), Path(out), dt.datetime.fromisoformat(cutoff))
        return 0
    if args.data is None:
        parser.error("--data is required")
    cutoff = dt.datetime.fromisoformat(args.cutoff)
    cutoff = cutoff.replace(tzinfo=dt.UTC) if cutoff.tzinfo is None else cutoff
    work = args.work or Path(tempfile.mkdtemp(prefix="aggregate-duckdb-"))
    duck = time_duckdb(args.data, work / "duckdb", cutoff)
    spark = time_spark(args.data, work / "spark", cutoff)
    figures = {
        "data": str(args.data),
        "cutoff": cutoff.isoformat(),
        "cores": os.cpu_count(),
        "spark_wall_s": round(spark["wall_s"], 2),
        "spark_job_s": spark["summary"]["seconds"],
        "spark_cpu_s": round(spark["cpu_s"], 2),
        "duckdb_wall_s": round(duck["wall_s"], 2),
        "duckdb_cpu_s": round(duck["cpu_s"], 2),
        "wall_ratio": round(spark["wall_s"] / duck["wall_s"], 2),
        "job_wall_ratio": round(spark["summary"]["seconds"] / duck["wall_s"], 2),
        "cpu_ratio": round(spark["cpu_s"] / duck["cpu_s"], 2),
        "interactions": compare_interactions(
            work / "spark" / "agg" / "interactions", work / "duckdb" / "interactions.parquet"
        ),
        "quarantine": compare_quarantine(
            work / "spark" / "quarantine", work / "duckdb" / "quarantine.parquet"
        ),
        "counts_equal": all(
            spark["summary"][k] == duck["summary"][k]
            for k in ("events_read", "duplicates_dropped", "quarantined", "interactions", "users")
        ),
        "events_read": spark["summary"]["events_read"],
    }
    for name, value in figures.items():
        print(f"{name:>16}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

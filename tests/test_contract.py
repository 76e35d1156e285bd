"""The data contract defined once: schemas, rules, confidence and their copies agree.

The Spark job (``jobs/aggregate.py``) and the benchmarks' pandas copy
(``benchmarks/datasets.py``) both run the contract's rule tables; here both validate the same
hostile and edge rows, as text (CSV, JSON Lines) and typed (Parquet), and must keep the same
rows and give each quarantined one the same reason. The numpy confidence must equal Spark's.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from benchmarks import datasets
from jobs.aggregate import (
    CORRUPT,
    AggregationParams,
    extract_table,
    split_events,
    stage_events,
    transform_interactions,
)
from recsys import contract
from recsys.contract import (
    MAX_MS_PLAYED,
    ConfidenceParams,
    confidence,
    is_completed,
)
from recsys.contract import QuarantineReason as R
from recsys.settings import ConfigError, Settings, load_settings
from tests.hostile import CUTOFF, T0, text_events

EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
TRACKS = {"t1": 200_000, "t-nl": 200_000, "t-quote": 200_000, "t40": 40_000}
Row = tuple[tuple[str | None, ...], R | None]


# ----------------------------------------------------------------------------- schemas


def test_the_column_tuples_derive_from_the_schemas() -> None:
    for table in contract.TABLES.values():
        assert table.schema.names == [*table.columns, *table.optional_columns]
        assert contract.TABLES[table.name] is table
    assert contract.PLAY_COLUMNS == ("user_id", "track_id", "played_at", "ms_played")
    assert contract.THUMB_COLUMNS == ("user_id", "track_id", "rated_at", "value")
    assert contract.TRACKS.schema.names == [
        *contract.TRACK_COLUMNS,
        *contract.TRACK_OPTIONAL_COLUMNS,
    ]
    assert contract.USER_COLUMNS == ("user_id",)
    assert contract.USERS.optional_columns == ("display_name",)
    assert contract.PLAYS.time_column == "played_at" and contract.THUMBS.time_column == "rated_at"
    with pytest.raises(ValueError, match="table 'artists' has no timestamp column"):
        _ = contract.ARTISTS.time_column
    assert contract.THUMBS.schema.field("value").type == pa.int32()
    with pytest.raises(ValueError, match="invalid_duration: an out_of_range rule needs bounds"):
        contract.Rule(R.INVALID_DURATION, contract.Check.OUT_OF_RANGE, "duration_ms")
    with pytest.raises(ValueError, match="missing_name: a blank rule needs a column"):
        contract.Rule(R.MISSING_NAME, contract.Check.BLANK)


def test_every_event_reason_has_a_rule_in_the_documented_order() -> None:
    plays = [rule.reason for rule in contract.PLAYS.rules]
    assert plays == [
        R.MALFORMED_RECORD,
        R.MISSING_USER_ID,
        R.MISSING_TRACK_ID,
        R.MISSING_TIMESTAMP,
        R.MISSING_MS_PLAYED,
        R.INVALID_USER_ID,
        R.INVALID_TRACK_ID,
        R.INVALID_TIMESTAMP,
        R.INVALID_MS_PLAYED,
        R.MS_PLAYED_OUT_OF_RANGE,
        R.TIMESTAMP_AFTER_CUTOFF,
        R.TIMESTAMP_BEFORE_EARLIEST,
        R.UNKNOWN_TRACK,
        R.UNKNOWN_USER,
    ]
    range_rule = contract.PLAYS.rules[plays.index(R.MS_PLAYED_OUT_OF_RANGE)]
    assert range_rule.bounds == (0, MAX_MS_PLAYED)
    thumbs = [rule.reason for rule in contract.THUMBS.rules]
    assert thumbs.count(R.INVALID_THUMB_VALUE) == 2  # not a number, or neither +1 nor -1
    assert contract.THUMBS.rules[9].values == (1, -1)


# -------------------------------------------------------------------------- confidence


def test_confidence_params_have_one_set_of_defaults_and_ranges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = ConfidenceParams()
    assert asdict(default) == {
        "skip_weight": 0.25,
        "thumb_up_boost": 2.0,
        "thumb_down_confidence": 2.0,
        "confidence_scale": "log",
        "half_life_days": 0.0,
    }
    assert Settings().confidence == default
    assert AggregationParams(CUTOFF).confidence == default
    assert Settings().earliest_event_at == contract.EARLIEST_EVENT
    for name, (low, high) in ConfidenceParams.RANGES.items():
        ConfidenceParams(**{name: low})
        ConfidenceParams(**{name: high})
        for bad in (low - 0.5, high + 0.5, math.nan):
            with pytest.raises(ValueError, match=f"{name} must be between {low} and {high}"):
                ConfidenceParams(**{name: bad})
            with pytest.raises(ValueError, match=name):
                AggregationParams(CUTOFF, **{name: bad})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=f"CRATEDIGGER_{name.upper()}"):
            load_settings(**{name: high + 1})
    with pytest.raises(ValueError, match="confidence_scale must be one of log, linear"):
        ConfidenceParams(confidence_scale="cubic")
    with pytest.raises(ConfigError, match="CRATEDIGGER_CONFIDENCE_SCALE"):
        load_settings(confidence_scale="cubic")
    monkeypatch.setenv("CRATEDIGGER_SKIP_WEIGHT", "0.5")
    monkeypatch.setenv("CRATEDIGGER_THUMB_DOWN_CONFIDENCE", "3")
    monkeypatch.setenv("CRATEDIGGER_CONFIDENCE_SCALE", "linear")
    monkeypatch.setenv("CRATEDIGGER_HALF_LIFE_DAYS", "90")
    assert load_settings().confidence == ConfidenceParams(0.5, 2.0, 3.0, "linear", 90.0)


def test_numpy_confidence_is_the_documented_formula() -> None:
    params = ConfidenceParams(skip_weight=0.5, thumb_up_boost=1.5, thumb_down_confidence=3.0)
    values = confidence([0, 3, 2, 0, 5], [0, 1, 4, 0, 5], [0, 1, -1, 1, 0], params)
    assert values.dtype == np.float64 and values.shape == (5,)
    expected = [0.0, math.log1p(3 + 0.5) + 1.5, -3.0, 1.5, math.log1p(5 + 2.5)]
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(confidence([1], [0], [0]), [math.log1p(1)])
    linear = ConfidenceParams(skip_weight=0.5, thumb_up_boost=1.5, confidence_scale="linear")
    np.testing.assert_allclose(
        confidence([3, 2, 0], [1, 4, 0], [1, -1, 1], linear), [3.5 + 1.5, -2.0, 1.5]
    )
    # A half-life halves a pair per half-life of age; thumbs-down do not fade; the floor holds.
    fading = ConfidenceParams(half_life_days=10.0)
    ages = [0.0, 10.0, 20.0, 10.0, 1000.0, -5.0]
    values = confidence([1, 1, 1, 0, 1, 1], [0] * 6, [0, 0, 0, -1, 0, 0], fading, ages)
    ln2 = math.log1p(1)
    expected = [ln2, ln2 / 2, ln2 / 4, -2.0, ln2 * contract.DECAY_FLOOR, ln2]
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="age_days is needed"):
        confidence([1], [0], [0], fading)
    with pytest.raises(ValueError, match="age_days has shape"):
        confidence([1], [0], [0], fading, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"one shape, got \(2,\), \(1,\) and \(2,\)"):
        confidence([1, 2], [0], [0, 0])
    np.testing.assert_array_equal(
        is_completed([20_000, 19_999, 30_000, 29_999], [40_000, 40_000, 600_000, 600_000]),
        [True, False, True, False],
    )


# --------------------------------------------------------- Spark and pandas: text rows


def _edge_plays() -> list[Row]:
    """Rows at and past every limit of the plays rules, with their reason."""
    rows: list[Row] = []
    amounts = {
        "0": None,
        str(MAX_MS_PLAYED): None,
        "-1": R.MS_PLAYED_OUT_OF_RANGE,
        str(MAX_MS_PLAYED + 1): R.MS_PLAYED_OUT_OF_RANGE,
        "1e3": None,
        "1000.0": None,
        "+5": None,
        " 1000 ": None,
        "1000\t": None,  # Spark's casts trim control characters too
        "1000d": None,  # Java's double syntax
        "12.5": R.INVALID_MS_PLAYED,
        "NaN": R.INVALID_MS_PLAYED,
        "-Infinity": R.INVALID_MS_PLAYED,
        "1e18": R.MS_PLAYED_OUT_OF_RANGE,
        "1e30": R.INVALID_MS_PLAYED,  # past bigint
        "9223372036854775807": R.MS_PLAYED_OUT_OF_RANGE,
        "9223372036854775808": R.MS_PLAYED_OUT_OF_RANGE,  # a float that Spark casts down
        "99999999999999999999": R.INVALID_MS_PLAYED,
        "\u0661\u0662": R.INVALID_MS_PLAYED,  # Arabic-Indic digits
        "0x10": R.INVALID_MS_PLAYED,
        "1_000": R.INVALID_MS_PLAYED,
        "\t": R.INVALID_MS_PLAYED,  # not blank: trim removes spaces only
        "": R.MISSING_MS_PLAYED,
        "   ": R.MISSING_MS_PLAYED,
        None: R.MISSING_MS_PLAYED,
    }
    rows += [(("u1", "t1", T0, ms), reason) for ms, reason in amounts.items()]
    times = {
        "2026-11-15T23:59:59.999999Z": None,
        "2026-11-16T00:00:00Z": R.TIMESTAMP_AFTER_CUTOFF,
        "2026-11-16T01:00:00+01:00": R.TIMESTAMP_AFTER_CUTOFF,
        "2026-11-15T19:00:00-05:00": R.TIMESTAMP_AFTER_CUTOFF,
        "2026-11-15T18:59:59-05:00": None,
        "2000-01-01T00:00:00Z": None,
        "2000-01-01T01:00:00+01:00": None,
        "1999-12-31T23:59:59.999999Z": R.TIMESTAMP_BEFORE_EARLIEST,
        "0001-01-01T00:00:00Z": R.TIMESTAMP_BEFORE_EARLIEST,
        "9999-12-31T23:59:59Z": R.TIMESTAMP_AFTER_CUTOFF,
        "2026-10-05": None,
        "2026-10-05 12:00": None,
        "2026-10-05 12:00:00": None,  # no offset: UTC
        "2026-10-05T12:00:00.123456789Z": None,
        "2026-10-05T12:00:00.Z": None,
        "\t2026-10-05T12:00:00Z\n": None,
        "2026-10-05T12:00:00+18:00": None,
        "2026-10-05T12:00:00+19:00": R.INVALID_TIMESTAMP,
        "2026-10-05T12:00:00+05:60": R.INVALID_TIMESTAMP,
        "2026-02-30T00:00:00Z": R.INVALID_TIMESTAMP,
        "2026-10-05T24:00:00Z": R.INVALID_TIMESTAMP,
        "2026-10-05T12:00:60Z": R.INVALID_TIMESTAMP,
        "2026-10-05t12:00:00z": R.INVALID_TIMESTAMP,
        "2026-10-05T12:00Z": R.INVALID_TIMESTAMP,  # an offset needs the seconds
        "20261005": R.INVALID_TIMESTAMP,
        "1762770000": R.INVALID_TIMESTAMP,
        "yesterday": R.INVALID_TIMESTAMP,
        "": R.MISSING_TIMESTAMP,
        None: R.MISSING_TIMESTAMP,
    }
    rows += [(("u1", "t1", at, "1000"), reason) for at, reason in times.items()]
    ids = {
        "x" * 128: None,
        "x" * 129: R.INVALID_USER_ID,
        "  u2  ": None,
        "u1\n": R.INVALID_USER_ID,
        "\tu1": R.INVALID_USER_ID,
        "-u1": R.INVALID_USER_ID,
        "a b": R.INVALID_USER_ID,
        "\u0661": R.INVALID_USER_ID,
        "   ": R.MISSING_USER_ID,
        None: R.MISSING_USER_ID,
    }
    rows += [((user, "t1", T0, "1000"), reason) for user, reason in ids.items()]
    rows += [
        (("u1", " t40 ", T0, "1000"), None),
        (("u1", "t 40", T0, "1000"), R.INVALID_TRACK_ID),
        (("u1", None, T0, "1000"), R.MISSING_TRACK_ID),
        # Several failures: the first in the rules' order.
        (("", "", "not a time", "x"), R.MISSING_USER_ID),
        (("bad id", "t1", "not a time", "-5"), R.INVALID_USER_ID),
        (("u9", "t1", "not a time", "-5"), R.INVALID_TIMESTAMP),
        (("u9", "t1", "1990-01-01", "99999999999"), R.MS_PLAYED_OUT_OF_RANGE),
        (("u9", "t-missing", "2026-11-20T00:00:00Z", "1"), R.TIMESTAMP_AFTER_CUTOFF),
        (("stranger", "t-missing", T0, "1"), R.UNKNOWN_TRACK),
        (("stranger", "t1", T0, "1"), R.UNKNOWN_USER),
    ]
    return rows


def _edge_thumbs() -> list[Row]:
    values = {
        "1": None,
        "-1": None,
        "+1": None,
        "1.0": None,
        "-1e0": None,
        "0": R.INVALID_THUMB_VALUE,
        "2": R.INVALID_THUMB_VALUE,
        "3000000000": R.INVALID_THUMB_VALUE,  # past int
        "true": R.INVALID_THUMB_VALUE,
        "": R.MISSING_VALUE,
        None: R.MISSING_VALUE,
    }
    return [(("u1", "t1", T0, value), reason) for value, reason in values.items()] + [
        (("stranger", "t1", T0, "1"), R.UNKNOWN_USER),
        (("u1", "t1", "2026-11-16T00:00:00Z", "1"), R.TIMESTAMP_AFTER_CUTOFF),
    ]


def _spark_validate(spark, kind: str, raw, users: set[str]) -> tuple[list[Any], list[Any]]:
    """The valid rows (``event_at`` in microseconds since the epoch) and the quarantined rows
    of Spark's ``stage_events`` and ``split_events``."""
    tracks = spark.createDataFrame(list(TRACKS.items()), "track_id string, duration_ms bigint")
    users_frame = spark.createDataFrame([(u,) for u in sorted(users)], "user_id string")
    valid, bad = split_events(
        stage_events(raw, kind, tracks=tracks, users=users_frame, cutoff=CUTOFF, earliest=EARLIEST),
        kind,
    )
    return valid.withColumn("event_at", F.unix_micros("event_at")).collect(), bad.collect()


def _same_valid_rows(kind: str, spark_valid: list[Any], pandas_valid: pd.DataFrame) -> None:
    amount = contract.TABLES[kind].columns[-1]
    assert Counter((r.user_id, r.track_id, r.event_at, r[amount]) for r in spark_valid) == Counter(
        pandas_valid[["user_id", "track_id", "us", amount]].itertuples(index=False)
    )


def _pandas_reasons(frame: pd.DataFrame, kind: str, users: set[str]):
    return datasets.validate_events(
        frame,
        kind,
        track_ids=pd.Index(list(TRACKS)),
        user_ids=pd.Index(sorted(users)),
        cutoff=CUTOFF,
        earliest=EARLIEST,
    )


@pytest.mark.spark
@pytest.mark.parametrize("kind", ["plays", "thumbs"])
def test_spark_and_pandas_give_every_text_row_the_same_reason(spark, kind: str) -> None:
    rows = text_events(kind) + (_edge_plays() if kind == "plays" else _edge_thumbs())
    columns = contract.TABLES[kind].columns
    # Every listener is known but those of unknown_user rows.
    users = {(f[0] or "").strip(" ") for f, _ in rows} - {
        (f[0] or "").strip(" ") for f, reason in rows if reason == R.UNKNOWN_USER
    }
    schema = ", ".join(f"`{c}` string" for c in (*columns, CORRUPT, "source_file"))
    raw = spark.createDataFrame(
        [(*fields, None, f"row-{i}") for i, (fields, _) in enumerate(rows)], schema
    )
    spark_valid, spark_bad = _spark_validate(spark, kind, raw, users)
    spark_reasons = {r.source_file: r.reason for r in spark_bad}
    frame = pd.DataFrame([fields for fields, _ in rows], columns=list(columns), dtype=object)
    pandas_valid, pandas_reasons = _pandas_reasons(frame, kind, users)

    for i, (fields, declared) in enumerate(rows):
        expected = None if declared is None else declared.value
        assert spark_reasons.get(f"row-{i}") == expected, (i, fields)
        assert pandas_reasons[i] == expected, (i, fields)
    assert len(spark_valid) + len(spark_bad) == len(rows)
    _same_valid_rows(kind, spark_valid, pandas_valid)


# ------------------------------------------------------- Spark and pandas: Parquet rows


def _typed_plays(folder: Path) -> None:
    """Parquet as the simulator (pyarrow) and pandas write it; user ids are the keys."""
    at = dt.datetime(2026, 10, 5, 12, tzinfo=dt.UTC)
    rows = [
        ("ty-ok", "t1", at, 1000),
        ("ty-cut", "t1", CUTOFF, 1000),
        ("ty-last", "t1", CUTOFF - dt.timedelta(microseconds=1), 1000),
        ("ty-early", "t1", EARLIEST - dt.timedelta(microseconds=1), 1000),
        ("ty-y1", "t1", dt.datetime(1, 1, 1, tzinfo=dt.UTC), 1000),
        ("ty-y9999", "t1", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), 1000),
        ("ty-neg", "t1", at, -1),
        ("ty-max", "t1", at, MAX_MS_PLAYED),
        ("ty-over", "t1", at, MAX_MS_PLAYED + 1),
        ("ty-big", "t1", at, 2**63 - 1),
        ("ty-no-ms", "t1", at, None),
        ("ty-no-time", "t1", None, 1000),
        (None, "t1", at, 1000),
        ("ty-t40", "t40", at, 20_000),
    ]
    table = pa.Table.from_pylist(
        [dict(zip(contract.PLAY_COLUMNS, row, strict=True)) for row in rows],
        schema=contract.PLAYS.schema,
    )
    pq.write_table(table, folder / "pyarrow.parquet")
    pd.DataFrame(
        {
            "user_id": ["pd-ns", "pd-nan", "pd-inf", "pd-half", "pd-huge", "pd-whole"],
            "track_id": ["t1"] * 6,
            "played_at": pd.to_datetime(
                ["2026-10-05T12:00:00.123456789Z"] + [T0] * 5, utc=True, format="ISO8601"
            ),
            "ms_played": [1000.0, math.nan, math.inf, 1000.5, 1e20, 2.0**40],
        }
    ).to_parquet(folder / "pandas.parquet")
    # Epoch seconds as an integer column: which unit? Not a time.
    pq.write_table(
        pa.table(
            {
                "user_id": ["ty-epoch"],
                "track_id": ["t1"],
                "played_at": pa.array([1762770000], pa.int64()),
                "ms_played": pa.array([1000], pa.int32()),
            }
        ),
        folder / "epoch.parquet",
    )


def _typed_thumbs(folder: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "user_id": ["th-up", "th-down", "th-zero", "th-two", "th-none", "th-max"],
                "track_id": ["t1"] * 6,
                "rated_at": pa.array([dt.datetime(2026, 10, 5, tzinfo=dt.UTC)] * 6),
                "value": pa.array([1, -1, 0, 2, None, 2**31 - 1], pa.int32()),
            }
        ),
        folder / "thumbs.parquet",
    )
    pd.DataFrame(
        {
            "user_id": ["pd-up", "pd-nan"],
            "track_id": ["t1", "t1"],
            "rated_at": pd.to_datetime([T0, T0], utc=True),
            "value": [1.0, math.nan],
        }
    ).to_parquet(folder / "pandas.parquet")


@pytest.mark.spark
@pytest.mark.parametrize("kind", ["plays", "thumbs"])
def test_spark_and_pandas_give_every_parquet_row_the_same_reason(
    spark, tmp_path: Path, kind: str
) -> None:
    (_typed_plays if kind == "plays" else _typed_thumbs)(tmp_path)
    frames = [pq.read_table(f).to_pandas() for f in sorted(tmp_path.glob("*.parquet"))]
    users = {u for frame in frames for u in frame["user_id"] if u is not None}
    raw = extract_table(spark, tmp_path, contract.TABLES[kind].columns)
    spark_valid, spark_bad = _spark_validate(spark, kind, raw, users)
    assert len(spark_valid) + len(spark_bad) == sum(map(len, frames))
    # The user ids are unique: they name the rows.
    by_user = {r.user_id: r.reason for r in spark_bad} | {r.user_id: None for r in spark_valid}
    pandas_valid = []
    for frame in frames:
        valid, reasons = _pandas_reasons(frame, kind, users)
        assert dict(zip(frame["user_id"], reasons, strict=True)) == {
            user: by_user[user] for user in frame["user_id"]
        }
        pandas_valid.append(valid)
    _same_valid_rows(kind, spark_valid, pd.concat(pandas_valid))
    # The boundaries as declared.
    if kind == "plays":
        assert {u: by_user[u] for u in ("ty-cut", "ty-last", "ty-early", "ty-big")} == {
            "ty-cut": R.TIMESTAMP_AFTER_CUTOFF.value,
            "ty-last": None,
            "ty-early": R.TIMESTAMP_BEFORE_EARLIEST.value,
            "ty-big": R.MS_PLAYED_OUT_OF_RANGE.value,
        }
        assert (by_user["pd-nan"], by_user["pd-inf"]) == (
            R.MISSING_MS_PLAYED.value,
            R.INVALID_MS_PLAYED.value,
        )
        assert (by_user[None], by_user["ty-epoch"]) == (
            R.MISSING_USER_ID.value,
            R.INVALID_TIMESTAMP.value,
        )
    else:
        assert by_user["th-zero"] == by_user["th-max"] == R.INVALID_THUMB_VALUE.value
        assert by_user["pd-nan"] == R.MISSING_VALUE.value


# ------------------------------------------------------------- confidence: numpy and Spark


@pytest.mark.spark
@pytest.mark.parametrize(
    "params",
    [
        ConfidenceParams(),
        ConfidenceParams(0.5, 1.5, 3.0),
        ConfidenceParams(1.0, 0.0, 0.0),
        ConfidenceParams(0.5, 1.0, 2.0, "linear", 3650.0),  # ages of ~20,000 days: ~2 %
        ConfidenceParams(half_life_days=30.0),  # the floor
    ],
)
def test_numpy_confidence_equals_spark_confidence(spark, params: ConfidenceParams) -> None:
    rng = np.random.default_rng(11)
    durations = np.array([1, 40_000, 59_999, 60_000, 600_000])
    n_plays, n_thumbs = 3000, 600
    plays = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in rng.integers(0, 40, n_plays)],
            "track_id": [f"t{i}" for i in rng.integers(0, 25, n_plays)],
            "event_at": pd.to_datetime(rng.integers(0, 10**6, n_plays), unit="s", utc=True),
            "ms_played": rng.choice([0, 1, 19_999, 20_000, 29_999, 30_000, 10**6], n_plays),
        }
    )
    plays["duration_ms"] = durations[plays["track_id"].str[1:].astype(int) % len(durations)]
    thumbs = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in rng.integers(0, 40, n_thumbs)],
            "track_id": [f"t{i}" for i in rng.integers(0, 30, n_thumbs)],  # some never played
            "event_at": pd.to_datetime(rng.integers(0, 50, n_thumbs), unit="s", utc=True),
            "value": rng.choice([1, -1], n_thumbs).astype(np.int32),
        }
    )
    rows = transform_interactions(
        spark.createDataFrame(
            plays,
            "user_id string, track_id string, event_at timestamp, ms_played bigint, "
            "duration_ms bigint",
        ),
        spark.createDataFrame(
            thumbs, "user_id string, track_id string, event_at timestamp, value int"
        ),
        AggregationParams(CUTOFF, **asdict(params)),
    ).toPandas()
    completed = plays.assign(done=is_completed(plays["ms_played"], plays["duration_ms"]))
    counts = completed.groupby(["user_id", "track_id"])["done"].agg(["size", "sum"])
    pairs = rows.set_index(["user_id", "track_id"])
    played = pairs.loc[counts.index]
    np.testing.assert_array_equal(played["completed"], counts["sum"])
    np.testing.assert_array_equal(played["skips"], counts["size"] - counts["sum"])
    last = pd.to_datetime(rows["last_event_at"])  # the session's time zone is UTC
    last = last.dt.tz_localize("UTC") if last.dt.tz is None else last.dt.tz_convert("UTC")
    last_us = last.dt.as_unit("us").astype("int64").to_numpy()
    ages = contract.age_in_days(last_us, CUTOFF)
    np.testing.assert_allclose(
        confidence(rows["completed"], rows["skips"], rows["thumb"], params, ages),
        rows["confidence"],
        rtol=1e-9,
        atol=1e-12,
    )
    assert set(rows["thumb"]) == {-1, 0, 1}

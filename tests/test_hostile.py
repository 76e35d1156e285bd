"""The aggregation on hostile input: every row accounted for, every unreadable file named.

Two full aggregations (Spark runs are slow), in module fixtures: ``rows`` reads
:func:`tests.hostile.write_rows_dir` (a hostile row of every kind; every file readable, so the
default ``unreadable_files="fail"``) and ``files`` reads every file of
:data:`tests.hostile.UNREADABLE` beside good ones with ``unreadable_files="quarantine"``. With
``"fail"``, an unreadable file stops the run before or at Spark's first read of the events,
which is quick, so each has its own small run.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow.parquet as pq
import pytest

from jobs.aggregate import (
    FILE_KIND,
    AggregationParams,
    AggregationPaths,
    AggregationSummary,
    InputError,
    run_aggregation,
)
from recsys.contract import QuarantineReason as R
from tests.hostile import (
    CUTOFF,
    DUPLICATE,
    MILLION_TRACK,
    MILLION_USERS,
    UNREADABLE,
    Hostile,
    Row,
    expected_error,
    million_users,
    write_minimal,
    write_rows_dir,
    write_unreadable,
)

pytestmark = pytest.mark.spark

EVENTS = ("plays", "thumbs")


@dataclass
class Run:
    hostile: Hostile
    paths: AggregationPaths
    summary: AggregationSummary

    def table(self, name: str) -> list[dict[str, Any]]:
        return pq.read_table(getattr(self.paths, name)).to_pylist()


def _paths(root: Path) -> AggregationPaths:
    return AggregationPaths(root / "out", root / "quarantine")


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


@pytest.fixture(scope="module")
def rows(spark, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("hostile-rows")
    hostile = write_rows_dir(root)
    paths = _paths(root)
    return Run(
        hostile, paths, run_aggregation(spark, hostile.data, paths, AggregationParams(CUTOFF))
    )


def _matches(row: Row, quarantined: dict[str, Any]) -> bool:
    if quarantined["kind"] != row.kind:
        return False
    if row.where == "record":
        return row.key in (quarantined["record"] or "")
    return bool(quarantined[row.where] == row.key)


# ---------------------------------------------------------------------------- hostile rows


def test_every_hostile_row_is_found_back_with_its_reason(rows: Run) -> None:
    quarantine = rows.table("quarantine")
    bad = rows.hostile.quarantined()
    for row in bad:
        found = [q for q in quarantine if _matches(row, q)]
        assert [q["reason"] for q in found] == [row.reason], row.key[:80]
    # Nothing else is quarantined: no good row, no row twice.
    assert len(quarantine) == len(bad)


def test_rows_in_are_valid_plus_duplicates_plus_quarantined(rows: Run) -> None:
    summary, hostile = rows.summary, rows.hostile
    assert summary.events_read == {kind: hostile.written[kind] for kind in EVENTS}
    interactions = rows.table("interactions")
    valid = {
        # Counted from the written output: each valid play is one play of an interaction.
        "plays": sum(r["plays"] for r in interactions),
        # Only the latest thumb of a pair is written: the declared count, checked by pair in
        # test_valid_hostile_rows_reach_the_output_unchanged and test_a_million_thumbs.
        "thumbs": len(hostile.of("thumbs", None)) + MILLION_USERS * MILLION_USERS,
    }
    assert valid["plays"] == len(hostile.of("plays", None))
    for kind in EVENTS:
        quarantined = summary.quarantined.get(kind, {})
        assert quarantined == dict(Counter(r.reason for r in hostile.quarantined(kind)))
        assert summary.duplicates_dropped[kind] == len(hostile.of(kind, DUPLICATE))
        assert summary.events_read[kind] == (
            valid[kind] + summary.duplicates_dropped[kind] + sum(quarantined.values())
        ), kind
    for table in ("artists", "tracks", "users"):
        quarantined = sum(summary.quarantined.get(table, {}).values())
        assert getattr(summary, table) + quarantined == hostile.written[table], table
        assert getattr(summary, table) == len(hostile.of(table, None)), table
    assert summary.files_quarantined == []


def test_valid_hostile_rows_reach_the_output_unchanged(rows: Run) -> None:
    interactions = {r["user_id"]: r for r in rows.table("interactions")}
    for row in rows.hostile.of("plays", None) + rows.hostile.of("thumbs", None):
        assert row.key in interactions, row.key
    assert interactions["p-offset"]["last_event_at"] == dt.datetime(
        2026, 11, 10, 4, 30, tzinfo=dt.UTC
    )
    # pandas' nanoseconds, truncated to Spark's microseconds.
    assert interactions["pd-ns"]["last_event_at"] == dt.datetime(
        2026, 10, 5, 12, 0, 0, 123456, tzinfo=dt.UTC
    )
    assert interactions["p-dup"]["plays"] == 1
    assert interactions["th-float"]["thumb"] == 1 and interactions["th-down"]["thumb"] == -1

    tracks = {r["track_id"]: r for r in rows.table("tracks")}
    assert tracks["t-nl"]["title"] == "Line one\nline two"
    assert tracks["t-quote"]["title"] == 'Say "hi", then bye'
    assert tracks["t-float-duration"]["duration_ms"] == 200000
    assert tracks["t1"]["embedding"] == [0.5, 0.25] and tracks["t1"]["tags"] == ["rock"]
    # A bad optional value is no value; the track stays. Odd values are training's to judge.
    assert tracks["t-emb-text"]["embedding"] is None and tracks["t-emb-text"]["tags"] is None
    assert tracks["t-emb-str"]["embedding"] is None
    assert tracks["t-tags-str"]["tags"] is None
    assert tracks["t-emb-len"]["embedding"] == [1.0, 2.0, 3.0]
    nan, one = tracks["t-emb-nan"]["embedding"]
    assert math.isnan(nan) and one == 1.0
    assert tracks["t-emb-inf"]["embedding"] == [math.inf, 1.0]

    artists = {r["artist_id"]: r["name"] for r in rows.table("artists")}
    assert artists == {
        "a1": "Alpha",  # the byte order mark is not part of the header or the first id
        "a2": "'; DROP TABLE artists; --",
        "a3": "🎵 Ünïcödé \u202e\u200f",
    }
    users = {r["user_id"] for r in rows.table("users")}
    assert {"1=1--", "admin@example.com:80", "12345"} <= users


def test_a_million_thumbs_on_one_track(rows: Run) -> None:
    thumbs = {
        r["user_id"]: r["thumb"]
        for r in rows.table("interactions")
        if r["track_id"] == MILLION_TRACK and r["user_id"].startswith("m")
    }
    # The latest of each listener's thousand thumbs wins.
    assert thumbs == {user: 1 if i % 2 == 0 else -1 for i, user in enumerate(million_users())}
    assert rows.summary.events_read["thumbs"] >= MILLION_USERS * MILLION_USERS


def test_the_summary_file_holds_the_summary(rows: Run) -> None:
    written = json.loads(rows.paths.summary.read_text())
    assert written["events_read"] == rows.summary.events_read
    assert written["files_quarantined"] == []


# ------------------------------------------------------------------------ unreadable files


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_an_unreadable_file_fails_the_run_with_one_line_naming_it(
    spark, tmp_path: Path, name: str
) -> None:
    data = write_minimal(tmp_path / "data")
    path = write_unreadable(data / "events" / "plays", name)
    with pytest.raises(InputError) as error:
        run_aggregation(spark, data, _paths(tmp_path), AggregationParams(CUTOFF))
    assert expected_error(path, name).match(str(error.value)), str(error.value)
    assert error.value.path == path
    assert error.value.__cause__ is None  # no Java stack trace chained to it
    assert not (tmp_path / "out" / "interactions").exists()  # nothing published


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files without permission"
)
def test_a_file_without_read_permission_names_it(spark, tmp_path: Path) -> None:
    data = write_minimal(tmp_path / "data")
    locked = data / "events" / "plays" / "locked.csv"
    locked.write_text("user_id,track_id,played_at,ms_played\n")
    locked.chmod(0)
    try:
        with pytest.raises(
            InputError, match=re.escape(f"{locked}: cannot be read (Permission denied)") + r"\Z"
        ):
            run_aggregation(spark, data, _paths(tmp_path), AggregationParams(CUTOFF))
    finally:
        locked.chmod(0o600)


@pytest.fixture(scope="module")
def files(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[Path, str], Run]:
    """Every unreadable kind of file among good ones, with unreadable_files="quarantine"."""
    root = tmp_path_factory.mktemp("hostile-files")
    data = write_minimal(root / "data")
    kinds = {write_unreadable(data / "events" / "plays", name): name for name in UNREADABLE}
    kinds[write_unreadable(data / "events" / "thumbs", "truncated.csv.gz")] = "truncated.csv.gz"
    (data / "events" / "thumbs" / "good.csv").write_text(
        "user_id,track_id,rated_at,value\ngood,t1,2026-10-06T00:00:00Z,1\n"
    )
    paths = _paths(root)
    params = AggregationParams(CUTOFF, unreadable_files="quarantine")
    summary = run_aggregation(spark, data, paths, params)
    return kinds, Run(Hostile(data), paths, summary)


def test_quarantine_mode_records_each_unreadable_file_once(
    files: tuple[dict[Path, str], Run],
) -> None:
    kinds, run = files
    rows = [r for r in run.table("quarantine") if r["kind"] == FILE_KIND]
    assert sorted(_local(r["source_file"]) for r in rows) == sorted(kinds)
    for row in rows:
        path = _local(row["source_file"])
        assert row["reason"] == R.UNREADABLE_FILE.value
        assert (row["user_id"], row["track_id"]) == (None, None)
        # The same line as the run would fail with.
        assert expected_error(path, kinds[path]).match(row["record"]), row["record"]
    listed = {Path(f["path"]): f for f in run.summary.files_quarantined}
    assert sorted(listed) == sorted(kinds)
    assert {str(p): f["kind"] for p, f in listed.items() if p.parent.name == "thumbs"} == {
        str(p): "thumbs" for p in kinds if p.parent.name == "thumbs"
    }
    assert {f["error"] for f in listed.values()} == {r["record"] for r in rows}
    assert run.summary.quarantined[FILE_KIND] == {R.UNREADABLE_FILE.value: len(kinds)}


def test_quarantine_mode_aggregates_the_readable_files(files: tuple[dict[Path, str], Run]) -> None:
    _, run = files
    # Rows of an unreadable file are not read, even those Spark read before it failed.
    assert run.summary.events_read == {"plays": 1, "thumbs": 1}
    assert run.summary.duplicates_dropped == {"plays": 0, "thumbs": 0}
    assert {k: v for k, v in run.summary.quarantined.items() if k != FILE_KIND} == {}
    [interaction] = run.table("interactions")
    assert (interaction["user_id"], interaction["plays"], interaction["thumb"]) == ("good", 1, 1)


@pytest.mark.parametrize(
    ("name", "write", "message"),
    [
        (
            "tracks.csv",
            lambda p: p.write_text("t1,One,a1,200000\n"),
            "no header line; expected columns track_id,title,artist_id,duration_ms "
            "(the first line is 't1,One,a1,200000')",
        ),
        (  # found unreadable only when Spark reads it
            "artists.csv.gz",
            lambda p: p.write_bytes(
                gzip.compress(b"artist_id,name\n" + b"a1,Alpha\n" * 99999)[:999]
            ),
            "not a readable gzip file (EOFException: Unexpected end of input stream)",
        ),
    ],
    ids=["headerless-tracks", "truncated-artists"],
)
def test_an_unreadable_catalog_file_fails_even_in_quarantine_mode(
    spark, tmp_path: Path, name: str, write: Callable[[Path], Any], message: str
) -> None:
    # Without its catalog, every event would be quarantined as unknown_track: the week would
    # be built from nothing, behind a quarantine of every row.
    data = write_minimal(tmp_path / "data")
    path = data / "catalog" / name
    (data / "catalog" / f"{name.split('.')[0]}.csv").unlink()
    write(path)
    params = AggregationParams(CUTOFF, unreadable_files="quarantine")
    with pytest.raises(InputError) as error:
        run_aggregation(spark, data, _paths(tmp_path), params)
    assert str(error.value) == f"{path}: {message}"

"""The Spark aggregation job: quarantine, deduplication, formats, confidence, hostile input.

``run_aggregation`` is slow (many small Spark jobs), so it runs four times in this file, in two
module-scoped fixtures: ``messy`` (one data directory holding a bad row of every kind, hostile
rows and duplicates) and ``by_format`` (one small world written as Parquet, CSV and JSONL).
Three more calls raise InputError before any Spark action. Everything else calls the transform
functions on small hand-built frames. Outputs are read back with pyarrow, which is much faster
than a Spark action.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.aggregate import (
    CORRUPT,
    AggregationParams,
    AggregationPaths,
    AggregationSummary,
    InputError,
    extract_table,
    list_files,
    main,
    parse_arguments,
    run_aggregation,
    split_events,
    stage_events,
    transform_interactions,
)
from recsys.contract import PLAY_COLUMNS, THUMB_COLUMNS
from recsys.contract import QuarantineReason as R
from recsys.settings import ConfigError, load_settings
from tests.worlds import World, write_rows

CUTOFF = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
T0 = "2026-10-05T12:00:00Z"
PLAY_HEADER = ",".join(PLAY_COLUMNS)
MEGABYTE_ID = "x" * 1_000_000


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _csv(path: Path, header: str, lines: list[str]) -> Path:
    return _write(path, "".join(f"{line}\n" for line in [header, *lines]))


def _local(uri: str) -> Path:
    """``file:/tmp/x.csv`` (Spark's ``_metadata.file_path``) -> ``/tmp/x.csv``."""
    return Path(unquote(urlparse(uri).path))


def _rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def _by_pair(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["user_id"], r["track_id"]): r for r in rows}


# ------------------------------------------------------------------ the messy data directory
#
# Every events line is written together with the reason it must be quarantined for (None: it
# is good). The expected quarantine is derived from these declarations; the job computes the
# actual one.

BAD_PLAYS_CSV: list[tuple[str, R | None]] = [
    (f"u1,t1,{T0}", R.MALFORMED_RECORD),  # 3 fields instead of 4
    (f",t1,{T0},1000", R.MISSING_USER_ID),
    (f"u1,,{T0},1000", R.MISSING_TRACK_ID),
    ("u1,t1,,1000", R.MISSING_TIMESTAMP),
    (f"u1,t1,{T0},", R.MISSING_MS_PLAYED),
    (f"u 1,t1,{T0},1000", R.INVALID_USER_ID),
    ("u1,t1,yesterday,1000", R.INVALID_TIMESTAMP),
    (f"u1,t1,{T0},12.5", R.INVALID_MS_PLAYED),
    (f"u1,t1,{T0},-1", R.MS_PLAYED_OUT_OF_RANGE),
    (f"u1,t1,{T0},86400001", R.MS_PLAYED_OUT_OF_RANGE),
    ("u1,t1,2026-11-16T00:00:00Z,1000", R.TIMESTAMP_AFTER_CUTOFF),  # exactly the cutoff
    ("u1,t1,1999-12-31T23:59:59Z,1000", R.TIMESTAMP_BEFORE_EARLIEST),
    (f"u1,t_missing,{T0},1000", R.UNKNOWN_TRACK),
    (f"u_stranger,t1,{T0},1000", R.UNKNOWN_USER),
]


def _play_json(user_id: Any, track_id: Any = "t1", played_at: Any = T0, ms: Any = 1000) -> str:
    return json.dumps(
        {"user_id": user_id, "track_id": track_id, "played_at": played_at, "ms_played": ms}
    )


BAD_PLAYS_JSONL: list[tuple[str, R | None]] = [
    ('{"user_id": "u1", "track_id": ', R.MALFORMED_RECORD),  # not JSON
    (_play_json("<script>alert(1)</script>"), R.INVALID_USER_ID),
    (_play_json("u" * 200), R.INVALID_USER_ID),
    (_play_json("u1\n"), R.INVALID_USER_ID),  # a trailing newline is not part of an id
    (_play_json("u1", "t1\u200f"), R.INVALID_TRACK_ID),  # right-to-left mark
    (_play_json("u1", "t1", "2026-10-05T12:00:00Z", 2**70), R.INVALID_MS_PLAYED),  # > bigint
]

HOSTILE_PLAYS_CSV: list[tuple[str, R | None]] = [
    (f"{MEGABYTE_ID},t1,{T0},1000", R.INVALID_USER_ID),  # a 1 MB field
    (f"u\x001,t1,{T0},1000", R.INVALID_USER_ID),  # NUL
    (f"u1,t1\x1b[31m,{T0},1000", R.INVALID_TRACK_ID),  # terminal escape sequence
    (f'"\'; DROP TABLE users; --",t1,{T0},1000', R.INVALID_USER_ID),
    (f"u1\u202e,t1,{T0},1000", R.INVALID_USER_ID),  # right-to-left override
    (" u2 ,t1, 2026-10-06T12:00:00Z , 1000 ", None),  # padded with spaces: trimmed, good
]

GOOD_PLAYS_CSV: list[tuple[str, R | None]] = [
    (f"u1,t1,{T0},200000", None),  # also in good.jsonl: an exact duplicate
    ("u1,t2,2026-10-05T13:00:00Z,10000", None),  # t2 lasts 40 s: 10 s is a skip
    ("u2,t1,2000-01-01T00:00:00Z,30000", None),  # the earliest accepted instant
    ("u2,t2,2026-11-15T23:59:59Z,86400000", None),  # last second before the cutoff; 24 h
]

GOOD_PLAYS_JSONL: list[tuple[str, R | None]] = [
    (_play_json("u1", "t1", T0, 200000), None),  # duplicate of good.csv's first line
    (_play_json("u3", "t1", "2026-10-07T08:00:00Z", 0), None),
]

REORDERED_HEADER = "ms_played,played_at,track_id,user_id"
REORDERED_CSV: list[tuple[str, R | None]] = [("15000,2026-10-08T09:00:00Z,t2,u3", None)]

GZIPPED_CSV: list[tuple[str, R | None]] = [
    ("u4,t1,2026-10-09T10:00:00Z,100000", None),
    ("u4,t1,2026-10-09T10:00:00Z,100000", None),  # duplicate inside one file
]

#: (listener, track) -> (plays, completed) after validation and deduplication.
MESSY_INTERACTIONS = {
    ("u1", "t1"): (1, 1),
    ("u1", "t2"): (1, 0),
    ("u2", "t1"): (2, 1),  # 30 s on a 200 s track completes; the padded 1 s play skips
    ("u2", "t2"): (1, 1),
    ("u3", "t1"): (1, 0),
    ("u3", "t2"): (1, 0),
    ("u4", "t1"): (1, 1),
}


@dataclass
class Run:
    data: Path
    paths: AggregationPaths
    summary: AggregationSummary
    files: dict[str, Path] = field(default_factory=dict)
    #: (kind, reason, source file) of every row that must be quarantined.
    expected_quarantine: list[tuple[str, str, Path]] = field(default_factory=list)
    plays_written: int = 0


def _write_messy(data: Path) -> tuple[dict[str, Path], list[tuple[str, str, Path]], int]:
    """Write the messy directory; return its files, the expected quarantine, plays written."""
    files = {
        "artists": _csv(
            data / "catalog" / "artists.csv",
            "artist_id,name",
            [
                "a1,Alpha",
                'a2,"\'; DROP TABLE artists; --"',  # free text may look like anything
                ",Nameless",
            ],
        ),
        "tracks": _write(
            data / "catalog" / "tracks.jsonl",
            "".join(
                json.dumps(t) + "\n"
                for t in [
                    {"track_id": "t1", "title": "One", "artist_id": "a1", "duration_ms": 200000},
                    {
                        "track_id": "t2",
                        "title": "<script>alert(1)</script>\u202e\x00",
                        "artist_id": "a2",
                        "duration_ms": 40000,
                    },
                    {
                        "track_id": "t_orphan",
                        "title": "Orphan",
                        "artist_id": "zz",
                        "duration_ms": 1000,
                    },
                    {"track_id": "t_zero", "title": "Zero", "artist_id": "a1", "duration_ms": 0},
                    {"track_id": "t1", "title": "One", "artist_id": "a1", "duration_ms": 200000},
                ]
            ),
        ),
        "users": _csv(
            data / "catalog" / "users.csv",
            "user_id,display_name",
            [
                "u1,Ann",
                'u2,"Bob""; DROP TABLE users; --"',
                "u3,",
                "u4,Dee",
                "bad user,Eve",
            ],
        ),
    }
    plays = data / "events" / "plays"
    event_files: list[tuple[str, str, list[tuple[str, R | None]]]] = [
        ("bad.csv", PLAY_HEADER, BAD_PLAYS_CSV),
        ("bad.jsonl", "", BAD_PLAYS_JSONL),
        ("hostile.csv", PLAY_HEADER, HOSTILE_PLAYS_CSV),
        ("good.csv", PLAY_HEADER, GOOD_PLAYS_CSV),
        ("good.jsonl", "", GOOD_PLAYS_JSONL),
        ("reordered.csv", REORDERED_HEADER, REORDERED_CSV),
        ("header_only.csv", PLAY_HEADER, []),
    ]
    expected = [
        ("artists", R.MISSING_ARTIST_ID.value, files["artists"]),
        ("tracks", R.UNKNOWN_ARTIST.value, files["tracks"]),
        ("tracks", R.INVALID_DURATION.value, files["tracks"]),
        ("tracks", R.DUPLICATE_ID.value, files["tracks"]),
        ("users", R.INVALID_USER_ID.value, files["users"]),
    ]
    written = 0
    for name, header, lines in event_files:
        text = [line for line, _ in lines]
        files[name] = (
            _csv(plays / name, header, text)
            if header
            else _write(plays / name, "".join(f"{line}\n" for line in text))
        )
        expected += [("plays", reason.value, files[name]) for _, reason in lines if reason]
        written += len(lines)
    files["gzipped"] = plays / "part-7.csv.gz"
    with gzip.open(files["gzipped"], "wt", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in [PLAY_HEADER] + [x for x, _ in GZIPPED_CSV]))
    written += len(GZIPPED_CSV)
    # Files this job must skip: hidden files and Spark's markers.
    _write(plays / ".DS_Store", "\x00\x01binary")
    _write(plays / "_SUCCESS", "")
    # No events/thumbs folder at all: allowed, there are just no thumbs.
    return files, expected, written


@pytest.fixture(scope="module")
def messy(spark, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("messy")
    files, expected, written = _write_messy(root / "data")
    paths = AggregationPaths(root / "out", root / "quarantine")
    summary = run_aggregation(spark, root / "data", paths, AggregationParams(CUTOFF))
    return Run(root / "data", paths, summary, files, expected, written)


@pytest.mark.spark
def test_every_bad_row_is_quarantined_with_its_reason_and_file(messy: Run) -> None:
    quarantine = _rows(messy.paths.quarantine)
    actual = Counter((r["kind"], r["reason"], _local(r["source_file"])) for r in quarantine)
    assert actual == Counter(messy.expected_quarantine)
    # The summary reports what the quarantine dataset holds.
    assert messy.summary.quarantined == {
        kind: dict(Counter(r["reason"] for r in quarantine if r["kind"] == kind))
        for kind in ("artists", "tracks", "users", "plays")
    }
    assert messy.summary.quarantined["plays"][R.MS_PLAYED_OUT_OF_RANGE.value] == 2
    assert messy.summary.quarantined["plays"][R.INVALID_USER_ID.value] == 8

    by_reason = {(r["kind"], r["reason"]): r for r in quarantine}
    malformed = [r for r in quarantine if r["reason"] == R.MALFORMED_RECORD.value]
    # A malformed line keeps its raw text, so it can be inspected and replayed.
    assert sorted(r["record"] for r in malformed) == sorted(
        [BAD_PLAYS_CSV[0][0], BAD_PLAYS_JSONL[0][0]]
    )
    unknown_user = by_reason[("plays", R.UNKNOWN_USER.value)]
    assert (unknown_user["user_id"], unknown_user["track_id"]) == ("u_stranger", "t1")
    assert json.loads(unknown_user["record"]) == {
        "user_id": "u_stranger",
        "track_id": "t1",
        "played_at": T0,
        "ms_played": "1000",
    }


@pytest.mark.spark
def test_nothing_is_lost_quarantined_plus_aggregated_plus_duplicates_is_rows_read(
    messy: Run,
) -> None:
    summary = messy.summary
    written = messy.plays_written
    assert written == 35
    interactions = _rows(messy.paths.interactions)
    aggregated = sum(r["plays"] for r in interactions)
    quarantined = sum(summary.quarantined["plays"].values())
    assert (quarantined, aggregated, summary.duplicates_dropped["plays"]) == (25, 8, 2)
    assert quarantined + aggregated + summary.duplicates_dropped["plays"] == written
    assert summary.events_read == {"plays": written, "thumbs": 0}
    # Catalog rows: validated + quarantined = written.
    assert summary.artists + sum(summary.quarantined["artists"].values()) == 3
    assert summary.tracks + sum(summary.quarantined["tracks"].values()) == 5
    assert summary.users + sum(summary.quarantined["users"].values()) == 5
    assert (summary.artists, summary.tracks, summary.users) == (2, 2, 4)
    assert json.loads(messy.paths.summary.read_text())["events_read"] == summary.events_read


@pytest.mark.spark
def test_good_rows_of_every_file_and_format_are_aggregated(messy: Run) -> None:
    interactions = _by_pair(_rows(messy.paths.interactions))
    assert {pair: (r["plays"], r["completed"]) for pair, r in interactions.items()} == (
        MESSY_INTERACTIONS
    )
    for row in interactions.values():
        assert row["skips"] == row["plays"] - row["completed"]
        assert row["thumb"] == 0  # no thumbs folder
        assert row["confidence"] == pytest.approx(
            math.log1p(row["completed"] + 0.25 * row["skips"])
        )
    # Boundary instants: 2000-01-01T00:00Z and one second before the cutoff are accepted.
    assert interactions[("u2", "t2")]["last_event_at"] == utc(2026, 11, 15, 23, 59, 59)
    assert interactions[("u2", "t1")]["last_event_at"] == utc(2026, 10, 6, 12)
    users = {r["user_id"]: r["display_name"] for r in _rows(messy.paths.users)}
    assert users == {"u1": "Ann", "u2": 'Bob"; DROP TABLE users; --', "u3": None, "u4": "Dee"}


@pytest.mark.spark
def test_exact_duplicates_are_dropped_once_and_not_double_counted(messy: Run) -> None:
    assert messy.summary.duplicates_dropped == {"plays": 2, "thumbs": 0}
    interactions = _by_pair(_rows(messy.paths.interactions))
    # (u1, t1) is in good.csv and good.jsonl; (u4, t1) twice in the gzipped CSV.
    assert interactions[("u1", "t1")]["plays"] == 1
    assert interactions[("u4", "t1")]["plays"] == 1
    assert interactions[("u4", "t1")]["confidence"] == pytest.approx(math.log1p(1))


@pytest.mark.spark
def test_hostile_rows_are_kept_verbatim_in_quarantine_and_catalog(messy: Run) -> None:
    quarantine = _rows(messy.paths.quarantine)
    hostile = [r for r in quarantine if _local(r["source_file"]) == messy.files["hostile.csv"]]
    assert sorted(r["user_id"] for r in hostile) == sorted(
        [MEGABYTE_ID, "u\x001", "u1", "'; DROP TABLE users; --", "u1\u202e"]
    )
    assert {r["track_id"] for r in hostile} == {"t1", "t1\x1b[31m"}
    big = next(r for r in hostile if r["user_id"] == MEGABYTE_ID)
    assert len(big["record"]) > 1_000_000
    tracks = {r["track_id"]: r for r in _rows(messy.paths.tracks)}
    assert tracks["t2"]["title"] == "<script>alert(1)</script>\u202e\x00"
    assert tracks["t1"]["duration_ms"] == 200000
    artists = {r["artist_id"]: r["name"] for r in _rows(messy.paths.artists)}
    assert artists == {"a1": "Alpha", "a2": "'; DROP TABLE artists; --"}


# ------------------------------------------------------------- one world in three formats

FORMAT_WORLD = World(
    artists=[{"artist_id": "a1", "name": "Alpha"}, {"artist_id": "a2", "name": "Bêta \u05d0"}],
    tracks=[
        {
            "track_id": "t40",
            "title": "Short",
            "artist_id": "a1",
            "duration_ms": 40_000,
            "released_at": dt.date(2020, 1, 31),
            "embedding": [0.5, 0.25],
        },
        {
            "track_id": "t600",
            "title": "Long",
            "artist_id": "a1",
            "duration_ms": 600_000,
            "released_at": dt.date(2021, 2, 1),
            "embedding": [1.0, -2.0],
        },
        {
            "track_id": "t200",
            "title": "Mid",
            "artist_id": "a2",
            "duration_ms": 200_000,
            "released_at": dt.date(2022, 3, 4),
            "embedding": [0.0, 0.125],
        },
    ],
    plays=[
        {"user_id": u, "track_id": t, "played_at": at, "ms_played": ms}
        for u, t, at, ms in [
            ("u1", "t40", utc(2026, 10, 5, 12), 20_000),
            ("u1", "t40", utc(2026, 10, 5, 13), 19_999),
            ("u1", "t600", utc(2026, 10, 6), 29_000),
            ("u1", "t600", utc(2026, 10, 7), 30_000),
            ("u2", "t200", utc(2026, 10, 8), 200_000),
            ("u2", "t40", utc(2026, 10, 9), 40_000),
            ("u3", "t600", CUTOFF, 1_000),
            ("u3", "tnope", utc(2026, 10, 9), 1_000),
            ("u4", "t200", utc(2026, 10, 9), 86_400_001),
        ]
    ],
    thumbs=[  # integer values (an int64 column in Parquet)
        {"user_id": "u1", "track_id": "t600", "rated_at": utc(2026, 10, 6, 1), "value": -1},
        {"user_id": "u1", "track_id": "t600", "rated_at": utc(2026, 10, 8), "value": 1},
        {"user_id": "u2", "track_id": "t200", "rated_at": utc(2026, 10, 10), "value": -1},
        {"user_id": "u5", "track_id": "t40", "rated_at": utc(2026, 10, 11), "value": 1},
        {"user_id": "u5", "track_id": "t40", "rated_at": utc(2026, 10, 11), "value": 1},
        {"user_id": "u2", "track_id": "t40", "rated_at": utc(2026, 10, 11), "value": 0},
        {"user_id": "u2", "track_id": "t40", "rated_at": utc(2026, 10, 12), "value": 5},
    ],
)
#: A second thumbs file whose values are text (a string column in Parquet).
TEXT_THUMBS = [
    {"user_id": "u3", "track_id": "t200", "rated_at": utc(2026, 10, 12), "value": "up"},
    {"user_id": "u3", "track_id": "t200", "rated_at": utc(2026, 10, 13), "value": "1"},
]
FORMAT_QUARANTINE = sorted(
    [
        ("plays", R.TIMESTAMP_AFTER_CUTOFF.value, "part-0", "u3", "t600"),
        ("plays", R.UNKNOWN_TRACK.value, "part-0", "u3", "tnope"),
        ("plays", R.MS_PLAYED_OUT_OF_RANGE.value, "part-0", "u4", "t200"),
        ("thumbs", R.INVALID_THUMB_VALUE.value, "part-0", "u2", "t40"),
        ("thumbs", R.INVALID_THUMB_VALUE.value, "part-0", "u2", "t40"),
        ("thumbs", R.INVALID_THUMB_VALUE.value, "part-1", "u3", "t200"),
    ]
)


def _format_expected() -> dict[tuple[str, str], tuple[int, int, int, int, float, dt.datetime]]:
    """(user, track) -> plays, completed, skips, thumb, confidence, last_event_at; by hand."""
    skip_weight, up, down = 0.25, 2.0, 2.0
    return {
        # 20 s of a 40 s track completes (half the track), 19.999 s does not.
        ("u1", "t40"): (2, 1, 1, 0, math.log1p(1 + skip_weight * 1), utc(2026, 10, 5, 13)),
        # 29 s of a 10 min track is a skip, 30 s completes; the later +1 beats the -1.
        ("u1", "t600"): (2, 1, 1, 1, math.log1p(1 + skip_weight) + up, utc(2026, 10, 8)),
        ("u2", "t200"): (1, 1, 0, -1, -down, utc(2026, 10, 10)),
        ("u2", "t40"): (1, 1, 0, 0, math.log1p(1), utc(2026, 10, 9)),
        ("u3", "t200"): (0, 0, 0, 1, up, utc(2026, 10, 13)),  # thumb without plays
        ("u5", "t40"): (0, 0, 0, 1, up, utc(2026, 10, 11)),
    }


@pytest.fixture(scope="module")
def by_format(spark, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    runs = {}
    for fmt in ("parquet", "csv", "jsonl"):
        root = tmp_path_factory.mktemp(f"world-{fmt}")
        data = FORMAT_WORLD.write(root / "data", fmt)
        write_rows(data / "events" / "thumbs" / "part-1", TEXT_THUMBS, fmt)
        paths = AggregationPaths(root / "out", root / "quarantine")
        runs[fmt] = Run(data, paths, run_aggregation(spark, data, paths, AggregationParams(CUTOFF)))
    return runs


def _interaction_tuples(run: Run) -> list[tuple[Any, ...]]:
    return sorted(tuple(r.values()) for r in _rows(run.paths.interactions))


@pytest.mark.spark
def test_parquet_csv_and_jsonl_give_identical_outputs(by_format: dict[str, Run]) -> None:
    parquet, csv, jsonl = by_format["parquet"], by_format["csv"], by_format["jsonl"]
    assert pq.read_schema(
        parquet.paths.interactions
        / next(p.name for p in parquet.paths.interactions.glob("*.parquet"))
    ).names == [
        "user_id",
        "track_id",
        "plays",
        "completed",
        "skips",
        "thumb",
        "first_event_at",
        "last_event_at",
        "confidence",
    ]
    assert _interaction_tuples(parquet) == _interaction_tuples(csv) == _interaction_tuples(jsonl)

    def quarantine(run: Run) -> list[tuple[Any, ...]]:
        return sorted(
            (r["kind"], r["reason"], _local(r["source_file"]).stem, r["user_id"], r["track_id"])
            for r in _rows(run.paths.quarantine)
        )

    for run in (parquet, csv, jsonl):
        assert quarantine(run) == FORMAT_QUARANTINE

    def summary(run: Run) -> dict[str, Any]:
        return {k: v for k, v in vars(run.summary).items() if k != "seconds"}

    assert summary(parquet) == summary(csv) == summary(jsonl)

    def tracks(run: Run) -> list[tuple[Any, ...]]:
        return sorted(
            (r["track_id"], r["title"], r["artist_id"], r["duration_ms"], r["released_at"])
            for r in _rows(run.paths.tracks)
        )

    assert (
        tracks(parquet)
        == tracks(csv)
        == tracks(jsonl)
        == [
            ("t200", "Mid", "a2", 200_000, dt.date(2022, 3, 4)),
            ("t40", "Short", "a1", 40_000, dt.date(2020, 1, 31)),
            ("t600", "Long", "a1", 600_000, dt.date(2021, 2, 1)),
        ]
    )
    embeddings = {
        fmt: {r["track_id"]: r["embedding"] for r in _rows(run.paths.tracks)}
        for fmt, run in by_format.items()
    }
    assert (
        embeddings["parquet"]
        == embeddings["jsonl"]
        == {"t40": [0.5, 0.25], "t600": [1.0, -2.0], "t200": [0.0, 0.125]}
    )
    assert set(embeddings["csv"].values()) == {None}  # CSV cannot carry lists
    artists = [sorted(_rows(run.paths.artists), key=str) for run in by_format.values()]
    assert artists[0] == artists[1] == artists[2]
    assert {"artist_id": "a2", "name": "Bêta \u05d0"} in artists[0]


@pytest.mark.spark
@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_world_in_each_format_gives_the_hand_computed_interactions(
    by_format: dict[str, Run], fmt: str
) -> None:
    run = by_format[fmt]
    actual = {
        pair: (
            r["plays"],
            r["completed"],
            r["skips"],
            r["thumb"],
            r["confidence"],
            r["last_event_at"],
        )
        for pair, r in _by_pair(_rows(run.paths.interactions)).items()
    }
    expected = _format_expected()
    assert actual.keys() == expected.keys()
    for pair, row in expected.items():
        assert actual[pair][:4] == row[:4], pair
        assert actual[pair][4] == pytest.approx(row[4], abs=1e-12), pair
        assert actual[pair][5] == row[5], pair
    assert run.summary.events_read == {"plays": 9, "thumbs": 9}
    assert run.summary.duplicates_dropped == {"plays": 0, "thumbs": 1}
    assert run.summary.quarantined == {
        "plays": {"timestamp_after_cutoff": 1, "unknown_track": 1, "ms_played_out_of_range": 1},
        "thumbs": {"invalid_thumb_value": 3},
    }
    # Without catalog/users, the listeners are those with an interaction.
    assert sorted(r["user_id"] for r in _rows(run.paths.users)) == ["u1", "u2", "u3", "u5"]
    assert run.summary.interactions == 6 and run.summary.users == 4


# ------------------------------------------------------------ transforms on hand-built frames

PLAY_SCHEMA = (
    "user_id string, track_id string, event_at timestamp, ms_played bigint, duration_ms bigint"
)
THUMB_SCHEMA = "user_id string, track_id string, event_at timestamp, value int"
RAW_PLAY_SCHEMA = ", ".join(f"{c} string" for c in (*PLAY_COLUMNS, CORRUPT, "source_file"))


@pytest.mark.spark
def test_transform_interactions_counts_thumbs_and_confidence(spark) -> None:
    plays = spark.createDataFrame(
        [
            ("u1", "t40", utc(2026, 1, 1), 20_000, 40_000),  # completed: half of 40 s
            ("u1", "t40", utc(2026, 1, 2), 19_999, 40_000),  # skip
            ("u1", "t40", utc(2026, 1, 3), 0, 40_000),  # skip
            ("u1", "t600", utc(2026, 1, 1), 29_000, 600_000),  # skip: under 30 s
            ("u1", "t600", utc(2026, 1, 2), 30_000, 600_000),  # completed: 30 s
            ("u1", "t600", utc(2026, 1, 3), 600_000, 600_000),  # completed
            ("u2", "t40", utc(2026, 1, 4), 40_000, 40_000),
            ("u3", "t40", utc(2026, 1, 4), 1_000, 40_000),
        ],
        PLAY_SCHEMA,
    )
    thumbs = spark.createDataFrame(
        [
            ("u1", "t600", utc(2026, 1, 5), -1),
            ("u1", "t600", utc(2026, 1, 6), 1),  # later: wins
            ("u2", "t40", utc(2026, 1, 6), 1),
            ("u2", "t40", utc(2026, 1, 7), -1),  # later: wins
            ("u3", "t40", utc(2026, 1, 8), 1),
            ("u3", "t40", utc(2026, 1, 8), -1),  # same instant: the larger value wins
            ("u4", "t600", utc(2026, 1, 9), 1),  # a thumb without plays
            ("u5", "t600", utc(2026, 1, 9), -1),
        ],
        THUMB_SCHEMA,
    )
    params = AggregationParams(
        CUTOFF, skip_weight=0.5, thumb_up_boost=1.5, thumb_down_confidence=3.0
    )
    rows = (
        transform_interactions(plays, thumbs, params)
        .withColumn(
            "last_event_at",
            F.col("last_event_at").cast("string"),  # UTC, the session time zone
        )
        .withColumn("first_event_at", F.col("first_event_at").cast("string"))
        .collect()
    )
    actual = {(r.user_id, r.track_id): r.asDict() for r in rows}
    assert len(rows) == len(actual) == 6
    expected = {
        ("u1", "t40"): (3, 1, 2, 0, math.log1p(1 + 0.5 * 2)),
        ("u1", "t600"): (3, 2, 1, 1, math.log1p(2 + 0.5 * 1) + 1.5),
        ("u2", "t40"): (1, 1, 0, -1, -3.0),
        ("u3", "t40"): (1, 0, 1, 1, math.log1p(0.5) + 1.5),
        ("u4", "t600"): (0, 0, 0, 1, 1.5),
        ("u5", "t600"): (0, 0, 0, -1, -3.0),
    }
    for pair, (n, completed, skips, thumb, confidence) in expected.items():
        row = actual[pair]
        assert (row["plays"], row["completed"], row["skips"], row["thumb"]) == (
            n,
            completed,
            skips,
            thumb,
        ), pair
        assert row["confidence"] == pytest.approx(confidence, abs=1e-12), pair
    # first_event_at is the earlier of the first play and the first thumb, last_event_at
    # the later of the last play and the last thumb.
    assert {pair: (r["first_event_at"], r["last_event_at"]) for pair, r in actual.items()} == {
        ("u1", "t40"): ("2026-01-01 00:00:00", "2026-01-03 00:00:00"),
        ("u1", "t600"): ("2026-01-01 00:00:00", "2026-01-06 00:00:00"),
        ("u2", "t40"): ("2026-01-04 00:00:00", "2026-01-07 00:00:00"),
        ("u3", "t40"): ("2026-01-04 00:00:00", "2026-01-08 00:00:00"),
        ("u4", "t600"): ("2026-01-09 00:00:00", "2026-01-09 00:00:00"),
        ("u5", "t600"): ("2026-01-09 00:00:00", "2026-01-09 00:00:00"),
    }


def _raw_plays(spark, rows: list[tuple[str | None, ...]]):
    return spark.createDataFrame([(*row, None, "file:/x.csv") for row in rows], RAW_PLAY_SCHEMA)


@pytest.mark.spark
def test_identifier_rules_and_first_failing_reason(spark) -> None:
    tracks = spark.createDataFrame([("t1", 200_000)], "track_id string, duration_ms bigint")
    ids = {
        "u1": None,
        "  u2  ": None,  # surrounding spaces are trimmed
        "user@example.com": None,
        "a.b:c+d=e_f-g": None,
        "x" * 128: None,
        "x" * 129: R.INVALID_USER_ID,
        "u1\n": R.INVALID_USER_ID,  # `$` would match before a final newline
        "u1\u2028": R.INVALID_USER_ID,  # line separator
        "u1\r": R.INVALID_USER_ID,
        "-u1": R.INVALID_USER_ID,
        "a b": R.INVALID_USER_ID,
        "<script>": R.INVALID_USER_ID,
        "u\x00": R.INVALID_USER_ID,
        "\u0661\u0662": R.INVALID_USER_ID,  # Arabic-Indic digits are not [0-9]
        "": R.MISSING_USER_ID,
        "   ": R.MISSING_USER_ID,
    }
    rows = [(user, "t1", T0, "1000") for user in ids]
    # Several failures: the first in the documented order is reported.
    rows += [
        ("", "", "not a time", "x"),  # missing user, missing track, bad time, bad amount
        ("bad id", "t1", "not a time", "-5"),  # invalid user before invalid timestamp
        ("u9", "t1", "not a time", "-5"),  # invalid timestamp before the amount
        ("u9", "t1", "1990-01-01", "99999999999"),  # out of range before before-2000
    ]
    valid, bad = split_events(
        stage_events(_raw_plays(spark, rows), "plays", tracks=tracks, users=None, cutoff=CUTOFF),
        "plays",
    )
    reasons = Counter(r.reason for r in bad.collect())
    assert reasons == Counter(
        {
            R.INVALID_USER_ID.value: 10,
            R.MISSING_USER_ID.value: 3,
            R.INVALID_TIMESTAMP.value: 1,
            R.MS_PLAYED_OUT_OF_RANGE.value: 1,
        }
    )
    assert sorted(r.user_id for r in valid.collect()) == sorted(
        ["u1", "u2", "user@example.com", "a.b:c+d=e_f-g", "x" * 128]
    )


@pytest.fixture
def new_york_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The Python process (not the JVM) on local time UTC-5 (a POSIX rule: no tzdata needed)."""
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.spark
def test_cutoff_and_2000_limit_do_not_depend_on_the_local_time_zone(
    spark, new_york_clock: None
) -> None:
    assert time.localtime(0).tm_gmtoff == -5 * 3600
    tracks = spark.createDataFrame([("t1", 200_000)], "track_id string, duration_ms bigint")
    rows = [
        ("before_cutoff", "t1", "2026-11-15T23:00:00Z", "1000"),
        ("at_0200_after", "t1", "2026-11-16T02:00:00Z", "1000"),  # 2 h after the UTC cutoff
        ("y2k_0200", "t1", "2000-01-01T02:00:00Z", "1000"),
        ("y1999", "t1", "1999-12-31T23:00:00Z", "1000"),
    ]
    valid, bad = split_events(
        stage_events(_raw_plays(spark, rows), "plays", tracks=tracks, users=None, cutoff=CUTOFF),
        "plays",
    )
    assert {r.user_id: r.reason for r in bad.collect()} == {
        "at_0200_after": R.TIMESTAMP_AFTER_CUTOFF.value,
        "y1999": R.TIMESTAMP_BEFORE_EARLIEST.value,
    }
    assert sorted(r.user_id for r in valid.collect()) == ["before_cutoff", "y2k_0200"]


@pytest.mark.spark
def test_empty_thumbs_folder_reads_as_no_thumbs(spark, tmp_path: Path) -> None:
    thumbs_dir = tmp_path / "thumbs"
    _write(thumbs_dir / "_SUCCESS", "")
    _write(thumbs_dir / ".part-0.parquet.crc", "\x00")
    assert list_files(thumbs_dir) == {}
    raw = extract_table(spark, thumbs_dir, THUMB_COLUMNS)
    assert raw.columns == [*THUMB_COLUMNS, CORRUPT, "source_file"]
    tracks = spark.createDataFrame([("t1", 200_000)], "track_id string, duration_ms bigint")
    thumbs, bad = split_events(
        stage_events(raw, "thumbs", tracks=tracks, users=None, cutoff=CUTOFF), "thumbs"
    )
    plays = spark.createDataFrame([("u1", "t1", utc(2026, 1, 1), 200_000, 200_000)], PLAY_SCHEMA)
    rows = transform_interactions(plays, thumbs, AggregationParams(CUTOFF)).collect()
    assert [(r.user_id, r.track_id, r.plays, r.thumb) for r in rows] == [("u1", "t1", 1, 0)]
    assert rows[0].confidence == pytest.approx(math.log1p(1))
    assert bad.count() == 0


@pytest.mark.spark
def test_awkward_csv_headers_parse_by_name(spark, tmp_path: Path) -> None:
    folder = tmp_path / "plays"
    _csv(folder / "spaces.csv", "user_id, track_id ,played_at,ms_played", [f"sp,t1,{T0},1"])
    _write(folder / "bom.csv", f"\ufeff{PLAY_HEADER}\nbom,t1,{T0},2\n")  # as Excel writes it
    _csv(
        folder / "extra.csv",
        "user_id,device,track_id,played_at,ms_played",
        [
            f"ex,phone,t1,{T0},3",
            f"short,t1,{T0},4",  # one field missing: a wrong field count, not a shifted row
            f"long,phone,t1,{T0},5,6",
        ],
    )
    _csv(folder / "trailing.csv", f"{PLAY_HEADER},", [f"tr,t1,{T0},7,"])
    _write(folder / "crlf.csv", f"{PLAY_HEADER}\r\ncr,t1,{T0},8\r\n")
    rows = {r.user_id: r for r in extract_table(spark, folder, PLAY_COLUMNS).collect()}
    assert sorted(rows) == ["bom", "cr", "ex", "long", "short", "sp", "tr"]
    for user, amount in (("sp", "1"), ("bom", "2"), ("ex", "3"), ("tr", "7"), ("cr", "8")):
        row = rows[user]
        assert (row.track_id, row.played_at, row.ms_played, row[CORRUPT]) == (
            "t1",
            T0,
            amount,
            None,
        ), user
    assert rows["short"][CORRUPT] == f"short,t1,{T0},4"
    assert rows["long"][CORRUPT] == f"long,phone,t1,{T0},5,6"


@pytest.mark.spark
def test_parquet_files_with_different_column_types_are_read_together(spark, tmp_path: Path) -> None:
    folder = tmp_path / "plays"
    folder.mkdir()
    base = {"user_id": ["p1"], "track_id": ["t1"]}
    pq.write_table(
        pa.table(
            {
                **base,
                "played_at": pa.array([utc(2026, 1, 1)]),
                "ms_played": pa.array([1], pa.int32()),
            }
        ),
        folder / "a.parquet",
    )
    pq.write_table(
        pa.table({**base, "played_at": pa.array([T0]), "ms_played": pa.array([2], pa.int64())}),
        folder / "b.parquet",
    )
    pq.write_table(
        pa.table({**base, "played_at": pa.array([T0]), "ms_played": pa.array(["3"])}),
        folder / "c.parquet",
    )
    rows = extract_table(spark, folder, PLAY_COLUMNS).collect()
    assert sorted((_local(r.source_file).name, r.ms_played) for r in rows) == [
        ("a.parquet", "1"),
        ("b.parquet", "2"),
        ("c.parquet", "3"),
    ]


@pytest.mark.spark
def test_typed_parquet_events_are_validated_typed_and_quarantined_as_text(
    spark, tmp_path: Path
) -> None:
    data = _minimal(tmp_path / "data")
    (data / "events" / "plays" / "part-0.csv").unlink()
    plays = data / "events" / "plays"
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1", "u1", "u2", "u3"],
                "track_id": ["t1", "t1", "t1", "t1"],
                "played_at": pa.array([utc(2026, 10, 5), utc(2026, 10, 6), None, utc(2026, 10, 7)]),
                "ms_played": pa.array([200_000, 1_000, 5_000, -5], pa.int32()),
            }
        ),
        plays / "typed.parquet",
    )
    thumbs = data / "events" / "thumbs"
    thumbs.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1", "u2", "u3"],
                "track_id": ["t1", "t1", "t1"],
                "rated_at": pa.array([utc(2026, 10, 8)] * 3),
                "value": pa.array([1, 7, 2**40], pa.int64()),
            }
        ),
        thumbs / "typed.parquet",
    )
    paths = _paths(tmp_path)
    summary = run_aggregation(spark, data, paths, AggregationParams(cutoff=CUTOFF))

    [pair] = _rows(paths.interactions)
    assert (pair["user_id"], pair["plays"], pair["completed"], pair["thumb"]) == ("u1", 2, 1, 1)
    quarantined = {(r["kind"], r["user_id"]): r for r in _rows(paths.quarantine)}
    assert {key: r["reason"] for key, r in quarantined.items()} == {
        ("plays", "u2"): R.MISSING_TIMESTAMP.value,
        ("plays", "u3"): R.MS_PLAYED_OUT_OF_RANGE.value,
        ("thumbs", "u2"): R.INVALID_THUMB_VALUE.value,
        ("thumbs", "u3"): R.INVALID_THUMB_VALUE.value,  # beyond int32: not a value
    }
    # The record holds the values as text, as it does for CSV and JSON Lines rows.
    assert json.loads(quarantined["plays", "u3"]["record"]) == {
        "user_id": "u3",
        "track_id": "t1",
        "played_at": "2026-10-07 00:00:00",
        "ms_played": "-5",
    }
    assert json.loads(quarantined["thumbs", "u2"]["record"])["value"] == "7"
    assert summary.events_read == {"plays": 4, "thumbs": 3}
    assert not paths.staged.exists()  # the validated events are scratch


# ----------------------------------------------------------------------------- clear errors


def _minimal(data: Path) -> Path:
    _csv(data / "catalog" / "artists.csv", "artist_id,name", ["a1,Alpha"])
    _csv(
        data / "catalog" / "tracks.csv",
        "track_id,title,artist_id,duration_ms",
        ["t1,One,a1,200000"],
    )
    _csv(data / "events" / "plays" / "part-0.csv", PLAY_HEADER, [f"u1,t1,{T0},1000"])
    return data


def _paths(tmp_path: Path) -> AggregationPaths:
    return AggregationPaths(tmp_path / "out", tmp_path / "quarantine")


@pytest.mark.spark
def test_unsupported_file_in_events_names_the_file(spark, tmp_path: Path) -> None:
    data = _minimal(tmp_path / "data")
    notes = _write(data / "events" / "plays" / "notes.txt", "remember to dedupe")
    with pytest.raises(InputError, match=r"notes\.txt: unsupported file type") as error:
        run_aggregation(spark, data, _paths(tmp_path), AggregationParams(CUTOFF))
    assert str(notes) in str(error.value)


@pytest.mark.spark
def test_missing_tracks_catalog_is_an_input_error(spark, tmp_path: Path) -> None:
    data = _minimal(tmp_path / "data")
    (data / "catalog" / "tracks.csv").unlink()
    with pytest.raises(InputError, match=r"catalog/tracks\.\{parquet,csv,jsonl\} not found"):
        run_aggregation(spark, data, _paths(tmp_path), AggregationParams(CUTOFF))


@pytest.mark.spark
def test_missing_plays_folder_is_an_input_error(spark, tmp_path: Path) -> None:
    data = _minimal(tmp_path / "data")
    (data / "events" / "plays" / "part-0.csv").unlink()
    (data / "events" / "plays").rmdir()
    with pytest.raises(InputError, match=r"events/plays not found"):
        run_aggregation(spark, data, _paths(tmp_path), AggregationParams(CUTOFF))


@pytest.mark.spark
def test_unreadable_files_are_input_errors_naming_the_file(spark, tmp_path: Path) -> None:
    cases = {
        "empty.csv": ("", r"empty\.csv: no header line; expected columns user_id,"),
        "twice.csv": ("user_id,track_id,user_id\nu1,t1,u2\n", r"twice\.csv: .*'user_id'"),
        "junk.parquet": ("this is not parquet", r"junk\.parquet: not a readable Parquet file"),
    }
    for name, (text, message) in cases.items():
        folder = tmp_path / name.split(".")[0]
        _write(folder / name, text)
        with pytest.raises(InputError, match=message):
            extract_table(spark, folder, PLAY_COLUMNS)


def test_list_files_skips_hidden_and_marker_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", "")
    _write(tmp_path / "2026" / "b.JSONL", "")
    _write(tmp_path / "c.csv.gz", "")
    _write(tmp_path / "_SUCCESS", "")
    _write(tmp_path / "_temporary" / "x.parquet", "")
    _write(tmp_path / ".hidden" / "y.csv", "")
    assert list_files(tmp_path) == {
        "csv": [tmp_path / "a.csv", tmp_path / "c.csv.gz"],
        "jsonl": [tmp_path / "2026" / "b.JSONL"],
    }


# ------------------------------------------------------------ valid files read in full (#10)


def _write_csv_rows(path: Path, rows: list[list[Any]]) -> Path:
    """Write ``rows`` with Python's csv module: RFC 4180 quoting, CRLF line ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.mark.spark
def test_csv_catalog_and_events_follow_rfc_4180(spark, tmp_path: Path) -> None:
    tracks = _write_csv_rows(
        tmp_path / "tracks" / "tracks.csv",
        [
            ["track_id", "title", "artist_id", "duration_ms"],
            ["t1", "Line one\nline two", "a1", 200000],
            ["t2", 'Say "hi"\r\nand, bye', "a1", 200000],
            ["t3", "Plain", "a1", 200000],
        ],
    )
    _write(tracks.parent / "broken.csv", "track_id,title,artist_id,duration_ms\nt4,Short\n")
    rows = {r.track_id: r for r in extract_table(spark, tracks.parent, TRACK_CATALOG).collect()}
    assert sorted(rows) == ["t1", "t2", "t3", "t4"]
    assert rows["t1"].title == "Line one\nline two"
    assert rows["t2"].title == 'Say "hi"\nand, bye'  # a quoted CRLF reads as LF
    assert [rows[t][CORRUPT] for t in ("t1", "t2", "t3")] == [None, None, None]
    assert rows["t4"][CORRUPT] == "t4,Short"  # a short line is still malformed

    plays = _write_csv_rows(
        tmp_path / "plays" / "part-0.csv",
        [
            ["user_id", "device", "track_id", "played_at", "ms_played"],
            ["u1", "phone\nmodel 7", "t1", T0, 1000],
            ["u2", 'tv "living room"', "t1", T0, 2000],
        ],
    )
    rows = extract_table(spark, plays.parent, PLAY_COLUMNS).collect()
    assert sorted((r.user_id, r.ms_played, r[CORRUPT]) for r in rows) == [
        ("u1", "1000", None),
        ("u2", "2000", None),
    ]

    # The price of RFC 4180: a stray opening quote runs to the next quote, here the end of the
    # file, and what it swallowed is one malformed record (as Python's csv module reads it).
    stray = _write(
        tmp_path / "stray" / "part-0.csv",
        f'{PLAY_HEADER}\nu1,"t1,{T0},1000\nu2,t1,{T0},2000\nu3,t1,{T0},3000\n',
    )
    [row] = extract_table(spark, stray.parent, PLAY_COLUMNS).collect()
    assert row[CORRUPT] == f'u1,"t1,{T0},1000\nu2,t1,{T0},2000\nu3,t1,{T0},3000'


TRACK_CATALOG = (
    "track_id",
    "title",
    "artist_id",
    "duration_ms",
    "released_at",
    "embedding",
    "tags",
)


def test_list_files_follows_directory_links_once(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "2026"
    _write(elsewhere / "a.csv", "")
    plays = tmp_path / "plays"
    _write(plays / "b.csv", "")
    (plays / "2026").symlink_to(elsewhere)
    (plays / "again").symlink_to(elsewhere)  # a second link to the same folder
    (plays / "2026" / "loop").symlink_to(plays)  # a link to an ancestor: no endless walk
    (plays / "c-link.csv").symlink_to(plays / "b.csv")  # a file reached twice
    assert list_files(plays) == {"csv": [plays / "2026" / "a.csv", plays / "b.csv"]}


@pytest.mark.spark
def test_parquet_written_by_pandas_with_nanosecond_times_is_read(spark, tmp_path: Path) -> None:
    import pandas as pd

    folder = tmp_path / "plays"
    folder.mkdir()
    pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "track_id": ["t1", "t1"],
            "played_at": pd.to_datetime(
                ["2026-10-05T12:00:00.123456789Z", "2026-10-05T13:00:00Z"],
                utc=True,
                format="ISO8601",
            ),
            "ms_played": [1000, 2000],
        }
    ).to_parquet(folder / "pandas.parquet")
    assert pq.read_schema(folder / "pandas.parquet").field("played_at").type == pa.timestamp(
        "ns", tz="UTC"
    )
    rows = extract_table(spark, folder, PLAY_COLUMNS).collect()
    # Truncated to microseconds, Spark's resolution.
    assert sorted((r.user_id, r.played_at) for r in rows) == [
        ("u1", "2026-10-05 12:00:00.123456"),
        ("u2", "2026-10-05 13:00:00"),
    ]


# ------------------------------------------------- unreadable files: one line naming the file


@pytest.mark.spark
@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (f"u1,t1,{T0},1000\n", r"the first line is 'u1,t1,"),
        ("", r"the file is empty"),
        ("  \n\t\n", r"the first line is blank"),
    ],
    ids=["data-first", "empty", "whitespace"],
)
def test_csv_without_header_line_names_file_and_expected_columns(
    spark, tmp_path: Path, text: str, detail: str
) -> None:
    path = _write(tmp_path / "plays" / "part-0.csv", text)
    with pytest.raises(InputError) as error:
        extract_table(spark, path.parent, PLAY_COLUMNS)
    message = str(error.value)
    assert message.startswith(
        f"{path}: no header line; expected columns user_id,track_id,played_at,ms_played ("
    )
    assert re.search(detail, message) and "\n" not in message


def _truncated_gzip(path: Path, lines: int = 50_000) -> Path:
    body = "".join(f"u{i},t1,{T0},1000\n" for i in range(lines))
    data = gzip.compress(f"{PLAY_HEADER}\n{body}".encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.spark
def test_truncated_gzip_is_one_line_input_error_naming_the_file(spark, tmp_path: Path) -> None:
    data = _minimal(tmp_path / "data")
    broken = _truncated_gzip(data / "events" / "plays" / "part-1.csv.gz")
    with pytest.raises(InputError) as error:
        run_aggregation(spark, data, _paths(tmp_path), AggregationParams(CUTOFF))
    assert str(error.value) == (
        f"{broken}: not a readable gzip file (EOFException: Unexpected end of input stream)"
    )
    assert not (tmp_path / "out" / "interactions").exists()  # nothing written


# ------------------------------------------------------------------ the earliest event time


@pytest.mark.spark
def test_earliest_event_at_is_a_parameter(spark) -> None:
    tracks = spark.createDataFrame([("t1", 200_000)], "track_id string, duration_ms bigint")
    rows = [
        ("old", "t1", "2025-12-31T23:59:59Z", "1000"),
        ("first", "t1", "2026-01-01T00:00:00Z", "1000"),
    ]
    valid, bad = split_events(
        stage_events(
            _raw_plays(spark, rows),
            "plays",
            tracks=tracks,
            users=None,
            cutoff=CUTOFF,
            earliest=utc(2026, 1, 1),
        ),
        "plays",
    )
    assert [(r.user_id, r.reason) for r in bad.collect()] == [
        ("old", R.TIMESTAMP_BEFORE_EARLIEST.value)
    ]
    assert [r.user_id for r in valid.collect()] == ["first"]


def test_aggregation_params_check_times_and_modes() -> None:
    params = AggregationParams(CUTOFF)
    assert params.earliest_event_at == dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert params.unreadable_files == "fail"
    with pytest.raises(ValueError, match="earliest_event_at must be timezone-aware"):
        AggregationParams(CUTOFF, earliest_event_at=dt.datetime(2020, 1, 1))
    with pytest.raises(ValueError, match=r"earliest_event_at .* must be before the cutoff"):
        AggregationParams(CUTOFF, earliest_event_at=CUTOFF)
    with pytest.raises(ValueError, match="unreadable_files must be 'fail' or 'quarantine'"):
        AggregationParams(CUTOFF, unreadable_files="skip")


def test_spark_submit_arguments_give_the_params(tmp_path: Path) -> None:
    args = [
        *("--data", str(tmp_path), "--out", str(tmp_path / "o"), "--quarantine", "q"),
        *("--cutoff", "2026-11-16", "--earliest-event-at", "2020-01-01T00:00:00+02:00"),
        *("--unreadable-files", "quarantine", "--skip-weight", "0.5"),
    ]
    params = parse_arguments(args)[1]
    assert params == AggregationParams(
        cutoff=CUTOFF,
        skip_weight=0.5,
        earliest_event_at=utc(2019, 12, 31, 22),
        unreadable_files="quarantine",
    )
    assert parse_arguments(args[:8])[1] == AggregationParams(CUTOFF)


def test_spark_submit_takes_its_defaults_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import jobs.aggregate
    import jobs.spark

    for name, value in {
        "SKIP_WEIGHT": "0.5",
        "THUMB_UP_BOOST": "3",
        "THUMB_DOWN_CONFIDENCE": "4.5",
        "EARLIEST_EVENT_AT": "2020-01-01T00:00:00",  # no offset: UTC
        "UNREADABLE_FILES": "quarantine",
        "SPARK_SHUFFLE_PARTITIONS": "3",
    }.items():
        monkeypatch.setenv(f"CRATEDIGGER_{name}", value)
    required = [
        *("--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")),
        *("--quarantine", str(tmp_path / "q"), "--cutoff", "2026-11-16"),
    ]
    from_environment = AggregationParams(
        CUTOFF,
        skip_weight=0.5,
        thumb_up_boost=3.0,
        thumb_down_confidence=4.5,
        earliest_event_at=utc(2020, 1, 1),
        unreadable_files="quarantine",
    )
    assert parse_arguments(required)[1] == from_environment
    # As `cratedigger aggregate` builds them, and a flag overrides its variable.
    assert AggregationParams.from_settings(load_settings(), CUTOFF) == from_environment
    flags = [*required, "--skip-weight", "0.1", "--unreadable-files", "fail"]
    assert parse_arguments(flags)[1] == replace(
        from_environment, skip_weight=0.1, unreadable_files="fail"
    )

    # main() runs with them, and with the shuffle partitions of the settings.
    calls: dict[str, Any] = {}

    def get_spark(master: str | None, **options: Any) -> str:
        calls["spark"] = (master, options)
        return "session"

    def run(spark: Any, data: Path, paths: AggregationPaths, params: AggregationParams, **kw: Any):
        calls["run"] = (spark, data, paths, params, kw)
        return AggregationSummary(cutoff=params.cutoff.isoformat())

    monkeypatch.setattr(jobs.spark, "get_spark", get_spark)
    monkeypatch.setattr(jobs.aggregate, "run_aggregation", run)
    assert main(required) == 0
    assert calls["spark"] == (None, {"app_name": "cratedigger-aggregate", "shuffle_partitions": 3})
    assert calls["run"] == (
        "session",
        tmp_path / "data",
        AggregationPaths(tmp_path / "out", tmp_path / "q"),
        from_environment,
        {"extra_thumbs": None},
    )
    assert json.loads(capsys.readouterr().out)["cutoff"] == CUTOFF.isoformat()


def test_spark_submit_names_an_invalid_variable_or_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    required = [
        *("--data", str(tmp_path), "--out", str(tmp_path / "o"), "--quarantine", "q"),
        *("--cutoff", "2026-11-16"),
    ]
    with pytest.raises(SystemExit) as exited:
        parse_arguments([*required, "--thumb-up-boost", "101"])
    assert exited.value.code == 2
    assert "thumb_up_boost must be between 0.0 and 100.0, got 101.0" in capsys.readouterr().err
    monkeypatch.setenv("CRATEDIGGER_SKIP_WEIGHT", "2")
    with pytest.raises(ConfigError, match="CRATEDIGGER_SKIP_WEIGHT"):
        parse_arguments(required)
    assert main(required) == 2
    assert "CRATEDIGGER_SKIP_WEIGHT" in capsys.readouterr().err


@pytest.mark.spark
def test_parquet_spark_refuses_is_an_input_error_naming_each_file(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobs.aggregate

    # A type the footer check does not know: Spark's own refusal names no file.
    monkeypatch.setattr(jobs.aggregate, "_SPARK_UNREADABLE", re.compile("(?!)"))
    table = pa.table({"user_id": ["u1"], "at": pa.array([dt.time(10)], pa.time64("us"))})
    for name in ("a.parquet", "b.parquet"):
        (tmp_path / "plays").mkdir(exist_ok=True)
        pq.write_table(table, tmp_path / "plays" / name)
    errors: list[InputError] = []
    extract_table(spark, tmp_path / "plays", PLAY_COLUMNS, on_unreadable=errors.append)
    assert [str(e) for e in errors] == [
        f"{tmp_path / 'plays' / name}: not a readable Parquet file "
        "(AnalysisException: [UNSUPPORTED_TIME_TYPE] The data type TIME is not supported.)"
        for name in ("a.parquet", "b.parquet")
    ]
    with pytest.raises(InputError, match=r"a\.parquet: not a readable Parquet file \(Analysis"):
        extract_table(spark, tmp_path / "plays", PLAY_COLUMNS)


@pytest.mark.spark
def test_quarantine_is_written_by_several_tasks_and_is_complete(messy: Run) -> None:
    # No coalesce(1): each task writes its own part, and together they hold every row.
    parts = sorted(messy.paths.quarantine.glob("*.parquet"))
    assert len(parts) > 1
    rows = sum(pq.read_metadata(part).num_rows for part in parts)
    assert rows == len(messy.expected_quarantine) == messy.summary.quarantined_total


@pytest.mark.spark
def test_duckdb_reference_writes_the_same_rows_and_counts(
    by_format: dict[str, Run], tmp_path: Path
) -> None:
    pytest.importorskip("duckdb")
    from benchmarks.aggregate_duckdb import compare_interactions, compare_quarantine, run_duckdb

    run = by_format["parquet"]
    counts = run_duckdb(run.data, tmp_path, CUTOFF)
    assert compare_interactions(run.paths.interactions, tmp_path / "interactions.parquet") in (
        "same rows",
        "same rows, confidence within 1e-9 relative",
    )
    assert compare_quarantine(run.paths.quarantine, tmp_path / "quarantine.parquet").startswith(
        "same "
    )
    for name in ("events_read", "duplicates_dropped", "quarantined", "interactions", "users"):
        assert counts[name] == getattr(run.summary, name), name

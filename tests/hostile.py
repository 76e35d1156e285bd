"""Hostile data directories for the aggregation, every row's fate declared as it is written.

:func:`write_rows_dir` writes one data directory holding a hostile row of every kind the job
reads without failing: identifiers with SQL, emoji, right-to-left marks and NUL, 50 MB lines,
epoch-number and offset timestamps, NaN and infinite numbers, duplicate catalog ids, bad
embeddings, one million thumbs on one track, a byte order mark, CRLF line ends, quoted line
breaks, invalid UTF-8, Parquet written by pandas, links to folders (one of them a loop) and
CSV, JSON Lines and Parquet files side by side. Each row carries an id that finds it back:
its listener (events, users), its track (tracks) or a marker in its raw text.

:data:`UNREADABLE` writes files that cannot be read at all, each with the one line that the
aggregation must report for it. Everything here is synthetic.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.contract import PLAY_COLUMNS
from recsys.contract import QuarantineReason as R

CUTOFF = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
T0 = "2026-10-05T12:00:00Z"
#: Dropped as an exact duplicate of an earlier row: counted, neither valid nor quarantined.
DUPLICATE = "duplicate"
FIFTY_MB = 50 * 1024 * 1024
#: The one track with a million thumbs: MILLION_USERS listeners, each thumbing it
#: MILLION_USERS times; the last thumb of an even-numbered listener is +1, of an odd one -1.
MILLION_TRACK = "t1"
MILLION_USERS = 1000


@dataclass(frozen=True)
class Row:
    """One written row and what the aggregation must do with it.

    ``reason`` is a quarantine reason, None (valid) or :data:`DUPLICATE`. The quarantine row
    is found by ``key``: equal to its ``user_id`` or ``track_id`` column (``where``), or a
    substring of its ``record`` (``where="record"``).
    """

    kind: str
    key: str
    reason: str | None
    where: str = "user_id"


@dataclass
class Hostile:
    data: Path
    rows: list[Row] = field(default_factory=list)
    #: Rows (lines, records) written per kind.
    written: Counter[str] = field(default_factory=Counter)

    def expect(self, kind: str, key: str, reason: R | str | None, where: str = "user_id") -> None:
        self.rows.append(Row(kind, key, None if reason is None else str(reason), where))
        self.written[kind] += 1

    def of(self, kind: str, *reasons: str | None) -> list[Row]:
        return [r for r in self.rows if r.kind == kind and r.reason in reasons]

    def quarantined(self, kind: str | None = None) -> list[Row]:
        """The rows that must be quarantined (of ``kind``, or all)."""
        return [
            r for r in self.rows if r.reason not in (None, DUPLICATE) and kind in (None, r.kind)
        ]


def _csv_rows(path: Path, rows: list[list[Any]], *, encoding: str = "utf-8") -> Path:
    """Python's csv module: RFC 4180 quoting and CRLF line ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


# ------------------------------------------------------------------------------ the catalog


def _write_catalog(h: Hostile) -> None:
    catalog = h.data / "catalog"
    artists: list[tuple[list[Any], str, R | None]] = [
        (["a1", "Alpha"], "Alpha", None),
        (["a2", "'; DROP TABLE artists; --"], "DROP TABLE artists", None),
        (["a3", "🎵 Ünïcödé \u202e\u200f"], "Ünïcödé", None),
        (["a1", "Zed"], '"name":"Zed"', R.DUPLICATE_ID),  # "Alpha" sorts first and stays
        (["bad id", "artist-bad-id"], "artist-bad-id", R.INVALID_ARTIST_ID),
        (["", "artist-no-id"], "artist-no-id", R.MISSING_ARTIST_ID),
    ]
    # As a spreadsheet exports: a byte order mark, CRLF line ends.
    _csv_rows(
        catalog / "artists.csv",
        [["artist_id", "name"], *[fields for fields, _, _ in artists]],
        encoding="utf-8-sig",
    )
    for _, key, reason in artists:
        h.expect("artists", key, reason, "record")

    # The tracks are a folder of three formats.
    tracks = catalog / "tracks"
    csv_tracks: list[tuple[list[Any], R | None]] = [
        (["t1", "One", "a1", 200000, "[0.5, 0.25]", '["rock"]'], None),
        (["t-nl", "Line one\nline two", "a1", 200000, "", ""], None),  # a quoted line break
        (["t-quote", 'Say "hi", then bye', "a2", 200000, "", ""], None),  # doubled quotes
        (["t-float-duration", "Float", "a3", "200000.0", "", ""], None),
        (["t-emb-text", "Text embedding", "a1", 200000, "oops", "rock"], None),
        (["t-nan-duration", "NaN", "a1", "NaN", "", ""], R.INVALID_DURATION),
        (["t-inf-duration", "Inf", "a1", "Infinity", "", ""], R.INVALID_DURATION),
        (["t1", "One (again)", "a1", 200000, "", ""], R.DUPLICATE_ID),
        (["bad track", "Bad", "a1", 200000, "", ""], R.INVALID_TRACK_ID),
        (["t-no-artist", "Orphan", "zz", 200000, "", ""], R.UNKNOWN_ARTIST),
    ]
    _csv_rows(
        tracks / "part-0.csv",
        [
            ["track_id", "title", "artist_id", "duration_ms", "embedding", "tags"],
            *[fields for fields, _ in csv_tracks],
            ["t-short", "Short"],  # too few fields
        ],
    )
    for fields, reason in csv_tracks:
        h.expect("tracks", fields[0], reason, "track_id")
    h.expect("tracks", "t-short", R.MALFORMED_RECORD, "record")
    jsonl_tracks = [
        {"track_id": "t-emb-nan", "embedding": [float("nan"), 1.0]},
        {"track_id": "t-emb-str", "embedding": ["x", 1]},  # no embedding; the track stays
        {"track_id": "t-emb-len", "embedding": [1, 2, 3]},  # another length: training's call
        {"track_id": "t-tags-str", "tags": "rock"},
    ]
    with (tracks / "part-1.jsonl").open("w", encoding="utf-8") as handle:
        for track in jsonl_tracks:
            track |= {"title": track["track_id"], "artist_id": "a1", "duration_ms": 200000}
            handle.write(json.dumps(track) + "\n")  # NaN as JSON's common extension writes it
            h.expect("tracks", track["track_id"], None, "track_id")
    pq.write_table(
        pa.table(
            {
                "track_id": ["t-emb-inf"],
                "title": ["Infinite"],
                "artist_id": ["a1"],
                "duration_ms": pa.array([200000], pa.int64()),
                "embedding": pa.array([[float("inf"), 1.0]], pa.list_(pa.float64())),
            }
        ),
        tracks / "part-2.parquet",
    )
    h.expect("tracks", "t-emb-inf", None, "track_id")


# ------------------------------------------------------------------------------- the events

PLAYS_CSV_HEADER = ["user_id", "device", "track_id", "played_at", "ms_played"]
PLAYS_CSV: list[tuple[list[str], R | str | None]] = [
    (["p-ok", "web", "t1", T0, "200000"], None),
    (["p-nl-title", "web", "t-nl", T0, "1000"], None),  # its track has a two-line title
    (["p-quote-title", "web", "t-quote", T0, "1000"], None),
    (["p-device-nl", "phone\nmodel 7", "t1", T0, "1000"], None),  # a quoted line break
    (["p-device-quote", 'tv "den", left', "t1", T0, "1000"], None),
    (["1=1--", "web", "t1", T0, "1000"], None),  # looks like SQL, is a valid id
    (["admin@example.com:80", "web", "t1", T0, "1000"], None),
    (["p-offset", "web", "t1", "2026-11-10T10:00:00+05:30", "1000"], None),  # 04:30 UTC
    (["p-float-ms", "web", "t1", T0, "1000.0"], None),
    (["p-exp-ms", "web", "t1", T0, "1e3"], None),
    (["p-earliest", "web", "t1", "2000-01-01T00:00:00Z", "1000"], None),
    (["p-dup", "web", "t1", T0, "5000"], None),
    (["p-dup", "web", "t1", T0, "5000"], DUPLICATE),
    (["u'; DROP TABLE users;--", "web", "t1", T0, "1000"], R.INVALID_USER_ID),
    (["p-emoji-🎵", "web", "t1", T0, "1000"], R.INVALID_USER_ID),
    (["p-rtl\u200f", "web", "t1", T0, "1000"], R.INVALID_USER_ID),
    (["p-nul\x00x", "web", "t1", T0, "1000"], R.INVALID_USER_ID),
    (["x" * FIFTY_MB, "web", "t1", T0, "1000"], R.INVALID_USER_ID),  # a 50 MB line
    (["p-epoch", "web", "t1", "1762770000", "1000"], R.INVALID_TIMESTAMP),
    (["p-nan-ms", "web", "t1", T0, "NaN"], R.INVALID_MS_PLAYED),
    (["p-inf-ms", "web", "t1", T0, "Infinity"], R.INVALID_MS_PLAYED),
    (["p-half-ms", "web", "t1", T0, "12.5"], R.INVALID_MS_PLAYED),
    (["p-before", "web", "t1", "1999-12-31T23:59:59Z", "1000"], R.TIMESTAMP_BEFORE_EARLIEST),
    (["p-after", "web", "t1", "2026-11-16T00:00:00Z", "1000"], R.TIMESTAMP_AFTER_CUTOFF),
    (["p-unknown-track", "web", "t-missing", T0, "1000"], R.UNKNOWN_TRACK),
    (["p-stranger", "web", "t1", T0, "1000"], R.UNKNOWN_USER),  # not in catalog/users
]


def _jsonl_lines() -> list[tuple[bytes, str, R | None, str]]:
    """(line, key, reason, where) of the plays JSON Lines file."""

    def play(user: Any, played_at: Any = T0, ms: Any = 1000, **extra: Any) -> bytes:
        record = {"user_id": user, "track_id": "t1", "played_at": played_at, "ms_played": ms}
        return json.dumps(extra | record).encode()

    return [
        (play("j-bom-first"), "j-bom-first", None, "user_id"),  # after the byte order mark
        (play("j-float-ms", ms=1000.0), "j-float-ms", None, "user_id"),
        (play(12345), "12345", None, "user_id"),  # a number is a valid id
        (play("j-nan-ms", ms=float("nan")), "j-nan-ms", R.INVALID_MS_PLAYED, "user_id"),
        (play("j-inf-ms", ms=float("inf")), "j-inf-ms", R.INVALID_MS_PLAYED, "user_id"),
        (play("j-epoch", played_at=1762770000), "j-epoch", R.INVALID_TIMESTAMP, "user_id"),
        (b'{"case": "j-not-json", "user_id": ', "j-not-json", R.MALFORMED_RECORD, "record"),
        # Spark's JSON parser refuses strings over 20 million characters: malformed.
        (play("y" * FIFTY_MB, case="j-50mb"), "j-50mb", R.MALFORMED_RECORD, "record"),
        (
            b'{"case": "j-bad-utf8", "user_id": "j-\xff", "track_id": "t1"}',
            "j-bad-utf8",
            R.MALFORMED_RECORD,
            "record",
        ),
    ]


def _write_plays(h: Hostile) -> None:
    plays = h.data / "events" / "plays"
    _csv_rows(plays / "hostile.csv", [PLAYS_CSV_HEADER, *[f for f, _ in PLAYS_CSV]])
    for fields, reason in PLAYS_CSV:
        h.expect("plays", fields[0], reason)
    # A short line is malformed: that quoted line breaks are read must not hide it.
    with (plays / "hostile.csv").open("a", encoding="utf-8", newline="") as handle:
        handle.write(f"p-short-row,web,t1,{T0}\r\n")
    h.expect("plays", "p-short-row", R.MALFORMED_RECORD, "record")
    # Invalid UTF-8 in a CSV field reads as U+FFFD: not an id.
    (plays / "latin1.csv").write_bytes(
        b"user_id,track_id,played_at,ms_played\np-bad\xffutf8,t1," + T0.encode() + b",1000\n"
    )
    h.expect("plays", "p-bad\ufffdutf8", R.INVALID_USER_ID)
    # JSON Lines with a byte order mark and CRLF line ends.
    lines = _jsonl_lines()
    (plays / "hostile.jsonl").write_bytes(
        b"\xef\xbb\xbf" + b"".join(line + b"\r\n" for line, _, _, _ in lines)
    )
    for _, key, reason, where in lines:
        h.expect("plays", key, reason, where)
    _write_pandas_plays(plays / "pandas.parquet", h)
    # An integer column of epoch seconds: which unit? Not a time.
    pq.write_table(
        pa.table(
            {
                "user_id": ["e-epoch"],
                "track_id": ["t1"],
                "played_at": pa.array([1762770000], pa.int64()),
                "ms_played": pa.array([1000], pa.int64()),
            }
        ),
        plays / "epoch.parquet",
    )
    h.expect("plays", "e-epoch", R.INVALID_TIMESTAMP)
    # events/plays/2026 links to a folder elsewhere, twice; a link in it leads back up.
    elsewhere = h.data.parent / "elsewhere" / "2026"
    _csv_rows(
        elsewhere / "linked.csv",
        [list(PLAY_COLUMNS), ["l-linked", "t1", "2026-10-06T12:00:00Z", "1000"]],
    )
    h.expect("plays", "l-linked", None)
    (plays / "2026").symlink_to(elsewhere, target_is_directory=True)
    (plays / "2026-again").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(plays, target_is_directory=True)
    # Files the job skips: hidden files and Spark's markers.
    (plays / ".DS_Store").write_bytes(b"\x00\x01binary")
    (plays / "_SUCCESS").write_bytes(b"")


def _write_pandas_plays(path: Path, h: Hostile) -> None:
    """What ``DataFrame.to_parquet`` writes: nanosecond times, and ms_played as float64 (an
    integer column with a missing value)."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "user_id": ["pd-ns", "pd-nan", "pd-inf"],
            "track_id": ["t1", "t1", "t1"],
            "played_at": pd.to_datetime(
                ["2026-10-05T12:00:00.123456789Z", T0, T0], utc=True, format="ISO8601"
            ),
            "ms_played": [1000.0, float("nan"), float("inf")],
        }
    )
    frame.to_parquet(path)
    h.expect("plays", "pd-ns", None)
    h.expect("plays", "pd-nan", R.MISSING_MS_PLAYED)  # pandas' NaN is a missing value: null
    h.expect("plays", "pd-inf", R.INVALID_MS_PLAYED)


THUMBS_CSV: list[tuple[list[str], R | str | None]] = [
    (["th-up", "t1", T0, "1"], None),
    (["th-float", "t1", T0, "1.0"], None),
    (["th-down", "t-nl", T0, "-1"], None),
    (["th-dup", "t1", T0, "1"], None),
    (["th-dup", "t1", T0, "1"], DUPLICATE),
    (["th-zero", "t1", T0, "0"], R.INVALID_THUMB_VALUE),
    (["th-nan", "t1", T0, "NaN"], R.INVALID_THUMB_VALUE),
    (["th-text", "t1", T0, "up"], R.INVALID_THUMB_VALUE),
]


def text_events(kind: str, *, longest: int = 1000) -> list[tuple[tuple[str, ...], R | None]]:
    """The hostile CSV rows of ``kind`` (``plays``: :data:`PLAYS_CSV`, ``thumbs``:
    :data:`THUMBS_CSV`) as the text of the contract's columns, with the reason validation
    gives them (a duplicate is a valid row); rows with a field over ``longest`` characters
    are left out."""
    if kind == "plays":
        rows = [((u, t, at, ms), reason) for (u, _, t, at, ms), reason in PLAYS_CSV]
    else:
        rows = [(tuple(fields), reason) for fields, reason in THUMBS_CSV]
    return [
        (fields, None if reason == DUPLICATE else R(reason) if reason else None)
        for fields, reason in rows
        if max(map(len, fields)) <= longest
    ]


def _write_thumbs(h: Hostile) -> None:
    thumbs = h.data / "events" / "thumbs"
    _csv_rows(
        thumbs / "hostile.csv",
        [["user_id", "track_id", "rated_at", "value"], *[f for f, _ in THUMBS_CSV]],
    )
    for fields, reason in THUMBS_CSV:
        h.expect("thumbs", fields[0], reason)
    # One million thumbs on one track, built column-wise (a list of dicts would take seconds).
    n = MILLION_USERS * MILLION_USERS
    listener = np.repeat(np.arange(MILLION_USERS, dtype=np.int32), MILLION_USERS)
    nth = np.tile(np.arange(MILLION_USERS, dtype=np.int64), MILLION_USERS)
    start = int(dt.datetime(2026, 10, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
    pq.write_table(
        pa.table(
            {
                "user_id": pa.DictionaryArray.from_arrays(
                    pa.array(listener), pa.array(million_users())
                ),
                "track_id": pa.array(np.full(n, MILLION_TRACK)),
                "rated_at": pa.array(start + nth * 1_000_000, pa.timestamp("us", tz="UTC")),
                "value": pa.array(np.where((nth + listener) % 2 == 1, 1, -1).astype(np.int32)),
            }
        ),
        thumbs / "million.parquet",
    )
    h.written["thumbs"] += n


def million_users() -> list[str]:
    return [f"m{i}" for i in range(MILLION_USERS)]


def _write_users(h: Hostile) -> None:
    """Every listener whose events must pass the look-up, and bad users rows."""
    wanted = {
        r.key for r in h.rows if r.kind in ("plays", "thumbs") and r.reason in (None, DUPLICATE)
    }
    rows: list[list[Any]] = [[user, f"Listener {user}"] for user in sorted(wanted)]
    rows += [[user, None] for user in million_users()]
    rows += [["p-ok", "zz second"], ["bad user", "Bad"]]
    _csv_rows(h.data / "catalog" / "users.csv", [["user_id", "display_name"], *rows])
    for user, _ in rows[:-2]:
        h.expect("users", user, None)
    h.expect("users", "p-ok", R.DUPLICATE_ID)  # "Listener p-ok" sorts first and stays
    h.expect("users", "bad user", R.INVALID_USER_ID)


def write_rows_dir(root: Path) -> Hostile:
    """The data directory of hostile rows under ``root / "data"``; every file is readable."""
    h = Hostile(root / "data")
    _write_catalog(h)
    _write_plays(h)
    _write_thumbs(h)
    _write_users(h)
    return h


# ------------------------------------------------------------------------ unreadable files


def write_minimal(data: Path) -> Path:
    """A catalog of one artist and one track, and one good play (of listener ``good``)."""
    _csv_rows(data / "catalog" / "artists.csv", [["artist_id", "name"], ["a1", "Alpha"]])
    _csv_rows(
        data / "catalog" / "tracks.csv",
        [["track_id", "title", "artist_id", "duration_ms"], ["t1", "One", "a1", 200000]],
    )
    _csv_rows(data / "events" / "plays" / "good.csv", [list(PLAY_COLUMNS), ["good", "t1", T0, 1]])
    return data


def _play_lines(n: int) -> str:
    return "".join(f"g{i},t1,{T0},1000\n" for i in range(n))


def _truncated_gzip(path: Path, text: str) -> None:
    data = gzip.compress(text.encode())
    path.write_bytes(data[: len(data) // 2])


def _corrupt_pages(path: Path) -> None:
    """A Parquet file whose footer is intact and whose compressed pages are not."""
    users = pa.array([f"c{i:07d}-{i * 7919 % 10007}" for i in range(200_000)])
    pq.write_table(pa.table({"user_id": users, "track_id": users}), path, compression="snappy")
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 4096] = bytes(range(256)) * 16
    path.write_bytes(bytes(data))


def _time_column(path: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1"],
                "track_id": ["t1"],
                "played_at": [T0],
                "ms_played": [1000],
                "local_time": pa.array([dt.time(10, 0)], pa.time64("us")),
            }
        ),
        path,
    )


#: name -> (writer of the file at that path, the error line after "<path>: ").
UNREADABLE: dict[str, tuple[Callable[[Path], Any], str]] = {
    "headerless.csv": (
        lambda p: p.write_text(f"f-headerless,t1,{T0},1000\n"),
        "no header line; expected columns user_id,track_id,played_at,ms_played "
        f"(the first line is 'f-headerless,t1,{T0},1000')",
    ),
    "empty.csv": (
        lambda p: p.write_text(""),
        "no header line; expected columns user_id,track_id,played_at,ms_played (the file is empty)",
    ),
    "blank.csv": (
        lambda p: p.write_text("   \r\n\t\n"),
        "no header line; expected columns user_id,track_id,played_at,ms_played "
        "(the first line is blank)",
    ),
    "twice.csv": (
        lambda p: p.write_text("user_id,track_id,user_id\nu1,t1,u2\n"),
        "CSV header names 'user_id' more than once",
    ),
    "truncated.csv.gz": (
        lambda p: _truncated_gzip(p, ",".join(PLAY_COLUMNS) + "\n" + _play_lines(50_000)),
        "not a readable gzip file (EOFException: Unexpected end of input stream)",
    ),
    "truncated.jsonl.gz": (
        lambda p: _truncated_gzip(p, "".join(f'{{"user_id": "g{i}"}}\n' for i in range(50_000))),
        "not a readable gzip file (EOFException: Unexpected end of input stream)",
    ),
    "plain-text.csv.gz": (
        lambda p: p.write_text(",".join(PLAY_COLUMNS) + "\n"),
        "not a gzip file (it does not start with 1f 8b)",
    ),
    "not-parquet.parquet": (
        lambda p: p.write_text("user_id,track_id\n" * 10),
        "not a readable Parquet file (Parquet magic bytes not found in footer. Either the "
        "file is corrupted or this is not a parquet file.)",
    ),
    "empty.parquet": (
        lambda p: p.write_bytes(b""),
        "not a readable Parquet file (Parquet file size is 0 bytes)",
    ),
    "time-column.parquet": (
        _time_column,
        "not a readable Parquet file (Spark cannot read column 'local_time' of type time64[us])",
    ),
    "corrupt-pages.parquet": (_corrupt_pages, "not a readable Parquet file (*)"),
    "dangling-link.jsonl": (
        lambda p: p.symlink_to(p.parent / "gone.jsonl"),
        "cannot be read (No such file or directory)",
    ),
}


def expected_error(path: Path, name: str) -> re.Pattern[str]:
    """The whole error line for the file ``path`` written as case ``name``; ``(*)`` in a
    message stands for a cause of Spark's own wording."""
    message = re.escape(f"{path}: {UNREADABLE[name][1]}").replace(re.escape("(*)"), r"\(.+\)")
    return re.compile(message + r"\Z")


def write_unreadable(folder: Path, name: str) -> Path:
    path = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    UNREADABLE[name][0](path)
    return path

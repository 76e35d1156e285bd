"""The catalog's optional display fields (album, cover, preview, links, MusicBrainz id,
ISRC) from the data directory through the Spark job into the database: a value not of its
format is no value, the track stays, and the Spark check agrees with the Python twin."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.aggregate import AggregationParams, AggregationPaths, run_aggregation
from jobs.week import load_catalog
from migrations import upgrade
from recsys.contract import TRACKS, text_format_of
from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory

CUTOFF = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
MBID = "8f3471b5-7e6a-48da-86a9-c1c07a0f47ae"
# (column, value as the catalog gives it, what it must become: None when it is no value)
CASES = [
    ("image_url", "https://coverartarchive.org/release/x/front-250.jpg", "same"),
    (
        "image_url",
        "  https://i.scdn.co/image/ab67616d0000b273  ",
        "https://i.scdn.co/image/ab67616d0000b273",
    ),
    ("image_url", "javascript:alert(1)", None),
    ("image_url", 'https://x.example/"><script>alert(1)</script>', None),
    ("image_url", "https://x.example/a b.jpg", None),
    ("image_url", "//x.example/a.jpg", None),
    ("image_url", "data:image/png;base64,AAAA", None),
    ("image_url", "https://x.example/" + "a" * 2100, None),
    ("preview_url", "http://media.example:8080/p/1.mp3?sig=abc&t=1", "same"),
    ("preview_url", "ftp://media.example/1.mp3", None),
    ("external_url", "https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC", "same"),
    ("external_url", "https://bad\nhost/x", None),
    ("musicbrainz_recording_id", MBID.upper(), MBID),
    ("musicbrainz_recording_id", "not-a-uuid", None),
    ("isrc", "us-rc1-76-07839", "USRC17607839"),
    ("isrc", "USRC176078", None),
    ("album", "  Homogenic  ", "Homogenic"),
    ("album", "x" * 600, None),
    ("album", "   ", None),
]


def _expected(value: str, outcome: str | None) -> str | None:
    return value if outcome == "same" else outcome


def _write_data(data: Path) -> None:
    (data / "catalog").mkdir(parents=True)
    (data / "events" / "plays").mkdir(parents=True)
    (data / "catalog" / "artists.csv").write_text("artist_id,name\na1,One\n")
    columns = ["track_id", "title", "artist_id", "duration_ms", *sorted({c for c, _, _ in CASES})]
    with (data / "catalog" / "tracks.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i, (column, value, _outcome) in enumerate(CASES):
            row = {"track_id": f"t{i}", "title": f"T{i}", "artist_id": "a1", "duration_ms": 1000}
            row[column] = value
            writer.writerow([row.get(name, "") for name in columns])
    plays = [
        {"user_id": "u1", "track_id": "t0", "played_at": "2026-11-10T10:00:00Z", "ms_played": 900}
    ]
    (data / "events" / "plays" / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in plays))


@pytest.mark.spark
def test_display_fields_pass_or_become_no_value_and_reach_the_database(
    spark, tmp_path: Path
) -> None:
    _write_data(tmp_path / "data")
    paths = AggregationPaths(tmp_path / "out", tmp_path / "quarantine")
    summary = run_aggregation(spark, tmp_path / "data", paths, AggregationParams(CUTOFF))
    assert summary.tracks == len(CASES)  # no track is lost for a bad optional value
    rows = {row["track_id"]: row for row in pq.read_table(paths.tracks).to_pylist()}
    for i, (column, value, outcome) in enumerate(CASES):
        assert rows[f"t{i}"][column] == _expected(value, outcome), (column, value)
        # The Python twin says the same as Spark.
        field = TRACKS.optional.field(column)
        text_format = text_format_of(field)
        assert text_format is not None
        assert text_format.check(value) == rows[f"t{i}"][column], (column, value)

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    load_catalog(make_session_factory(engine), paths)
    with make_session_factory(engine)() as session:
        stored = repository.get_track(session, "t1")
        assert stored is not None
        assert stored.image_url == "https://i.scdn.co/image/ab67616d0000b273"
        twelve = repository.get_track(session, "t12")  # the upper-case MusicBrainz id
        assert twelve is not None and twelve.musicbrainz_recording_id == MBID
    engine.dispose()

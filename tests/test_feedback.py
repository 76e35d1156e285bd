"""Thumbs from the web app, exported as thumb events for the weekly run (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest

from jobs.db import sessions
from jobs.feedback import export_feedback
from jobs.week import Storage
from recsys.contract import THUMBS
from recsys.db import feedback, repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.settings import Settings
from tests.webworld import WEEK

NEXT_WEEK = WEEK + dt.timedelta(days=7)


def test_export_writes_the_thumbs_before_the_cutoff(web_world, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "state", database_url=web_world.url)
    engine = make_engine(web_world.url)
    inside = dt.datetime(2026, 11, 20, 12, 30, 5, 123456, tzinfo=dt.UTC)
    with make_session_factory(engine).begin() as session:
        feedback.record_thumb(session, "u1", "t01", -1, source="web", rated_at=inside)
        feedback.record_thumb(
            session, "u2", "t02", 1, source="api", rated_at=inside + dt.timedelta(hours=1)
        )
        # At the cut-off itself: belongs to the week after.
        feedback.record_thumb(
            session,
            "u1",
            "t03",
            -1,
            source="web",
            rated_at=dt.datetime.combine(NEXT_WEEK, dt.time(), tzinfo=dt.UTC),
        )
    engine.dispose()
    folder, written = export_feedback(
        sessions(settings), Storage.of(settings).feedback(NEXT_WEEK, "run-1"), NEXT_WEEK
    )
    assert written == 2
    table = pq.read_table(folder / "thumbs.parquet")
    assert table.schema == THUMBS.schema
    assert table.to_pylist() == [
        {"user_id": "u1", "track_id": "t01", "rated_at": inside, "value": -1},
        {
            "user_id": "u2",
            "track_id": "t02",
            "rated_at": inside + dt.timedelta(hours=1),
            "value": 1,
        },
    ]
    assert [p.name for p in folder.iterdir()] == ["thumbs.parquet"]  # no partial file left
    # Exporting again gives the same file: a re-run of the week reads the same thumbs.
    again, written_again = export_feedback(
        sessions(settings), Storage.of(settings).feedback(NEXT_WEEK, "run-1"), NEXT_WEEK
    )
    assert written_again == 2 and pq.read_table(again / "thumbs.parquet").equals(table)
    # An earlier week sees none of them.
    assert (
        export_feedback(sessions(settings), Storage.of(settings).feedback(WEEK, "run-1"), WEEK)[1]
        == 0
    )


def test_newest_thumb_on_a_playlist_track_is_the_listeners_opinion(web_world) -> None:
    engine = make_engine(web_world.url)
    with make_session_factory(engine).begin() as session:
        playlist = repository.latest_playlist(session, "u1")
        assert playlist is not None and playlist.thumbs == {}
        first, second = (track["track_id"] for track in playlist.tracks()[:2])
        elsewhere = next(
            f"t{i:02d}"
            for i in range(100)
            if f"t{i:02d}" not in {track["track_id"] for track in playlist.tracks()}
        )
        feedback.record_thumb(session, "u1", first, -1, source="web")
        feedback.record_thumb(session, "u1", first, 1, source="api")
        feedback.record_thumb(session, "u1", second, -1, source="web")
        feedback.record_thumb(session, "u1", elsewhere, -1, source="web")
        feedback.record_thumb(session, "u2", second, 1, source="web")
        thumbs = repository.latest_playlist(session, "u1").thumbs
        # Not the track outside the playlist, nor u2's newer thumb on the same track.
        assert thumbs == {first: 1, second: -1}
    engine.dispose()


@pytest.mark.parametrize(
    ("track_id", "value", "source", "message"),
    [
        ("t01", 0, "web", "value must be"),
        ("t01", 2, "web", "value must be"),
        ("t01", 1, "email", "source must be"),
        ("nowhere", 1, "web", "no track"),
    ],
)
def test_bad_thumbs_are_refused(web_world, track_id, value, source, message) -> None:
    engine = make_engine(web_world.url)
    with make_session_factory(engine)() as session, pytest.raises(ValueError, match=message):
        feedback.record_thumb(session, "u1", track_id, value, source=source)
    engine.dispose()

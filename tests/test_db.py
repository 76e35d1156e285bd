"""Migrations and repositories, on SQLite and on PostgreSQL (same tests, both backends)."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.migrate import current_revision, downgrade, head_revision, upgrade
from recsys.db.models import Base, ModelVersion, Playlist, PlaylistTrack

WEEK = dt.date(2026, 11, 16)
TABLES = {"users", "artists", "tracks", "model_versions", "playlists", "playlist_tracks"}


def test_upgrade_creates_the_models_schema_and_downgrade_removes_it(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(database_url)
    assert current_revision(engine) == head_revision(database_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == [], "the models and the migrations disagree"

    downgrade(database_url, "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(database_url)  # and back up again
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def _seed(session) -> None:
    repository.upsert_artists(
        session, [{"artist_id": "a1", "name": "One"}, {"artist_id": "a2", "name": "Two"}]
    )
    repository.upsert_tracks(
        session,
        [
            {
                "track_id": f"t{i}",
                "title": f"T{i}",
                "artist_id": "a1" if i < 5 else "a2",
                "duration_ms": 1000 * i + 1,
                "released_at": None,
            }
            for i in range(10)
        ],
    )
    repository.upsert_users(
        session,
        [{"user_id": "u1", "display_name": None}, {"user_id": "u2", "display_name": "Second"}],
    )
    repository.save_model_version(
        session,
        ModelVersion(
            version="v1",
            week_start=WEEK,
            fingerprint="f" * 64,
            artifact_path="/x",
            params={},
            n_users=2,
            n_tracks=10,
            n_interactions=3,
            train_seconds=0.1,
            status="trained",
        ),
    )


def _entries(tracks: list[int]) -> list[repository.PlaylistEntry]:
    return [repository.PlaylistEntry(f"t{i}", 1.0 / (k + 1)) for k, i in enumerate(tracks)]


def test_replacing_a_week_never_duplicates(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        _seed(session)
        repository.replace_week_playlists(
            session,
            WEEK,
            "v1",
            [
                repository.NewPlaylist("u1", _entries([1, 2, 3])),
                repository.NewPlaylist("u2", _entries([4, 5])),
            ],
        )
    with sessions.begin() as session:
        written = repository.replace_week_playlists(
            session, WEEK, "v1", [repository.NewPlaylist("u1", _entries([7, 8]))]
        )
        assert written == 2
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Playlist)) == 2
        latest = repository.latest_playlist(session, "u1")
        assert latest is not None
        assert [(t.position, t.track_id) for t in latest.tracks] == [(1, "t7"), (2, "t8")]
        assert latest.tracks[0].track.artist.name == "Two"
        # u2's playlist was not touched by u1's replacement.
        other = repository.latest_playlist(session, "u2")
        assert other is not None and [t.track_id for t in other.tracks] == ["t4", "t5"]
        assert session.scalar(select(func.count()).select_from(PlaylistTrack)) == 4
    engine.dispose()


def test_unique_user_week_is_enforced_by_the_database(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        _seed(session)
        session.add(Playlist(user_id="u1", week_start=WEEK, model_version="v1"))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(Playlist(user_id="u1", week_start=WEEK, model_version="v1"))
    engine.dispose()


def test_latest_playlist_is_the_newest_week_and_upserts_update(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        _seed(session)
        for week, tracks in (
            (WEEK - dt.timedelta(days=7), [1]),
            (WEEK, [2]),
            (WEEK - dt.timedelta(days=14), [3]),
        ):
            repository.replace_week_playlists(
                session, week, "v1", [repository.NewPlaylist("u1", _entries(tracks))]
            )
        repository.upsert_artists(session, [{"artist_id": "a1", "name": "Renamed"}])
        assert repository.ensure_users(session, ["u1", "u3"]) == 1
    with sessions() as session:
        latest = repository.latest_playlist(session, "u1")
        assert latest is not None and latest.week_start == WEEK
        assert [t.track_id for t in latest.tracks] == ["t2"]
        assert latest.tracks[0].track.artist.name == "Renamed"
        listeners = repository.list_listeners(session, limit=10)
        assert [(u.user_id, n) for u, n in listeners] == [("u1", 3), ("u2", 0), ("u3", 0)]
        assert repository.count_listeners(session) == 3
        assert repository.latest_playlist(session, "u2") is None
    engine.dispose()

"""Migrations and repositories, on SQLite and on PostgreSQL (same tests, both backends)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from migrations import downgrade, head_revision, upgrade
from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.models import Base, ModelVersion, Playlist, PlaylistTrack
from recsys.db.schema import current_revision

WEEK = dt.date(2026, 11, 16)
TABLES = {
    "users",
    "artists",
    "tracks",
    "model_versions",
    "playlists",
    "playlist_tracks",
    "weekly_runs",
    "job_runs",
    "week_publications",
}


def test_upgrade_creates_the_models_schema_and_downgrade_removes_it(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(database_url)
    assert current_revision(engine) == head_revision()
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


@pytest.fixture
def sessions(migrated_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated database holding :func:`_seed`'s catalog, listeners and model."""
    engine = make_engine(migrated_url)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        _seed(session)
    yield factory
    engine.dispose()


def _entries(tracks: list[int]) -> list[repository.PlaylistEntry]:
    return [repository.PlaylistEntry(f"t{i}", 1.0 / (k + 1)) for k, i in enumerate(tracks)]


def _new_run(session, week: dt.date = WEEK) -> int:
    run = repository.start_weekly_run(session, week, "test", "/data")
    run.model_version = "v1"
    session.flush()
    return int(run.id)


def test_a_retried_chunk_replaces_its_own_rows_and_publication_switches_runs(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        first = _new_run(session)
        repository.replace_week_playlists(
            session,
            WEEK,
            "v1",
            [
                repository.NewPlaylist("u1", _entries([1, 2, 3])),
                repository.NewPlaylist("u2", _entries([4, 5])),
            ],
            first,
        )
    with sessions() as session:
        # Written but not published: readers see nothing yet.
        assert repository.latest_playlist(session, "u1") is None
        assert repository.playlists_of_week(session, WEEK) == 0
    with sessions.begin() as session:
        # The same chunk again (a retry) replaces u1's rows of this run.
        written = repository.replace_week_playlists(
            session, WEEK, "v1", [repository.NewPlaylist("u1", _entries([7, 8]))], first
        )
        assert written == 2
        assert repository.publish_week(session, first) == 2
        repository.end_weekly_run(session, first, "succeeded")
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Playlist)) == 2
        latest = repository.latest_playlist(session, "u1")
        assert latest is not None
        assert [(t["position"], t["track_id"]) for t in latest.tracks()] == [(1, "t7"), (2, "t8")]
        assert latest.tracks()[0]["artist"] == "Two"
        other = repository.latest_playlist(session, "u2")
        assert other is not None and [t["track_id"] for t in other.tracks()] == ["t4", "t5"]
        assert session.scalar(select(func.count()).select_from(PlaylistTrack)) == 4

    # A second run of the week: invisible until published, then it replaces the first.
    with sessions.begin() as session:
        second = _new_run(session)
        repository.replace_week_playlists(
            session, WEEK, "v1", [repository.NewPlaylist("u1", _entries([9]))], second
        )
    with sessions() as session:
        latest = repository.latest_playlist(session, "u1")
        assert latest is not None and [t["track_id"] for t in latest.tracks()] == ["t7", "t8"]
    with sessions.begin() as session:
        assert repository.publish_week(session, second) == 1
    with sessions() as session:
        latest = repository.latest_playlist(session, "u1")
        assert latest is not None and [t["track_id"] for t in latest.tracks()] == ["t9"]
        assert repository.latest_playlist(session, "u2") is None
        assert session.scalar(select(func.count()).select_from(Playlist)) == 1
        assert session.get(ModelVersion, "v1").status == "published"


def test_one_active_run_per_week_and_one_playlist_per_run(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        run_id = _new_run(session)
        session.add(
            Playlist(user_id="u1", week_start=WEEK, model_version="v1", weekly_run_id=run_id)
        )
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(
            Playlist(user_id="u1", week_start=WEEK, model_version="v1", weekly_run_id=run_id)
        )
    with pytest.raises(repository.RunAlreadyActive, match=f"run #{run_id}"), sessions.begin() as s:
        _new_run(s)
    with sessions.begin() as session:
        _new_run(session, WEEK + dt.timedelta(days=7))  # another week is fine
        repository.end_weekly_run(session, run_id, "failed", error="boom")
    with sessions.begin() as session:
        assert _new_run(session) > run_id  # the week is free again


def test_latest_playlist_is_the_newest_published_week_kept_as_published(
    sessions: sessionmaker[Session],
) -> None:
    from tests.worlds import publish_week_playlists

    with sessions.begin() as session:
        for week, tracks in (
            (WEEK - dt.timedelta(days=7), [1]),
            (WEEK, [2]),
            (WEEK - dt.timedelta(days=14), [3]),
        ):
            publish_week_playlists(
                session, week, "v1", [repository.NewPlaylist("u1", _entries(tracks))]
            )
        repository.upsert_artists(session, [{"artist_id": "a1", "name": "Renamed"}])
        repository.upsert_users(session, [{"user_id": "u3", "display_name": None}])
    with sessions() as session:
        latest = repository.latest_playlist(session, "u1")
        assert latest is not None and latest.week_start == WEEK
        assert [t["track_id"] for t in latest.tracks()] == ["t2"]
        # A playlist is kept as published; the catalog itself has the new name.
        assert latest.tracks()[0]["artist"] == "One"
        assert repository.get_track(session, "t2").artist.name == "Renamed"
        listeners = repository.list_listeners(session, limit=10)
        assert [(u.user_id, n) for u, n in listeners] == [("u1", 3), ("u2", 0), ("u3", 0)]
        assert repository.count_listeners(session) == 3
        assert repository.latest_playlist(session, "u2") is None
        assert repository.published_model_before(session, WEEK).version == "v1"
        assert repository.published_model_before(session, WEEK - dt.timedelta(days=14)) is None


def test_migrations_keep_existing_playlists_visible(database_url: str) -> None:
    """Playlists written under revision 0001 stay readable after the upgrade."""
    from sqlalchemy import text

    upgrade(database_url, "0001")
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO artists VALUES ('a1', 'One')"))
        connection.execute(text("INSERT INTO tracks VALUES ('t1', 'T', 'a1', 1000, NULL)"))
        connection.execute(text("INSERT INTO users VALUES ('u1', NULL, CURRENT_TIMESTAMP)"))
        connection.execute(
            text(
                "INSERT INTO model_versions VALUES ('v0', '2026-11-09', CURRENT_TIMESTAMP,"
                " 'f', '/m', '{}', 1, 1, 1, 0.1, 'trained', NULL)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO playlists (id, user_id, week_start, model_version, kind, created_at)"
                " VALUES (7, 'u1', '2026-11-09', 'v0', 'personal', CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(text("INSERT INTO playlist_tracks VALUES (7, 1, 't1', 0.5, NULL)"))
    upgrade(database_url)
    with make_session_factory(engine)() as session:
        latest = repository.latest_playlist(session, "u1")
        assert latest is not None and [t["track_id"] for t in latest.tracks()] == ["t1"]
        # 0004 rendered the stored tracks exactly as the weekly run renders new ones.
        rendered = repository.render_tracks(
            [repository.PlaylistEntry("t1", 0.5)],
            {"t1": {"title": "T", "artist_id": "a1", "artist": "One", "duration_ms": 1000}},
        )
        assert latest.tracks_json == rendered
        assert latest.tracks()[0]["artist"] == "One" and latest.tracks()[0]["thumb"] is None
        assert session.get(ModelVersion, "v0").status == "published"
    downgrade(database_url, "0001")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM playlist_tracks")).scalar() == 1
    engine.dispose()


def test_the_fast_renderer_writes_what_json_would_for_hostile_text(
    sessions: sessionmaker[Session],
) -> None:
    """replace_week_playlists renders each track's fields once per chunk: its JSON must be
    json.dumps of the playlist's tracks, byte for byte, hostile text and odd scores too."""
    hostile = ['Say "hi" \\ </script>', "Bj\u00f6rk \u2603 \U0001f3b5", "tab\there\nnew line"]
    with sessions.begin() as session:
        repository.upsert_tracks(
            session,
            [
                {
                    "track_id": "t1",
                    "title": hostile[0],
                    "artist_id": "a1",
                    "duration_ms": 1001,
                    "released_at": WEEK - dt.timedelta(days=3),
                    "album": hostile[1],
                    "image_url": "https://covers.example/1.jpg",
                }
            ],
        )
        run = _new_run(session)
        entries = [
            repository.PlaylistEntry("t1", 0.1234567891, hostile[2]),
            repository.PlaylistEntry("t2", 1e-9, None),
            repository.PlaylistEntry("t3", -2.5, hostile[2]),
            repository.PlaylistEntry("t4", 3, "Because you played \u201cT1\u201d"),
        ]
        playlists = [
            repository.NewPlaylist("u1", entries),
            repository.NewPlaylist("u2", entries[::-1]),
        ]
        written = repository.replace_week_playlists(session, WEEK, "v1", playlists, run)
        assert written == 8
        repository.publish_week(session, run)
    with sessions() as session:
        catalog = repository._catalog_rows(session, {"t1", "t2", "t3", "t4"})
        for playlist in playlists:
            stored = repository.latest_playlist(session, playlist.user_id)
            assert stored is not None
            assert stored.tracks_json == repository.render_tracks(playlist.entries, catalog)
            assert stored.duration_ms == 1001 + 2001 + 3001 + 4001
            assert stored.new_releases == 1  # t1, released three days before the week
        rows = session.execute(
            select(PlaylistTrack.position, PlaylistTrack.track_id, PlaylistTrack.reason)
            .join(Playlist, Playlist.id == PlaylistTrack.playlist_id)
            .where(Playlist.user_id == "u2")
            .order_by(PlaylistTrack.position)
        ).all()
        assert [tuple(r) for r in rows] == [
            (1, "t4", "Because you played \u201cT1\u201d"),
            (2, "t3", hostile[2]),
            (3, "t2", None),
            (4, "t1", hostile[2]),
        ]


def test_a_score_that_is_not_a_number_is_refused(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        run = _new_run(session)
        bad = [repository.NewPlaylist("u1", [repository.PlaylistEntry("t1", float("nan"))])]
        with pytest.raises(ValueError, match="not a JSON number"):
            repository.replace_week_playlists(session, WEEK, "v1", bad, run)

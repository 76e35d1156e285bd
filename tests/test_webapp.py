"""Pages and the JSON API through Flask's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.models import ModelVersion
from recsys.settings import Settings
from tests.worlds import publish_week_playlists
from webapp import create_app

WEEK = dt.date(2026, 11, 16)


@pytest.fixture
def app(migrated_url: str, tmp_path):
    engine = make_engine(migrated_url)
    with make_session_factory(engine).begin() as session:
        repository.upsert_artists(session, [{"artist_id": "a1", "name": "Bj\u00f6rk & <Friends>"}])
        repository.upsert_tracks(
            session,
            [
                {
                    "track_id": f"t{i:02d}",
                    "title": f"Song {i}",
                    "artist_id": "a1",
                    "duration_ms": 61_000 + i,
                    "released_at": None,
                }
                for i in range(60)
            ],
        )
        repository.upsert_users(
            session,
            [{"user_id": "u1", "display_name": "Ada"}, {"user_id": "u2", "display_name": None}],
        )
        repository.save_model_version(
            session,
            ModelVersion(
                version="2026-11-16-abc",
                week_start=WEEK,
                fingerprint="f" * 64,
                artifact_path="/m",
                params={},
                n_users=2,
                n_tracks=60,
                n_interactions=5,
                train_seconds=0.1,
            ),
        )
        publish_week_playlists(
            session,
            WEEK,
            "2026-11-16-abc",
            [
                repository.NewPlaylist(
                    "u1", [repository.PlaylistEntry(f"t{i:02d}", 2.0 - i / 100) for i in range(50)]
                )
            ],
        )
    engine.dispose()
    settings = Settings(data_dir=tmp_path / "state", database_url=migrated_url)
    app = create_app({"TESTING": True}, settings=settings)
    yield app
    app.extensions["cratedigger"]["engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def test_latest_playlist_json(client) -> None:
    response = client.get("/api/v1/users/u1/playlists/latest")
    assert response.status_code == 200
    document = response.get_json()
    assert list(document)[:3] == ["user_id", "week_start", "model_version"]
    assert document["user_id"] == "u1"
    assert document["week_start"] == "2026-11-16"
    assert document["model_version"] == "2026-11-16-abc"
    tracks = document["tracks"]
    assert [t["position"] for t in tracks] == list(range(1, 51))
    assert tracks[0] == {
        "position": 1,
        "track_id": "t00",
        "title": "Song 0",
        "artist_id": "a1",
        "artist": "Bj\u00f6rk & <Friends>",
        "duration_ms": 61_000,
        "score": 2.0,
        "reason": None,
    }
    assert tracks[-1]["track_id"] == "t49"


@pytest.mark.parametrize("user_id", ["nobody", "u2", "x" * 300, "%3Cscript%3E", "a%00b"])
def test_unknown_or_playlistless_listener_is_a_json_404(client, user_id: str) -> None:
    response = client.get(f"/api/v1/users/{user_id}/playlists/latest")
    assert response.status_code == 404
    assert response.is_json
    error = response.get_json()["error"]
    assert error["status"] == 404 and error["code"] == "not_found" and error["message"]


def test_playlist_page_lists_fifty_tracks_escaped(client) -> None:
    response = client.get("/users/u1")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.count("<tr data-track-id=") == 50
    assert "Bj\u00f6rk &amp; &lt;Friends&gt;" in html and "<Friends>" not in html
    assert "2026-11-16" in html and "1:01" in html


def test_index_lists_listeners_and_paginates(client) -> None:
    html = client.get("/").get_data(as_text=True)
    assert 'href="/users/u1"' in html and "Ada" in html and 'href="/users/u2"' in html
    assert client.get("/?page=999999999999").status_code == 200
    assert client.get("/?page=abc").status_code == 200


def test_html_errors_for_pages_and_json_errors_for_api(client) -> None:
    page = client.get("/users/nobody")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "404" in page.get_data(as_text=True)
    api = client.get("/api/v1/nothing-here")
    assert api.status_code == 404 and api.get_json()["error"]["code"] == "not_found"
    method = client.post("/api/v1/users/u1/playlists/latest")
    assert method.status_code == 405 and method.get_json()["error"]["status"] == 405


def test_static_files_are_served_by_the_app(client) -> None:
    response = client.get("/static/style.css")
    assert response.status_code == 200 and b"--accent" in response.data
    response.close()


def test_runs_page_shows_steps_chunks_and_errors(app, client) -> None:
    sessions = app.extensions["cratedigger"]["sessions"]
    with sessions.begin() as session:
        run = repository.start_weekly_run(session, WEEK + dt.timedelta(days=7), "beat", "/data")
        repository.begin_step(session, run.id, "aggregate")
        repository.finish_step(session, run.id, "aggregate", counts={"interactions": 1234})
        for chunk in range(3):
            repository.begin_step(session, run.id, "generate", chunk)
        repository.finish_step(session, run.id, "generate", chunk=0, counts={"playlists": 7})
        repository.end_weekly_run(
            session, run.id, "failed", error="GateRejected: <below> popularity"
        )
    html = client.get("/runs").get_data(as_text=True)
    assert f"Run #{run.id}" in html and "failed" in html
    assert "1/3 chunks succeeded" in html and "1234" in html and "7 playlists" in html
    assert "GateRejected: &lt;below&gt; popularity" in html
    # The published run of the fixture is listed too.
    assert html.count('<section class="run"') == 2

"""The published answers in Redis (recsys/db/published.py) behind the latest-playlist API.

Apps on one PostgreSQL database stand for gunicorn workers; the store is a real Redis
(database 6: not one other tests flush). Statements are counted on an app's engine to tell
an answer from Redis (no statement) from a database read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from migrations import upgrade
from recsys.db import published, repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.tokens import authenticate, revoke_token
from recsys.settings import Settings
from tests.conftest import unavailable
from tests.test_cache import _eventually
from tests.webworld import TRACKS, WEEK, build_web_world
from tests.worlds import publish_week_playlists

REDIS_URL = "redis://127.0.0.1:6379/6"
LATEST = "/api/v1/users/{}/playlists/latest"


@pytest.fixture
def redis_client() -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield client
    client.flushdb()
    published.configure("")


@pytest.fixture
def pg_world(postgres_url: str, tmp_path: Path):
    upgrade(postgres_url)
    return build_web_world(postgres_url, tmp_path)


@pytest.fixture
def make_app(pg_world, tmp_path: Path, redis_client) -> Iterator[Callable[..., Any]]:
    """An app whose own cache is off (every answer from Redis or the database)."""
    from webapp import create_app

    apps = []

    def make(redis_url: str = REDIS_URL, entries: int = 0) -> Any:
        settings = Settings(
            data_dir=tmp_path / "state",
            database_url=pg_world.url,
            api_cache_entries=entries,
            serving_redis_url=redis_url,
        )
        app = create_app({"TESTING": True}, settings=settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["cratedigger"]["cache"].close()
        app.extensions["cratedigger"]["engine"].dispose()


def _statements(app: Any) -> list[int]:
    seen = [0]

    def count(*_args: Any) -> None:
        seen[0] += 1

    event.listen(app.extensions["cratedigger"]["engine"], "before_cursor_execute", count)
    return seen


def _get(client: Any, token: str, user: str = "u1") -> Any:
    return client.get(LATEST.format(user), headers={"Authorization": f"Bearer {token}"})


def _publish_answers(url: str) -> int:
    engine = make_engine(url)
    try:
        store = published.store(REDIS_URL)
        assert store is not None
        return published.publish_latest(make_session_factory(engine), store)
    finally:
        engine.dispose()


def _tracks(response: Any) -> list[str]:
    return [track["track_id"] for track in response.get_json()["tracks"]]


def _database_answer(make_app: Callable[..., Any], token: str, user: str = "u1") -> bytes:
    response = _get(make_app(redis_url="").test_client(), token, user)
    assert response.status_code == 200
    data: bytes = response.get_data()
    return data


def test_publication_writes_the_answers_redis_serves_them_byte_for_byte(
    make_app, pg_world, redis_client, monkeypatch
) -> None:
    import webapp.cache

    # The tokens' times of use are written in batches: none within this test.
    monkeypatch.setattr(webapp.cache, "TOUCH_FLUSH_SECONDS", 3600.0)
    assert _publish_answers(pg_world.url) == 2  # u1 and u2 have playlists, u3 none
    keys = sorted(k.decode() for k in redis_client.scan_iter("cd:serve:e*:latest:*"))
    assert [k.rsplit(":", 1)[1] for k in keys] == ["u1", "u2"]
    app = make_app()
    statements = _statements(app)
    client = app.test_client()
    for token, user in ((pg_world.u1, "u1"), (pg_world.u2, "u2")):
        _get(client, token, user)  # a token's first request reads it (tokens are not published)
    assert statements[0] >= 2
    before = statements[0]
    for token, user in ((pg_world.u1, "u1"), (pg_world.u2, "u2")):
        response = _get(client, token, user)
        assert response.status_code == 200
        assert response.get_data() == _database_answer(make_app, token, user)
    assert statements[0] == before  # tokens and answers from Redis: no statement at all
    # The store does not widen what a token may read.
    assert _get(client, pg_world.u1, "u2").status_code == 404
    assert _get(client, pg_world.revoked).status_code == 401


def test_a_thumb_and_its_undo_are_visible_at_once_on_every_worker(make_app, pg_world) -> None:
    _publish_answers(pg_world.url)
    first, second = make_app().test_client(), make_app().test_client()
    tracks = _tracks(_get(first, pg_world.u1))
    assert _tracks(_get(second, pg_world.u1)) == tracks
    gone = tracks[0]
    auth = {"Authorization": f"Bearer {pg_world.u1}"}
    posted = second.post("/api/v1/users/u1/feedback", json={"track_id": gone, "value": "down"})
    assert posted.status_code == 401  # (no token: nothing recorded)
    posted = second.post(
        "/api/v1/users/u1/feedback", json={"track_id": gone, "value": "down"}, headers=auth
    )
    assert posted.status_code == 201
    assert gone not in _tracks(_get(second, pg_world.u1))  # the recording worker: at once
    thumbed = _get(first, pg_world.u1)  # the other worker: the stamp is already replaced
    assert gone not in _tracks(thumbed) and thumbed.get_json()["removed"] == 1
    assert thumbed.get_data() == _database_answer(make_app, pg_world.u1)
    assert second.delete(f"/api/v1/users/u1/feedback/{gone}", headers=auth).status_code == 204
    assert _tracks(_get(first, pg_world.u1)) == tracks
    assert _tracks(_get(second, pg_world.u1)) == tracks


def test_a_revoked_token_is_refused_at_once(make_app, pg_world) -> None:
    _publish_answers(pg_world.url)
    client = make_app().test_client()
    assert _get(client, pg_world.u1).status_code == 200
    assert _get(client, pg_world.u1).status_code == 200  # now its principal is in Redis
    engine = make_engine(pg_world.url)
    with make_session_factory(engine).begin() as session:  # as `cratedigger tokens revoke`
        principal = authenticate(session, pg_world.u1, touch=False)
        assert principal is not None
        revoke_token(session, principal.token_id)
    engine.dispose()
    _eventually(lambda: _get(client, pg_world.u1).status_code == 401, "revocation seen")
    # Another worker, started after the revocation, does not take it from Redis either.
    assert _get(make_app().test_client(), pg_world.u1).status_code == 401


def test_redis_flushed_or_away_falls_back_to_the_database(make_app, pg_world, redis_client) -> None:
    _publish_answers(pg_world.url)
    expected = _database_answer(make_app, pg_world.u1)
    client = make_app().test_client()
    assert _get(client, pg_world.u1).get_data() == expected
    redis_client.flushdb()
    assert _get(client, pg_world.u1).get_data() == expected
    # ... and written back, with fresh stamps.
    assert list(redis_client.scan_iter("cd:serve:e*:latest:u1"))
    away = make_app(redis_url="redis://127.0.0.1:1/0").test_client()  # nothing listens there
    for _ in range(3):
        response = _get(away, pg_world.u1)
        assert response.status_code == 200 and response.get_data() == expected


def test_a_crash_between_publication_and_redis_leaves_nothing_wrong(
    make_app, pg_world, redis_client
) -> None:
    _publish_answers(pg_world.url)
    app = make_app()
    client = app.test_client()
    assert _get(client, pg_world.u1).get_json()["week_start"] == WEEK.isoformat()
    next_week = WEEK + dt.timedelta(days=7)
    engine = make_engine(pg_world.url)
    with make_session_factory(engine).begin() as session:  # the publish step's transaction
        entries = [repository.PlaylistEntry(track, 1.0) for track in TRACKS[40:45]]
        version = f"{WEEK.isoformat()}-abc"
        publish_week_playlists(session, next_week, version, [repository.NewPlaylist("u1", entries)])
    # ... and the process dies before it writes Redis: the old week's keys are all there.
    engine.dispose()
    _eventually(
        lambda: _get(client, pg_world.u1).get_json()["week_start"] == next_week.isoformat(),
        "new week seen",
    )
    assert _tracks(_get(client, pg_world.u1)) == TRACKS[40:45]
    # u2 has no playlist that week: its newest is still last week's, read afresh.
    assert _get(client, pg_world.u2, "u2").get_data() == _database_answer(
        make_app, pg_world.u2, "u2"
    )
    # A publication cut short (one listener's key of the new epoch) is no worse.
    epochs = {k.decode().split(":")[2] for k in redis_client.scan_iter("cd:serve:e*:latest:*")}
    assert len(epochs) == 2  # the old epoch's keys, and the new one's written back
    # The next publication repairs: every listener's key under the current epoch.
    assert _publish_answers(pg_world.url) == 2
    statements = _statements(app)
    for token, user in ((pg_world.u1, "u1"), (pg_world.u2, "u2")):
        assert _get(client, token, user).get_data() == _database_answer(make_app, token, user)
    assert statements[0] == 0


def test_a_new_week_switches_every_answer_at_once(make_app, pg_world, redis_client) -> None:
    _publish_answers(pg_world.url)
    clients = [make_app().test_client() for _ in range(2)]
    next_week = WEEK + dt.timedelta(days=7)
    engine = make_engine(pg_world.url)
    with make_session_factory(engine).begin() as session:
        version = f"{WEEK.isoformat()}-abc"
        playlists = [
            repository.NewPlaylist(user, [repository.PlaylistEntry(t, 1.0) for t in TRACKS[a:b]])
            for user, a, b in (("u1", 40, 45), ("u2", 45, 50))
        ]
        publish_week_playlists(session, next_week, version, playlists)
    engine.dispose()
    _publish_answers(pg_world.url)
    for client in clients:
        _eventually(
            lambda c=client: _get(c, pg_world.u1).get_json()["week_start"] == next_week.isoformat(),
            "new week seen",
        )
        # Once a worker reads the new week for one listener, it does for all: one epoch.
        assert _get(client, pg_world.u2, "u2").get_json()["week_start"] == next_week.isoformat()
        assert _tracks(_get(client, pg_world.u2, "u2")) == TRACKS[45:50]

"""Each worker's cache of tokens and playlist answers, kept true by PostgreSQL notifications.

Two apps on one database stand for two gunicorn workers. Statements are counted on an
app's engine to tell a cached answer (no statement) from a database read.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from migrations import upgrade
from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.tokens import authenticate, revoke_token
from recsys.settings import Settings
from tests.webworld import TRACKS, WEEK, build_web_world
from tests.worlds import publish_week_playlists

LATEST = "/api/v1/users/{}/playlists/latest"


@pytest.fixture
def pg_world(postgres_url: str, tmp_path: Path):
    upgrade(postgres_url)
    return build_web_world(postgres_url, tmp_path)


@pytest.fixture
def make_app(pg_world, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from webapp import create_app

    apps = []

    def make(entries: int = 2048) -> Any:
        settings = Settings(
            data_dir=tmp_path / "state", database_url=pg_world.url, api_cache_entries=entries
        )
        app = create_app({"TESTING": True}, settings=settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["cratedigger"]["cache"].close()
        app.extensions["cratedigger"]["engine"].dispose()


class Statements:
    """Counts the SQL statements an app's engine runs."""

    def __init__(self, app: Any) -> None:
        self.count = 0
        event.listen(app.extensions["cratedigger"]["engine"], "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1

    @contextmanager
    def counting(self) -> Iterator[list[int]]:
        before = self.count
        seen: list[int] = []
        yield seen
        seen.append(self.count - before)


def _get(client: Any, token: str, user: str = "u1", **headers: str) -> Any:
    return client.get(LATEST.format(user), headers={"Authorization": f"Bearer {token}", **headers})


def _eventually(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Notifications cross processes: wait (bounded) until ``check`` holds."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.02)


def _track_ids(response: Any) -> list[str]:
    return [track["track_id"] for track in response.get_json()["tracks"]]


def test_a_cached_answer_reads_nothing_and_says_the_same(make_app, pg_world) -> None:
    app = make_app()
    statements = Statements(app)
    client = app.test_client()
    with statements.counting() as first_read:
        first = _get(client, pg_world.u1)
    with statements.counting() as second_read:
        second = _get(client, pg_world.u1)
    assert first.status_code == second.status_code == 200
    assert first_read[0] >= 1 and second_read[0] == 0
    assert second.get_data() == first.get_data() and second.headers["ETag"] == first.headers["ETag"]
    with statements.counting() as revalidated:
        again = _get(client, pg_world.u1, **{"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and revalidated[0] == 0
    # Another listener's playlist is still not this token's: 404 from the cache too.
    assert _get(client, pg_world.u1, user="u2").status_code == 404
    # An unknown token is never cached: 401 every time, from the database.
    with statements.counting() as refused:
        assert _get(client, "cd_not-a-token").status_code == 401
        assert _get(client, "cd_not-a-token").status_code == 401
    assert refused[0] == 2


def test_a_thumb_reaches_the_same_worker_at_once_and_others_by_notification(
    make_app, pg_world
) -> None:
    first, second = make_app().test_client(), make_app().test_client()
    tracks = _track_ids(_get(first, pg_world.u1))
    assert _track_ids(_get(second, pg_world.u1)) == tracks  # both workers hold it now
    gone = tracks[0]
    posted = second.post(
        "/api/v1/users/u1/feedback",
        json={"track_id": gone, "value": "down"},
        headers={"Authorization": f"Bearer {pg_world.u1}"},
    )
    assert posted.status_code == 201
    # The worker that recorded it forgot the listener's answer before answering.
    assert gone not in _track_ids(_get(second, pg_world.u1))
    # The other worker hears of it from PostgreSQL.
    _eventually(lambda: gone not in _track_ids(_get(first, pg_world.u1)), "thumb seen")
    assert _get(first, pg_world.u1).get_json()["removed"] == 1


def test_a_revoked_token_is_refused_by_a_worker_that_cached_it(make_app, pg_world) -> None:
    client = make_app().test_client()
    assert _get(client, pg_world.u1).status_code == 200
    engine = make_engine(pg_world.url)
    with make_session_factory(engine).begin() as session:  # as `cratedigger tokens revoke`
        principal = authenticate(session, pg_world.u1, touch=False)
        assert principal is not None
        revoke_token(session, principal.token_id)
    engine.dispose()
    _eventually(lambda: _get(client, pg_world.u1).status_code == 401, "revocation seen")


def test_a_published_week_replaces_every_cached_answer(make_app, pg_world) -> None:
    client = make_app().test_client()
    assert _get(client, pg_world.u1).get_json()["week_start"] == WEEK.isoformat()
    next_week = WEEK + dt.timedelta(days=7)
    engine = make_engine(pg_world.url)
    with make_session_factory(engine).begin() as session:  # as the weekly run's publish step
        entries = [repository.PlaylistEntry(track, 1.0) for track in TRACKS[40:45]]
        version = f"{WEEK.isoformat()}-abc"  # the world's newest model
        publish_week_playlists(session, next_week, version, [repository.NewPlaylist("u1", entries)])
    engine.dispose()
    _eventually(
        lambda: _get(client, pg_world.u1).get_json()["week_start"] == next_week.isoformat(),
        "new week seen",
    )
    assert _track_ids(_get(client, pg_world.u1)) == TRACKS[40:45]


def test_a_playlist_rewritten_after_publication_is_read_again(make_app, pg_world) -> None:
    client = make_app().test_client()
    before = _track_ids(_get(client, pg_world.u1))
    engine = make_engine(pg_world.url)
    with make_session_factory(engine).begin() as session:  # as `cratedigger regenerate`
        run_id = session.execute(
            text("SELECT weekly_run_id FROM week_publications WHERE week_start = :w"),
            {"w": WEEK},
        ).scalar_one()
        entries = [repository.PlaylistEntry(track, 1.0) for track in TRACKS[50:53]]
        version = f"{WEEK.isoformat()}-abc"
        repository.replace_week_playlists(
            session, WEEK, version, [repository.NewPlaylist("u1", entries)], run_id
        )
    engine.dispose()
    assert before != TRACKS[50:53]
    _eventually(lambda: _track_ids(_get(client, pg_world.u1)) == TRACKS[50:53], "rewrite seen")


def test_a_broken_listener_empties_the_cache_then_reconnects(make_app, pg_world) -> None:
    app = make_app()
    statements = Statements(app)
    client = app.test_client()
    tracks = _track_ids(_get(client, pg_world.u1))
    cache = app.extensions["cratedigger"]["cache"]
    listener_pid = cache._listener.backend_pid
    engine = make_engine(pg_world.url)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": listener_pid})
        connection.commit()
    # A thumb whose notification the dead listener can never deliver.
    other = make_app().test_client()
    other.post(
        "/api/v1/users/u1/feedback",
        json={"track_id": tracks[1], "value": "down"},
        headers={"Authorization": f"Bearer {pg_world.u1}"},
    )
    engine.dispose()
    # This worker notices the broken connection, drops what it held and reads afresh.
    _eventually(lambda: tracks[1] not in _track_ids(_get(client, pg_world.u1)), "fresh read")

    def listening_again() -> bool:
        _get(client, pg_world.u1)
        return cache._listener is not None

    _eventually(listening_again, "listening again")
    assert cache._listener.backend_pid != listener_pid
    _get(client, pg_world.u1)
    with statements.counting() as cached:
        _get(client, pg_world.u1)
    assert cached[0] == 0  # caching again


def test_the_least_recently_used_listener_leaves_a_full_cache(make_app, pg_world) -> None:
    app = make_app(entries=1)
    statements = Statements(app)
    client = app.test_client()
    operator = pg_world.operator  # one token that reads both listeners
    _get(client, operator, user="u1")
    with statements.counting() as cached:
        _get(client, operator, user="u1")
    _get(client, operator, user="u2")  # u1 leaves
    with statements.counting() as evicted:
        _get(client, operator, user="u1")
    # An operator's read of a listener looks the listener up; the answer itself came from
    # the cache until u2's pushed it out.
    assert cached[0] == 1 and evicted[0] > cached[0]
    # The bound counts answers, not listeners: one listener's many weeks are bounded too.
    bounded = make_app(entries=2)
    client = bounded.test_client()
    for path in ("latest", WEEK.isoformat(), (WEEK - dt.timedelta(days=7)).isoformat()):
        response = client.get(
            f"/api/v1/users/u1/playlists/{path}", headers={"Authorization": f"Bearer {operator}"}
        )
        assert response.status_code == 200
    assert len(bounded.extensions["cratedigger"]["cache"]._answers) == 2


def test_sqlite_and_a_zero_size_read_the_database_every_time(make_app, pg_world, tmp_path) -> None:
    from webapp import create_app

    sqlite_url = f"sqlite:///{tmp_path / 'web.db'}"
    upgrade(sqlite_url)
    sqlite_world = build_web_world(sqlite_url, tmp_path / "sqlite")
    sqlite_app = create_app(
        {"TESTING": True},
        settings=Settings(data_dir=tmp_path / "state", database_url=sqlite_world.url),
    )
    for app, token in ((sqlite_app, sqlite_world.u1), (make_app(entries=0), pg_world.u1)):
        statements = Statements(app)
        client = app.test_client()
        assert _get(client, token).status_code == 200
        with statements.counting() as again:
            assert _get(client, token).status_code == 200
        assert again[0] >= 1
        assert app.extensions["cratedigger"]["cache"].enabled is False
    sqlite_app.extensions["cratedigger"]["engine"].dispose()


def test_a_tokens_time_of_use_is_written_at_most_every_touch_period(make_app, pg_world) -> None:
    from recsys.db.models import ApiToken
    from recsys.db.tokens import TOUCH_EVERY
    from webapp.cache import ReadCache

    engine = make_engine(pg_world.url)
    sessions = make_session_factory(engine)

    def last_used() -> Any:
        with sessions() as session:
            principal = authenticate(session, pg_world.u2, touch=False)
            assert principal is not None
            return session.get(ApiToken, principal.token_id).last_used_at

    client = make_app().test_client()
    assert _get(client, pg_world.u2, user="u2").status_code == 200
    first = last_used()
    assert first is not None  # the first use is recorded
    _get(client, pg_world.u2, user="u2")
    assert last_used() == first  # not again within the period
    # A worker's cached token is due again only after the period, by its own clock.
    now = [1000.0]
    cache = ReadCache(engine, 10, clock=lambda: now[0])
    assert cache.touch_due(7) is True and cache.touch_due(7) is False
    now[0] += TOUCH_EVERY.total_seconds() - 1
    assert cache.touch_due(7) is False
    now[0] += 2
    assert cache.touch_due(7) is True
    engine.dispose()


def test_what_a_request_read_before_a_forget_is_not_kept_after_it(make_app, pg_world) -> None:
    """Threads (the development server) interleave: a request that read a playlist before
    another request forgot that listener must not put the stale answer back."""
    from webapp.cache import Answer

    cache = make_app().extensions["cratedigger"]["cache"]
    stale, fresh = Answer.of('{"v": 1}'), Answer.of('{"v": 2}')
    generation = cache.sync()
    assert generation is not None
    cache.forget_user("u1")  # another thread recorded a thumb meanwhile
    cache.remember_answer("u1", "latest", stale, generation)
    assert cache.answer("u1", "latest") is None
    cache.remember_answer("u1", "latest", fresh, cache.sync())
    assert cache.answer("u1", "latest") == fresh

"""The web app when its servers fail, with the real servers: PostgreSQL dropping every
connection (as on a restart) or refusing new ones, and the rate-limit store (Redis) down,
silent, or going away and coming back.

PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379, as for the other tests; the Redis
that goes away is a ``redis-server`` of this module's own on a spare port.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from recsys.db import changes
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.tokens import authenticate, create_token, revoke_token
from recsys.settings import Settings
from tests.conftest import POSTGRES_URL, unavailable
from tests.test_cache import Statements, _eventually, _get
from tests.test_webapp import sign_in
from webapp import create_app

REDIS_URL = "redis://127.0.0.1:6379/5"  # not one that tests/test_celery.py flushes (8-15)
# What a PostgreSQL restart does to the app's connections (the test's own is spared).
# With a timeout pg_terminate_backend waits until the backends are gone (PostgreSQL 14+):
# without it, on a loaded machine a backend could still be exiting when the next request
# checks its connection, and no check on this side can see a termination not yet made.
TERMINATE_OTHERS = text(
    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
TERMINATE_DATABASE = text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = :name AND pid <> pg_backend_pid()"
)
FALLING_BACK = "falling back to in-memory storage"  # Flask-Limiter's warning
# The web world (tests/conftest.py) on one backend only: the cache needs PostgreSQL; the
# rate-limit store does not care.
ON_POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def make_app(web_settings: Settings, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Apps on the web world with some settings changed (the cache is on by default)."""

    def make(config: dict[str, Any] | None = None, **changed: Any) -> Any:
        settings = web_settings.model_copy(update=changed)
        app = create_app({"TESTING": True, **(config or {})}, settings=settings)
        request.addfinalizer(app.extensions["cratedigger"]["engine"].dispose)
        request.addfinalizer(app.extensions["cratedigger"]["cache"].close)  # runs first
        return app

    return make


# ----------------------------------------------------------------------------- PostgreSQL


def _warm(client: Any, statements: Statements, token: str) -> None:
    """Until the token and its playlist come from the worker's cache (no statement)."""

    def served_from_the_cache() -> bool:
        assert _get(client, token).status_code == 200
        with statements.counting() as read:
            response = _get(client, token)
        return response.status_code == 200 and read[0] == 0

    _eventually(served_from_the_cache, "listening and caching")


@pytest.mark.postgres
@ON_POSTGRESQL
def test_a_token_revoked_as_the_server_drops_every_connection_is_refused_at_once(
    app, web_world
) -> None:
    """Issue 10: the first request after the break used to come from the cache (200)."""
    statements = Statements(app)
    client = app.test_client()
    engine = make_engine(web_world.url)
    sessions = make_session_factory(engine)
    try:
        for attempt in range(1, 4):
            with sessions.begin() as session:
                _row, token = create_token(session, user_id="u1")
            _warm(client, statements, token)
            # As `cratedigger tokens revoke`, while the server ends every other connection.
            with sessions.begin() as session:
                session.execute(TERMINATE_OTHERS)
                principal = authenticate(session, token, touch=False)
                assert principal is not None
                revoke_token(session, principal.token_id)
            with statements.counting() as read:
                first = _get(client, token)
            assert first.status_code == 401, f"attempt {attempt}: {first.status_code}"
            assert read[0] >= 1  # from the database: the cache was not trusted
            assert _get(client, token).status_code == 401
    finally:
        engine.dispose()


class Proxy:
    """A TCP proxy in front of PostgreSQL that can end every connection it carries, after
    sending the client some last bytes."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._pairs.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut(self, last_words: bytes = b"") -> None:
        """End every connection: the server sees its clients leave; each client gets
        ``last_words`` and then the end of the stream."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            with contextlib.suppress(OSError):  # a pair its client had closed already
                upstream.shutdown(socket.SHUT_RDWR)  # also stops the pump towards the client
                client.sendall(last_words)
                client.shutdown(socket.SHUT_RDWR)
            upstream.close()
            client.close()

    def close(self) -> None:
        self._server.close()
        self.cut()


def _notification(payload: str) -> bytes:
    """A NotificationResponse on the changes channel, as PostgreSQL sends it."""
    body = struct.pack("!i", 1) + changes.CHANNEL.encode() + b"\0" + payload.encode() + b"\0"
    return b"A" + struct.pack("!i", len(body) + 4) + body


@pytest.mark.postgres
@ON_POSTGRESQL
def test_a_listener_whose_stream_ended_behind_its_last_message_is_not_trusted(
    make_app, web_world
) -> None:
    """The end of the stream waits, unread, behind a last notification: reading that
    notification gives no error, and the cache must still not be trusted."""
    url = make_url(web_world.url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        app = make_app(database_url=proxied)
        statements = Statements(app)
        client = app.test_client()
        _warm(client, statements, web_world.u1)
        proxy.cut(_notification(f"{changes.USER} u9"))  # a change of someone else's, then the end
        engine = make_engine(web_world.url)  # not through the proxy
        with make_session_factory(engine).begin() as session:
            principal = authenticate(session, web_world.u1, touch=False)
            assert principal is not None
            revoke_token(session, principal.token_id)  # its announcement reaches no one
        engine.dispose()
        assert _get(client, web_world.u1).status_code == 401
    finally:
        proxy.close()


def _served_or_unavailable(response: Any) -> None:
    """A normal answer, or a 503 in the project's error shape that says when to come back."""
    assert response.status_code in (200, 503), response.get_data(as_text=True)[:500]
    if response.status_code == 503:
        assert int(response.headers["Retry-After"]) > 0
        if response.is_json:
            assert response.get_json()["error"]["code"] == "unavailable"
        else:
            assert response.mimetype == "text/html" and "not answering" in response.text


@pytest.mark.postgres
@ON_POSTGRESQL
def test_requests_while_postgresql_restarts_are_never_500(app, web_world) -> None:
    api, page = app.test_client(), app.test_client()
    assert sign_in(page, web_world.u1).status_code == 303

    def ask() -> list[Any]:
        return [_get(api, web_world.u1), page.get("/users/u1")]

    # From the server's own database: a database cannot refuse connections to itself.
    admin = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    database = make_url(web_world.url).database

    def restart_again_and_again() -> None:
        with admin.connect() as connection:
            for _ in range(8):
                connection.execute(TERMINATE_DATABASE, {"name": database})
                time.sleep(0.05)

    try:
        # Every connection dropped, again and again, while requests are served.
        restarts = threading.Thread(target=restart_again_and_again)
        restarts.start()
        answers: list[Any] = []
        while restarts.is_alive():
            answers += ask()
        restarts.join()
        assert len(answers) >= 4
        for response in answers:
            _served_or_unavailable(response)
        # Recovered by itself: dead pooled connections are found and replaced at checkout.
        assert [response.status_code for response in ask()] == [200, 200]

        # The server refusing connections, as while it starts again.
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            connection.execute(TERMINATE_DATABASE, {"name": database})
        away = [*ask(), sign_in(app.test_client(), web_world.u1)]
        assert [response.status_code for response in away] == [503, 503, 503]
        for response in away:
            _served_or_unavailable(response)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        admin.engine.dispose()
    _eventually(lambda: [r.status_code for r in ask()] == [200, 200], "answering again")


# ----------------------------------------------------------------------------- Redis


@pytest.fixture
def limited_app(make_app) -> Callable[..., Any]:
    """Apps whose sign-in failures are counted at ``storage_url``."""

    def make(storage_url: str, limit: str = "3 per minute", **config: Any) -> Any:
        return make_app(config, ratelimit_storage_url=storage_url, signin_rate_limit=limit)

    return make


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


def _limiter_warnings(caplog: pytest.LogCaptureFixture, text_: str) -> int:
    return sum(text_ in record.getMessage() for record in caplog.records)


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@ON_SQLITE
def test_sign_in_while_the_rate_limit_store_is_down(
    limited_app, web_world, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10: every sign-in answered 500, valid tokens too."""
    caplog.set_level(logging.INFO)
    app = limited_app("redis://127.0.0.1:1/0")  # nothing listens there
    signed = sign_in(app.test_client(), web_world.u1)
    assert signed.status_code == 303 and signed.headers["Location"] == "/users/u1"
    # Failures are counted in memory meanwhile: the limit still holds.
    codes = [sign_in(app.test_client(), "cd_wrong").status_code for _ in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    assert sign_in(app.test_client(), web_world.u2).status_code == 303
    assert _limiter_warnings(caplog, FALLING_BACK) == 1  # once for the outage, not per request
    _no_errors_logged(caplog)


@ON_SQLITE
def test_a_rate_limit_store_that_never_answers_does_not_hang_sign_in(
    limited_app, web_world
) -> None:
    # The kernel completes the connections; nothing ever reads or answers them. Closed after
    # 10 s, so that without a timeout the sign-in fails instead of hanging the test for good.
    silent = socket.create_server(("127.0.0.1", 0), backlog=16)
    timer = threading.Timer(10, silent.close)
    timer.start()
    try:
        app = limited_app(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        assert sign_in(app.test_client(), "cd_wrong").status_code == 401
        assert sign_in(app.test_client(), web_world.u1).status_code == 303
        assert time.monotonic() - started < 3
    finally:
        timer.cancel()
        silent.close()


def _answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    if not _answers(REDIS_URL):
        unavailable(f"Redis not reachable at {REDIS_URL}")
    return REDIS_URL


def _limiter_keys(url: str, prefix: str = "", *, delete: bool = False) -> list[str]:
    """The rate-limit counters in the Redis at ``url`` (of Flask-Limiter's ``prefix``)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, decode_responses=True)
    try:
        keys = sorted(client.scan_iter(f"*LIMITER/{prefix}/*" if prefix else "*LIMITER/*"))
        if delete and keys:
            client.delete(*keys)
        return keys
    finally:
        client.close()


@ON_SQLITE
def test_sign_in_failures_are_counted_in_redis_and_shared(
    limited_app, web_world, redis_url: str
) -> None:
    prefix = f"cratedigger-test-{uuid.uuid4().hex[:8]}"  # this test's keys only
    worker, other_worker = (
        limited_app(redis_url, RATELIMIT_KEY_PREFIX=prefix),
        limited_app(redis_url, RATELIMIT_KEY_PREFIX=prefix),
    )
    try:
        signed = sign_in(worker.test_client(), web_world.u1)
        assert signed.status_code == 303 and signed.headers["Location"] == "/users/u1"
        codes = [sign_in(worker.test_client(), "cd_wrong").status_code for _ in range(3)]
        assert codes == [401, 401, 401]
        keys = _limiter_keys(redis_url, prefix)
        assert any("address:" in key for key in keys)
        assert any("token:cd_wrong" in key for key in keys)
        # Another worker sees the same counts, and still lets a valid token in.
        assert sign_in(other_worker.test_client(), "cd_wrong").status_code == 429
        assert sign_in(other_worker.test_client(), web_world.u2).status_code == 303
    finally:
        _limiter_keys(redis_url, prefix, delete=True)


class RedisServer:
    """A ``redis-server`` of the test's own on ``port``, to stop and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not _answers(self.url):
            assert self._process.poll() is None, "redis-server did not start"
            assert time.monotonic() < deadline, "redis-server does not answer"
            time.sleep(0.05)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    server = RedisServer(_free_port())
    server.start()
    yield server
    server.kill()


@ON_SQLITE
def test_redis_going_away_mid_traffic_and_coming_back(
    limited_app, web_world, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = limited_app(own_redis.url, limit="1000 per minute")
    assert sign_in(app.test_client(), "cd_wrong").status_code == 401
    assert _limiter_keys(own_redis.url) != []  # counted in Redis
    own_redis.kill()
    for _ in range(3):
        signed = sign_in(app.test_client(), web_world.u1)
        assert signed.status_code == 303 and signed.headers["Location"] == "/users/u1"
        assert sign_in(app.test_client(), "cd_wrong").status_code == 401
    assert _limiter_warnings(caplog, FALLING_BACK) == 1
    own_redis.start()  # empty, on the same port
    # Flask-Limiter tries the store again after 1, 2, 4 ... 32 s: back on Redis by itself.
    deadline = time.monotonic() + 40
    while not _limiter_keys(own_redis.url):
        assert time.monotonic() < deadline, "not counting in Redis again"
        assert sign_in(app.test_client(), "cd_wrong").status_code == 401
        time.sleep(0.1)
    assert _limiter_warnings(caplog, "storage recovered") == 1
    assert sign_in(app.test_client(), web_world.u1).status_code == 303
    _no_errors_logged(caplog)

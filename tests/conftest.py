"""Shared fixtures: a Spark session, SQLite and PostgreSQL databases, settings, data folders.

Tests that need a server (PostgreSQL) skip with the reason when it is not reachable, unless
CRATEDIGGER_REQUIRE_SERVICES=1 (set by .ci/run), which turns those skips into failures.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.settings import Settings
from tests.worlds import World

CHROMIUM = "/usr/bin/chromium"
REQUIRE_SERVICES = os.environ.get("CRATEDIGGER_REQUIRE_SERVICES") == "1"
# The weekly run's own parameter search costs trials of ALS: only the tests about it
# (tests/test_self_tuning.py) turn it on. The commands the tests run inherit this too.
os.environ.setdefault("CRATEDIGGER_TUNE_EVERY_WEEKS", "0")
POSTGRES_URL = os.environ.get(
    "CRATEDIGGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def unavailable(reason: str) -> None:
    """Skip, or fail when the run requires every service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def spark():
    import shutil

    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        unavailable("Java is not installed (PySpark needs Java 17)")
    from jobs.spark import get_spark

    session = get_spark("local[2]", app_name="cratedigger-tests", shuffle_partitions=2)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        unavailable(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc.orig}")
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cratedigger_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "state",
        database_url=f"sqlite:///{tmp_path / 'state.db'}",
        spark_master="local[2]",
        spark_shuffle_partitions=2,
        als_factors=16,
        als_iterations=10,
    )


@pytest.fixture
def migrated_url(database_url: str) -> str:
    from migrations import upgrade

    upgrade(database_url)
    return database_url


@pytest.fixture
def two_groups() -> World:
    from tests.worlds import two_taste_groups

    return two_taste_groups()


@pytest.fixture
def web_world(migrated_url: str, tmp_path: Path):
    from tests.webworld import build_web_world

    return build_web_world(migrated_url, tmp_path)


@pytest.fixture
def web_settings(web_world, tmp_path: Path) -> Settings:
    from tests.webworld import MEDIA_HOST

    return Settings(data_dir=tmp_path / "state", database_url=web_world.url, media_hosts=MEDIA_HOST)


@pytest.fixture
def app(web_settings: Settings):
    from webapp import create_app

    app = create_app({"TESTING": True}, settings=web_settings)
    yield app
    app.extensions["cratedigger"]["cache"].close()
    app.extensions["cratedigger"]["engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


# Pages in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): a live
# server of the ``app`` fixture, and a page whose ``csp_violations`` lists what the console
# reported of the Content-Security-Policy.


@pytest.fixture
def live_url(app) -> Iterator[str]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def page(live_url: str):
    executable = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if executable is None:
        unavailable("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.csp_violations = []  # type: ignore[attr-defined]
        page.on(
            "console",
            lambda message: (
                page.csp_violations.append(message.text)  # type: ignore[attr-defined]
                if "Content Security Policy" in message.text
                else None
            ),
        )
        yield page
        context.close()
        browser.close()

"""Flask application factory: listener pages, operator pages and the JSON API."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask import Flask, g
from sqlalchemy.orm import Session
from werkzeug.middleware.proxy_fix import ProxyFix

from recsys.db import published
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.schema import is_up_to_date
from recsys.settings import ConfigError, Settings, load_settings
from webapp import security
from webapp.cache import ReadCache

log = logging.getLogger(__name__)


def create_app(
    test_config: dict[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    dev: bool = False,
) -> Flask:
    """Build the app. ``settings`` default to the ``CRATEDIGGER_*`` environment.

    ``test_config`` updates Flask's config (``TESTING`` and the like) after the defaults.
    Without ``CRATEDIGGER_SECRET_KEY`` the app refuses to start, except in development
    (``dev=True``, Flask's debug mode or ``TESTING``), where it makes a throwaway key.

    Raises
    ------
    ConfigError
        If no secret key is configured outside development.
    """
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=64 * 1024,
        SESSION_COOKIE_NAME="cratedigger_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(days=30),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the signed session
        **security.limiter_config(settings.ratelimit_storage_url),
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update(test_config)
    _set_secret_key(app, settings, dev=dev)
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_prefix=n
        )
    engine = make_engine(settings.database_url)
    app.extensions["cratedigger"] = {
        "settings": settings,
        "engine": engine,
        # Reads in autocommit: no BEGIN and ROLLBACK round trips around a request's reads.
        "sessions": make_session_factory(engine.execution_options(isolation_level="AUTOCOMMIT")),
        # Writes that must commit together (a thumb and its announcement): db_transaction().
        "transactions": make_session_factory(engine),
        # Opens its listening connection on first use, so in each worker after the fork.
        "cache": ReadCache(
            engine,
            settings.api_cache_entries,
            serving=published.configure(settings.serving_redis_url),
        ),
    }
    try:
        if not is_up_to_date(engine):
            log.warning(
                "database schema is not at the newest revision: run `cratedigger db upgrade`"
            )
    except Exception:  # a server that is down must not stop the app from starting
        log.exception("could not check the database schema revision")
    finally:
        # gunicorn loads the app before it forks its workers: a pooled connection opened
        # here would be shared by every worker. Close it; each worker opens its own.
        engine.dispose()

    @app.before_request
    def _apply_announced_changes() -> None:
        # Every request drains the notifications, whatever its route (webapp/cache.py).
        g.cache_generation = app.extensions["cratedigger"]["cache"].sync()

    @app.teardown_appcontext
    def _close_session(error: BaseException | None) -> None:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            if error is not None:
                session.rollback()
            session.close()

    from webapp import api, auth, errors, operator, pages

    limiter = security.init_app(app, settings)
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(operator.bp, url_prefix="/operator")
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    auth.init_app(app, limiter)
    security.csrf.exempt(api.bp)  # the API takes bearer tokens only, never the cookie
    errors.register(app)
    return app


def _set_secret_key(app: Flask, settings: Settings, *, dev: bool) -> None:
    if settings.secret_key is not None:
        app.secret_key = settings.secret_key.get_secret_value()
    elif app.config.get("SECRET_KEY"):
        pass
    elif dev or app.debug or app.testing:
        app.secret_key = secrets.token_hex(32)
        log.warning("no CRATEDIGGER_SECRET_KEY: using a throwaway key; sign-ins end on restart")
    else:
        command = _flask_command()
        if command is not None and command != "run":
            app.secret_key = secrets.token_hex(32)  # `flask routes`, `flask shell`: no cookie
            return
        message = (
            "CRATEDIGGER_SECRET_KEY is not set: the web app signs its session cookies with it "
            "and will not start without one. Make one with "
            '`python -c "import secrets; print(secrets.token_hex(32))"`.'
        )
        if command is not None:  # `flask run`: one line, as the flask CLI reports errors
            raise click.ClickException(message)
        raise ConfigError(message)


def _flask_command() -> str | None:
    """The ``flask`` command loading the app (``run``, ``routes``, ``shell``, ...), None when
    the app is not loaded by the flask CLI (gunicorn, ``cratedigger serve``, tests)."""
    from flask.cli import FlaskGroup

    context = click.get_current_context(silent=True)
    if context is None or not isinstance(context.find_root().command, FlaskGroup):
        return None
    return context.info_name


def settings_of(app: Flask) -> Settings:
    settings: Settings = app.extensions["cratedigger"]["settings"]
    return settings


def read_cache() -> ReadCache:
    """This worker's cache of tokens and playlist answers (:mod:`webapp.cache`); trust it in
    this request only if ``g.cache_generation`` is not None."""
    from flask import current_app

    cache: ReadCache = current_app.extensions["cratedigger"]["cache"]
    return cache


@contextmanager
def db_transaction() -> Iterator[Session]:
    """A session whose writes commit together when the block ends, or not at all."""
    from flask import current_app

    with current_app.extensions["cratedigger"]["transactions"].begin() as session:
        yield session


def db_session() -> Session:
    """The request's database session, opened on first use and closed at teardown."""
    from flask import current_app

    if "db_session" not in g:
        g.db_session = current_app.extensions["cratedigger"]["sessions"]()
    session: Session = g.db_session
    return session

"""Flask application factory: listener pages and the JSON API over the playlists table."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g
from sqlalchemy.orm import Session

from recsys.db.engine import make_engine, make_session_factory
from recsys.db.migrate import is_up_to_date
from recsys.settings import Settings, load_settings

log = logging.getLogger(__name__)


def create_app(
    test_config: dict[str, Any] | None = None, *, settings: Settings | None = None
) -> Flask:
    """Build the app. ``settings`` default to the ``CRATEDIGGER_*`` environment.

    ``test_config`` updates Flask's config (``TESTING`` and the like) after the defaults.
    """
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.from_mapping(MAX_CONTENT_LENGTH=64 * 1024)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update(test_config)
    engine = make_engine(settings.database_url)
    app.extensions["cratedigger"] = {
        "settings": settings,
        "engine": engine,
        "sessions": make_session_factory(engine),
    }
    try:
        if not is_up_to_date(engine):
            log.warning(
                "database schema is not at the newest revision: run `cratedigger db upgrade`"
            )
    except Exception:  # a server that is down must not stop the app from starting
        log.exception("could not check the database schema revision")

    @app.teardown_appcontext
    def _close_session(error: BaseException | None) -> None:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            if error is not None:
                session.rollback()
            session.close()

    from webapp import api, errors, pages

    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    errors.register(app)
    return app


def db_session() -> Session:
    """The request's database session, opened on first use and closed at teardown."""
    from flask import current_app

    if "db_session" not in g:
        g.db_session = current_app.extensions["cratedigger"]["sessions"]()
    session: Session = g.db_session
    return session

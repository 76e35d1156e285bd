"""HTML pages for listeners."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template, request

from recsys.contract import is_valid_id
from recsys.db import repository
from webapp import db_session
from webapp.views import playlist_document

bp = Blueprint("pages", __name__)

PER_PAGE = 50


@bp.get("/")
def index() -> Any:
    page = request.args.get("page", default=1, type=int) or 1
    page = max(1, min(page, 1_000_000))
    session = db_session()
    total = repository.count_listeners(session)
    listeners = repository.list_listeners(session, limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
    pages = max(1, -(-total // PER_PAGE))
    return render_template("index.html", listeners=listeners, page=page, pages=pages, total=total)


@bp.get("/users/<user_id>")
def listener(user_id: str) -> Any:
    session = db_session()
    if not is_valid_id(user_id):
        abort(404, f"There is no listener {user_id!r}.")
    user = repository.get_user(session, user_id)
    if user is None:
        abort(404, f"There is no listener {user_id!r}.")
    playlist = repository.latest_playlist(session, user_id)
    document = playlist_document(playlist) if playlist is not None else None
    return render_template("user.html", user=user, playlist=document)


@bp.get("/runs")
def runs() -> Any:
    """Operators: the latest weekly runs with their steps, counts, timings and errors."""
    limit = max(1, min(request.args.get("limit", default=20, type=int) or 20, 200))
    session = db_session()
    return render_template("runs.html", runs=repository.recent_weekly_runs(session, limit))

"""JSON API, version 1."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from recsys.contract import is_valid_id
from recsys.db import repository
from webapp import db_session
from webapp.errors import error_response
from webapp.views import playlist_document

bp = Blueprint("api", __name__)


@bp.get("/users/<user_id>/playlists/latest")
def latest_playlist(user_id: str) -> Any:
    """The listener's newest weekly playlist."""
    session = db_session()
    if not is_valid_id(user_id) or repository.get_user(session, user_id) is None:
        return error_response(404, f"no listener {user_id!r}")
    playlist = repository.latest_playlist(session, user_id)
    if playlist is None:
        return error_response(404, f"listener {user_id!r} has no playlist yet")
    return playlist_document(playlist)

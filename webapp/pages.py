"""HTML pages for listeners: this week's playlist, previous weeks, thumbs up and down."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)

from recsys.contract import is_valid_id, parse_week
from recsys.db import feedback, repository
from recsys.db.repository import PublishedPlaylist
from recsys.db.tokens import Principal
from webapp import art, db_session, db_transaction, read_cache, settings_of, views
from webapp.auth import page_login_required, web_principal
from webapp.exports import FORMATS, MUSICBRAINZ_RECORDING, download
from webapp.views import playlist_document

bp = Blueprint("pages", __name__)

HISTORY_PER_PAGE = 20
THUMB_VALUES = {"up": feedback.UP, "down": feedback.DOWN}


@bp.get("/")
def index() -> Any:
    principal = web_principal()
    if principal is None:
        return redirect(url_for("auth.signin"), 303)
    if principal.is_operator:
        return redirect(url_for("operator.overview"), 303)
    return redirect(url_for("pages.listener", user_id=principal.user_id), 303)


def _readable_listener(user_id: str) -> tuple[Principal, Any]:
    """The signed-in principal and the listener, or 404 when the listener is not theirs to
    read (the same answer as for a listener that does not exist, so ids cannot be probed)."""
    principal = web_principal()
    assert principal is not None  # page_login_required ran first
    if not is_valid_id(user_id) or not principal.may_read(user_id):
        abort(404, f"There is no listener {user_id!r}.")
    user = repository.get_user(db_session(), user_id)
    if user is None:
        abort(404, f"There is no listener {user_id!r}.")
    return principal, user


@bp.get("/users/<user_id>")
@page_login_required
def listener(user_id: str) -> Any:
    principal, user = _readable_listener(user_id)
    session = db_session()
    playlist = repository.latest_playlist(session, user_id)
    return _playlist_page(principal, user, playlist, latest=True)


@bp.get("/users/<user_id>/weeks/<week>")
@page_login_required
def listener_week(user_id: str, week: str) -> Any:
    principal, user = _readable_listener(user_id)
    return _playlist_page(principal, user, _week_playlist(user_id, week), latest=False)


def _week_playlist(user_id: str, week: str) -> PublishedPlaylist:
    """The listener's published playlist of the week starting ``week``, or 404."""
    try:
        week_start = parse_week(week)
    except ValueError as exc:
        abort(404, str(exc))
    playlist = repository.playlist_of_week(db_session(), user_id, week_start)
    if playlist is None:
        abort(404, f"No playlist for the week of {week_start.isoformat()}.")
    return playlist


def _playlist_page(
    principal: Principal, user: Any, playlist: PublishedPlaylist | None, *, latest: bool
) -> Any:
    removed = []
    document = None
    if playlist is not None:
        if playlist.thumbs:
            removed = [t for t in playlist.tracks() if playlist.thumbs.get(t["track_id"], 0) < 0]
        document = playlist_document(playlist)
        hosts = settings_of(current_app).media_host_list
        for track in document["tracks"]:
            track["cover"] = _cover(track.get("image_url"), track["artist_id"], hosts)
            preview = track.get("preview_url")
            track["preview"] = preview if art.allowed(preview, hosts) else None
            mbid = track.get("musicbrainz_recording_id")
            track["musicbrainz_url"] = MUSICBRAINZ_RECORDING + mbid if mbid else None
    return render_template(
        "user.html",
        user=user,
        playlist=document,
        removed_tracks=removed,
        latest=latest,
        can_rate=principal.may_write(user.user_id),
        export_formats=FORMATS,
    )


def _cover(image_url: str | None, artist_id: str, hosts: Sequence[str]) -> str:
    """The image a track's row shows: the catalog's, from an allowed host, or a placeholder
    drawn for its artist."""
    if image_url and art.allowed(image_url, hosts):
        return image_url
    return url_for("pages.placeholder", seed=artist_id)


@bp.get("/art/<seed>.svg")
def placeholder(seed: str) -> Any:
    """A placeholder cover (no sign-in: it shows nothing of anyone's; cached for a year)."""
    if not is_valid_id(seed):
        abort(404, "No such image.")
    response = current_app.response_class(art.placeholder_svg(seed), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


@bp.get("/users/<user_id>/weeks/<week>/playlist.<fmt>")
@page_login_required
def export(user_id: str, week: str, fmt: str) -> Any:
    """A week's playlist as a file (JSPF, XSPF or M3U), as the page lists it."""
    _readable_listener(user_id)
    export_format = next((f for f in FORMATS.values() if f.extension == fmt), None)
    if export_format is None:
        abort(404, f"No export as {fmt[:20]!r}: try .jspf, .xspf or .m3u8.")
    return download(playlist_document(_week_playlist(user_id, week)), export_format)


@bp.get("/users/<user_id>/history")
@page_login_required
def history(user_id: str) -> Any:
    _principal, user = _readable_listener(user_id)
    page = max(1, min(request.args.get("page", default=1, type=int) or 1, 100_000))
    summaries, total = repository.list_playlists(
        db_session(), user_id, limit=HISTORY_PER_PAGE, offset=(page - 1) * HISTORY_PER_PAGE
    )
    pages = max(1, -(-total // HISTORY_PER_PAGE))
    hosts = settings_of(current_app).media_host_list
    covers = {
        summary.week_start: [
            (_cover(cover.image_url, cover.artist_id, hosts), cover.title)
            for cover in summary.covers
        ]
        for summary in summaries
    }
    return render_template(
        "history.html",
        user=user,
        playlists=summaries,
        covers=covers,
        page=page,
        pages=pages,
        total=total,
    )


@bp.post("/users/<user_id>/thumbs")
@page_login_required
def thumb(user_id: str) -> Any:
    """A thumbs-up or thumbs-down from the playlist page (CSRF-checked form post)."""
    _check_rater(user_id)
    track_id = request.form.get("track_id", "")
    value = THUMB_VALUES.get(request.form.get("value", ""))
    if value is None or not is_valid_id(track_id):
        abort(400, "A thumb needs a track and a value of 'up' or 'down'.")
    try:
        with db_transaction() as session:  # the thumb and its announcement, together
            feedback.record_thumb(session, user_id, track_id, value, source="web")
    except ValueError as exc:
        abort(400, str(exc))
    read_cache().forget_user(user_id)  # other workers hear of it from the database
    track = repository.get_track(db_session(), track_id)
    title = track.title if track is not None else track_id
    if value < 0:
        flash(f"“{title}” is gone; you will not be offered it again.")
    else:
        flash(f"Glad you like “{title}”: next week's playlist will take it into account.")
    return _back_to_playlist(user_id)


@bp.post("/users/<user_id>/thumbs/undo")
@page_login_required
def undo_thumb(user_id: str) -> Any:
    """Take back a thumb from the playlist page (CSRF-checked form post)."""
    _check_rater(user_id)
    track_id = request.form.get("track_id", "")
    if not is_valid_id(track_id):
        abort(400, "Taking a thumb back needs a track.")
    with db_transaction() as session:
        removed = feedback.withdraw_thumbs(session, user_id, track_id)
    read_cache().forget_user(user_id)
    track = repository.get_track(db_session(), track_id)
    title = track.title if track is not None else track_id
    flash(f"Your thumb on “{title}” is taken back." if removed else f"No thumb on “{title}”.")
    return _back_to_playlist(user_id)


def _check_rater(user_id: str) -> None:
    """404 unless the signed-in principal is this listener (who alone rates their tracks)."""
    principal = web_principal()
    assert principal is not None
    if not is_valid_id(user_id) or not principal.may_write(user_id):
        abort(404, f"There is no listener {user_id!r}.")


def _back_to_playlist(user_id: str) -> Any:
    """303 to the playlist page the form was on (the week's, if the form says which)."""
    week = request.form.get("week", "")
    target = url_for("pages.listener", user_id=user_id)
    if week:
        with contextlib.suppress(ValueError):
            target = url_for("pages.listener_week", user_id=user_id, week=parse_week(week))
    return redirect(f"{target}#playlist", 303)


@bp.app_template_filter("duration")
def duration(ms: int) -> str:
    seconds = max(0, int(ms)) // 1000
    return f"{seconds // 60}:{seconds % 60:02d}"


@bp.app_template_filter("week_label")
def week_label(week: str | dt.date) -> str:
    return views.week_label(dt.date.fromisoformat(week) if isinstance(week, str) else week)

"""JSON API, version 1. Every route but health, readiness and the document itself takes
``Authorization: Bearer <token>``; see :mod:`webapp.openapi` for the contract."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request, url_for
from sqlalchemy import text
from werkzeug.exceptions import BadRequest, NotFound, UnsupportedMediaType

from recsys.als import ALSModel
from recsys.contract import is_valid_id, parse_week
from recsys.db import feedback, repository
from recsys.db.published import touch_tokens
from recsys.db.schema import is_up_to_date
from recsys.db.tokens import Principal, checked_digest
from webapp import db_session, db_transaction, read_cache, settings_of
from webapp.auth import (
    Forbidden,
    bearer_principal,
    bearer_principal_and_read,
    bearer_token,
    require_operator,
)
from webapp.cache import Answer
from webapp.errors import error_response
from webapp.exports import FORMATS, download
from webapp.openapi import openapi_document, query_parameters
from webapp.views import (
    feedback_document,
    model_document,
    playlist_document,
    playlist_json,
    playlist_summary_document,
    run_document,
    track_document,
)

bp = Blueprint("api", __name__)

MAX_PER_PAGE = 100
FEEDBACK_FIELDS = frozenset({"track_id", "value"})


@bp.before_request
def _refuse_unknown_query_parameters() -> None:
    """A misspelt parameter (``?perpage=5``) is an error, not silently a default."""
    rule = request.url_rule
    if rule is None or not request.args:
        return
    allowed = query_parameters(rule.rule.removeprefix("/api/v1"), request.method)
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        known = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(f"unknown query parameter(s) {names}; this route takes: {known}")


def _int_arg(name: str, default: int, lowest: int, highest: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if not lowest <= value <= highest:
        raise BadRequest(f"query parameter {name!r} must be between {lowest} and {highest}")
    return value


def _page_args() -> tuple[int, int]:
    return _int_arg("page", 1, 1, 1_000_000), _int_arg("per_page", 20, 1, MAX_PER_PAGE)


def _paginated(
    items: list[Any], total: int, page: int, per_page: int, endpoint: str, **kw: Any
) -> Response:
    pages = max(1, -(-total // per_page))
    links = {}
    if page < pages:
        links["next"] = url_for(endpoint, page=page + 1, per_page=per_page, **kw)
    if page > 1:
        links["prev"] = url_for(endpoint, page=page - 1, per_page=per_page, **kw)
    response = jsonify(
        {
            "items": items,
            "page": page,
            "per_page": per_page,
            "total": total,
            "next": links.get("next"),
            "prev": links.get("prev"),
        }
    )
    if links:
        response.headers["Link"] = ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items())
    return response


def _listener_for(principal: Principal, user_id: str) -> None:
    """404 unless the principal may read this existing listener (no probing of ids)."""
    if not is_valid_id(user_id) or not principal.may_read(user_id):
        raise NotFound(f"no listener {user_id!r}")
    # A listener's own token proves the listener exists (tokens go with their user); only
    # an operator's id needs looking up.
    if principal.user_id != user_id and repository.get_user(db_session(), user_id) is None:
        raise NotFound(f"no listener {user_id!r}")


def _cacheable(answer: Answer) -> Response:
    """A private JSON response with a strong ETag; a matching If-None-Match gets 304.

    The headers are written directly (this is the API's hottest path); only a request that
    sends If-None-Match has it parsed.
    """
    max_age = settings_of(current_app).playlist_max_age
    headers = {
        "ETag": answer.quoted_etag,
        "Cache-Control": f"private, max-age={max_age}, must-revalidate",
        "Vary": "Authorization",
    }
    if "If-None-Match" in request.headers and request.if_none_match.contains_weak(answer.etag):
        return Response(status=304, headers=headers)
    return Response(answer.body, mimetype="application/json", headers=headers)


# ----------------------------------------------------------------------------- service


@bp.get("/health")
def health() -> Any:
    """Liveness: the process answers. Touches nothing else."""
    return {"status": "ok"}


@bp.get("/ready")
def ready() -> Any:
    """Readiness: the database answers and its schema is at the newest revision."""
    checks: dict[str, str] = {}
    try:
        session = db_session()
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
        engine = current_app.extensions["cratedigger"]["engine"]
        checks["schema"] = "ok" if is_up_to_date(engine) else "behind: run `cratedigger db upgrade`"
    except Exception as exc:  # any failure means not ready; say which
        checks.setdefault("database", f"unavailable: {type(exc).__name__}")
    ok = all(value == "ok" for value in checks.values()) and len(checks) == 2
    return {"status": "ready" if ok else "unavailable", "checks": checks}, 200 if ok else 503


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())


@bp.get("/docs")
def docs() -> Any:
    """The API's documentation, rendered from the OpenAPI document."""
    from webapp.apidocs import build_docs  # only this page needs the Markdown renderer

    return render_template(
        "api_docs.html", docs=build_docs(openapi_document(), origin=request.host_url)
    )


# ----------------------------------------------------------------------------- playlists


@bp.get("/users/<user_id>/playlists")
def list_playlists(user_id: str) -> Any:
    """The listener's published weekly playlists, newest first."""
    return _listener_page(
        user_id, repository.list_playlists, playlist_summary_document, "api.list_playlists"
    )


def _listener_page(
    user_id: str,
    fetch: Callable[..., tuple[list[Any], int]],
    document: Callable[[Any], dict[str, Any]],
    endpoint: str,
) -> Response:
    """One page of a listener's rows (``fetch(session, user_id, limit=, offset=)``)."""
    principal = bearer_principal()
    page, per_page = _page_args()
    _listener_for(principal, user_id)
    rows, total = fetch(db_session(), user_id, limit=per_page, offset=(page - 1) * per_page)
    items = [document(row) for row in rows]
    return _paginated(items, total, page, per_page, endpoint, user_id=user_id)


def _playlist_response(
    user_id: str, statement: Any, params: dict[str, Any], missing: str, key: Hashable
) -> Any:
    """The playlist ``statement`` reads, for the bearer token's principal.

    From this worker's cache (no database round trip) when it holds the token and the
    answer; else, for the newest playlist, from the shared store of published answers
    (:mod:`recsys.db.published`: one Redis round trip) when it holds them; otherwise the
    token and the playlist are read in one database round trip (and written back).
    """
    cache = read_cache()
    generation: int | None = g.get("cache_generation")
    trusted = generation is not None
    token_digest = checked_digest(bearer_token())
    principal = cache.principal(token_digest) if trusted and token_digest else None
    if principal is not None:
        _listener_for(principal, user_id)
        cached = cache.answer(user_id, key)
        if cached is not None:
            _touch(principal.token_id)
            return _cacheable(cached)
    serving = cache.serving() if trusted and token_digest and key == "latest" else None
    lookup = (
        serving[0].read(serving[1], user_id, token_digest) if serving and token_digest else None
    )
    row = lookup.row if lookup is not None else None
    if principal is None and lookup is not None and lookup.principal is not None:
        principal = lookup.principal
        _listener_for(principal, user_id)
    if principal is not None and lookup is not None and lookup.rendered is not None:
        _touch(principal.token_id)
        stored = Answer(*lookup.rendered)
        if generation is not None:
            assert token_digest is not None
            cache.remember_principal(token_digest, principal, generation)
            cache.remember_answer(user_id, key, stored, generation)
        return _cacheable(stored)
    if principal is None:
        principal, row = bearer_principal_and_read(statement, params)
        _listener_for(principal, user_id)
    else:
        _touch(principal.token_id)
        if row is None:
            row = db_session().execute(statement, params).first()
    assert token_digest is not None  # bearer_principal_and_read refused a malformed token
    if generation is not None:
        cache.remember_principal(token_digest, principal, generation)
    playlist = repository.published_playlist(row)
    answer = Answer.of(playlist_json(playlist)) if playlist is not None else None
    if serving is not None and lookup is not None:
        rendered = (answer.body, answer.etag) if answer is not None else None
        serving[0].write_back(serving[1], lookup, token_digest, principal, user_id, rendered)
    if answer is None:
        return error_response(404, missing)
    if generation is not None:
        cache.remember_answer(user_id, key, answer, generation)
    return _cacheable(answer)


def _touch(token_id: int) -> None:
    """Record the uses of tokens not read from the database, a batch at a time
    (:meth:`webapp.cache.ReadCache.used`)."""
    due = read_cache().used(token_id)
    if due:
        touch_tokens(db_session(), due)


@bp.get("/users/<user_id>/playlists/latest")
def latest_playlist(user_id: str) -> Any:
    """The listener's newest weekly playlist."""
    missing = f"listener {user_id!r} has no playlist yet"
    params = {"user_id": user_id}
    return _playlist_response(user_id, repository.LATEST_PLAYLIST, params, missing, "latest")


@bp.get("/users/<user_id>/playlists/<week>")
def week_playlist(user_id: str, week: str) -> Any:
    """The listener's playlist of the week starting on Monday ``week`` (YYYY-MM-DD)."""
    try:
        day = dt.date.fromisoformat(week)
    except ValueError:
        bearer_principal()  # 401 before 400, as on every route
        raise BadRequest(f"week {week[:40]!r} is not a date in YYYY-MM-DD form") from None
    try:
        week_start = parse_week(day.isoformat())
    except ValueError as exc:  # a valid date, but no week starts on it: nothing there
        _listener_for(bearer_principal(), user_id)
        raise NotFound(f"no playlist for {day}: {exc}") from None
    missing = f"listener {user_id!r} has no playlist for {week_start}"
    params = {"user_id": user_id, "week_start": week_start}
    return _playlist_response(user_id, repository.PLAYLIST_OF_WEEK, params, missing, week_start)


def _export(fmt: str) -> Callable[[str, str], Any]:
    def export_playlist(user_id: str, week: str) -> Any:
        """The listener's playlist of one week (or ``latest``) as a file to download."""
        principal = bearer_principal()
        _listener_for(principal, user_id)
        session = db_session()
        if week == "latest":
            playlist = repository.latest_playlist(session, user_id)
        else:
            try:
                day = dt.date.fromisoformat(week)
            except ValueError:
                raise BadRequest(f"week {week[:40]!r} is not `latest` or YYYY-MM-DD") from None
            try:
                week_start = parse_week(day.isoformat())
            except ValueError as exc:  # a valid date, but no week starts on it
                raise NotFound(f"no playlist for {day}: {exc}") from None
            playlist = repository.playlist_of_week(session, user_id, week_start)
        if playlist is None:
            raise NotFound(f"listener {user_id!r} has no playlist for {week[:40]}")
        return download(playlist_document(playlist), FORMATS[fmt])

    export_playlist.__name__ = f"export_{fmt}"
    return export_playlist


for _fmt in FORMATS:
    bp.add_url_rule(
        f"/users/<user_id>/playlists/<week>/{_fmt}", view_func=_export(_fmt), methods=["GET"]
    )


# ----------------------------------------------------------------------------- feedback


@bp.get("/users/<user_id>/feedback")
def list_feedback(user_id: str) -> Any:
    """The listener's thumbs, newest first."""
    return _listener_page(user_id, feedback.list_feedback, feedback_document, "api.list_feedback")


@bp.post("/users/<user_id>/feedback")
def post_feedback(user_id: str) -> Any:
    """A thumb up or down on a track, with the same effect as the page's buttons."""
    principal = bearer_principal()
    _listener_for(principal, user_id)
    if not principal.may_write(user_id):
        raise Forbidden("operators read listeners' data; only the listener rates tracks")
    if not request.is_json:
        raise UnsupportedMediaType("send the thumb as application/json")
    try:
        body = json.loads(request.get_data())
    except (ValueError, RecursionError):  # malformed, or nested deep enough to blow the stack
        body = None
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"track_id": "...", "value": "up"}')
    unknown = sorted(set(body) - FEEDBACK_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
    track_id, value = body.get("track_id"), body.get("value")
    if not isinstance(track_id, str) or not is_valid_id(track_id):
        raise BadRequest("track_id must be a track identifier")
    if value not in ("up", "down"):
        raise BadRequest("value must be 'up' or 'down'")
    if repository.get_track(db_session(), track_id) is None:
        raise NotFound(f"no track {track_id!r} in the catalog")
    with db_transaction() as session:  # the thumb and its announcement, together
        row = feedback.record_thumb(
            session,
            user_id,
            track_id,
            feedback.UP if value == "up" else feedback.DOWN,
            source="api",
        )
    read_cache().forget_user(user_id)  # other workers hear of it from the database
    response = jsonify(feedback_document(row))
    response.status_code = 201
    response.headers["Location"] = url_for("api.list_feedback", user_id=user_id)
    return response


@bp.delete("/users/<user_id>/feedback/<track_id>")
def delete_feedback(user_id: str, track_id: str) -> Any:
    """Take back the listener's thumbs on a track (undo), as the page's buttons do."""
    principal = bearer_principal()
    _listener_for(principal, user_id)
    if not principal.may_write(user_id):
        raise Forbidden("operators read listeners' data; only the listener rates tracks")
    if not is_valid_id(track_id):
        raise NotFound(f"no thumb of {user_id!r} on {track_id[:200]!r}")
    with db_transaction() as session:  # the removal and its announcement, together
        removed = feedback.withdraw_thumbs(session, user_id, track_id)
    if not removed:
        raise NotFound(f"no thumb of {user_id!r} on {track_id!r}")
    read_cache().forget_user(user_id)
    return Response(status=204)


# ----------------------------------------------------------------------------- tracks


@bp.get("/tracks/<track_id>")
def get_track(track_id: str) -> Any:
    bearer_principal()
    track = repository.get_track(db_session(), track_id) if is_valid_id(track_id) else None
    if track is None:
        raise NotFound(f"no track {track_id!r}")
    return track_document(track)


@functools.lru_cache(maxsize=2)
def _model(artifact_path: str) -> ALSModel:
    return ALSModel.load(Path(artifact_path))


@bp.get("/tracks/<track_id>/similar")
def similar_tracks(track_id: str) -> Any:
    """Tracks nearest in the item-factor space of the newest published model."""
    bearer_principal()
    limit = _int_arg("limit", 10, 1, 100)
    session = db_session()
    if not is_valid_id(track_id) or repository.get_track(session, track_id) is None:
        raise NotFound(f"no track {track_id!r}")
    version = repository.latest_published_model(session)
    if version is None:
        return error_response(404, "no published model yet: similar tracks need one")
    try:
        nearest = _model(version.artifact_path).similar_tracks(track_id, limit)
    except KeyError:
        return error_response(404, f"model {version.version} has no factors for {track_id!r}")
    tracks = repository.tracks_by_id(session, [tid for tid, _ in nearest])
    items = [
        track_document(tracks[tid]) | {"similarity": round(similarity, 6)}
        for tid, similarity in nearest
        if tid in tracks
    ]
    return {"track_id": track_id, "model_version": version.version, "items": items}


# ----------------------------------------------------------------------------- operators


@bp.get("/runs")
def runs() -> Any:
    require_operator(bearer_principal())
    limit = _int_arg("limit", 20, 1, 200)
    return {"items": [run_document(r) for r in repository.recent_weekly_runs(db_session(), limit)]}


@bp.get("/models")
def models() -> Any:
    require_operator(bearer_principal())
    limit = _int_arg("limit", 52, 1, 520)
    versions = repository.recent_model_versions(db_session(), limit)
    return {"items": [model_document(m) for m in versions]}


@bp.get("/quarantine")
def quarantine() -> Any:
    require_operator(bearer_principal())
    limit = _int_arg("limit", 10, 1, 100)
    return {
        "items": [
            {
                "weekly_run_id": q.weekly_run_id,
                "week_start": q.week_start.isoformat(),
                "total": q.total,
                "events_read": q.events_read,
                "quarantined": q.counts,
            }
            for q in repository.quarantine_counts(db_session(), limit)
        ]
    }

"""One error format: HTML pages for browsers, ``{"error": {...}}`` for the API."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from webapp.auth import Forbidden, Unauthorized

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}

#: a request the database could not answer (down, restarting, out of connections) tells the
#: client to try again after this many seconds
RETRY_AFTER_SECONDS = 5


def error_response(status: int, message: str, code: str | None = None) -> tuple[Response, int]:
    """The API's error body: ``{"error": {"status", "code", "message"}}``."""
    body = {
        "error": {"status": status, "code": code or CODES.get(status, "error"), "message": message}
    }
    response = jsonify(body)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cratedigger"'
    return response, status


def _wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def register(app: Flask) -> None:
    @app.errorhandler(Unauthorized)
    def _unauthorized(error: Unauthorized) -> Any:
        return error_response(401, str(error))

    @app.errorhandler(Forbidden)
    def _forbidden(error: Forbidden) -> Any:
        return error_response(403, str(error))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        status = error.code or 500
        if _wants_json():
            response, status = error_response(status, error.description or error.name)
        else:
            response = app.make_response(
                render_template(
                    "error.html", status=status, title=error.name, message=error.description
                )
            )
        # Keep what the exception says about the answer (Allow on 405, Retry-After on 429).
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        _roll_back()
        wrapped = InternalServerError()
        if _wants_json():
            return error_response(500, "internal error; it has been logged")
        return render_template(
            "error.html",
            status=500,
            title=wrapped.name,
            message="Something went wrong on our side.",
        ), 500

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeoutError)
    def _database_error(error: Exception) -> Any:
        if not _database_unavailable(error):
            return _unexpected(error)
        # One line, no traceback: in an outage every request fails, and each says so.
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.path,
            reason[0] if reason else type(error).__name__,
        )
        _roll_back()
        g.setdefault("web_principal", None)  # the error page must not ask the database again
        return _http_error(
            ServiceUnavailable(
                "The database is not answering; try again in a few seconds.",
                retry_after=RETRY_AFTER_SECONDS,
            )
        )


def _database_unavailable(error: Exception) -> bool:
    """The database cannot be reached or lost the connection: a 503, not a bug (a 500).

    OperationalError covers a refused or dropped connection and a server shutting down;
    another DBAPIError counts when SQLAlchemy found the connection gone (``InterfaceError``
    on a closed one); the pool's TimeoutError means every connection is in use.
    """
    if isinstance(error, OperationalError | PoolTimeoutError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def _roll_back() -> None:
    """Roll the request's session back; on a broken connection that may fail too."""
    session = g.get("db_session")
    if session is None:
        return
    try:
        session.rollback()
    except Exception:
        log.debug("rolling back after an error failed", exc_info=True)

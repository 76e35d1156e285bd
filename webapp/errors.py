"""One error format: HTML pages for browsers, ``{"error": {...}}`` for the API."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

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
        session = g.get("db_session")
        if session is not None:
            session.rollback()
        wrapped = InternalServerError()
        if _wants_json():
            return error_response(500, "internal error; it has been logged")
        return render_template(
            "error.html",
            status=500,
            title=wrapped.name,
            message="Something went wrong on our side.",
        ), 500

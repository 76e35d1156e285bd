"""One error format: HTML pages for browsers, ``{"error": {...}}`` for the API."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


def error_response(status: int, message: str, code: str | None = None) -> tuple[Response, int]:
    """The API's error body: ``{"error": {"status", "code", "message"}}``."""
    body = {"error": {"status": status, "code": code or _code(status), "message": message}}
    return jsonify(body), status


def _code(status: int) -> str:
    return {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        500: "internal_error",
    }.get(status, "error")


def _wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        status = error.code or 500
        if _wants_json():
            return error_response(status, error.description or error.name)
        return render_template(
            "error.html", status=status, title=error.name, message=error.description
        ), status

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

"""The OpenAPI 3 document of ``/api/v1``. A test checks that every API route is here and
(schemathesis) that every response matches it."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from recsys.contract import ID_PATTERN

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _object(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
    }


ID = _string(pattern=ID_PATTERN, maxLength=128, minLength=1)
DATE = _string(format="date")
DATETIME = _string(format="date-time")
INT = {"type": "integer", "minimum": 0}
COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
URL = _string(format="uri", maxLength=2048, pattern="^https?://")
#: The catalog's optional fields of a track (null when the catalog has none; absent from
#: playlists published before they existed).
CATALOG_FIELDS: dict[str, Any] = {
    "released_at": _nullable(DATE),
    "album": _nullable(_string(maxLength=512)),
    "image_url": _nullable({**URL, "description": "Cover image."}),
    "preview_url": _nullable({**URL, "description": "Audio preview."}),
    "external_url": _nullable({**URL, "description": "Where the track plays."}),
    "musicbrainz_recording_id": _nullable(_string(format="uuid")),
    "isrc": _nullable(_string(pattern="^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$")),
}

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "code": _string(),
                    "message": _string(),
                }
            )
        }
    ),
    "Health": _object({"status": _string(enum=["ok"])}),
    "Ready": _object(
        {
            "status": _string(enum=["ready", "unavailable"]),
            "checks": {"type": "object", "additionalProperties": _string()},
        }
    ),
    "PlaylistTrack": _object(
        {
            "position": {"type": "integer", "minimum": 1},
            "track_id": ID,
            "title": _string(),
            "artist_id": ID,
            "artist": _string(),
            "duration_ms": INT,
            **CATALOG_FIELDS,
            "score": {"type": "number"},
            "reason": _nullable(_string()),
            "thumb": _nullable(_string(enum=["up"])),
        },
        optional=tuple(CATALOG_FIELDS),
    ),
    "Playlist": _object(
        {
            "user_id": ID,
            "week_start": DATE,
            "title": _string(description='"Discoveries for Ada" ("Popular picks for ...").'),
            "description": _string(
                description="The week, the tracks left, their length and new releases."
            ),
            "model_version": _string(),
            "kind": _string(enum=["personal", "popular"]),
            "duration_ms": {**INT, "description": "Total length of the tracks."},
            "new_releases": {
                **INT,
                "description": "Tracks released in the 28 days before the week.",
            },
            "removed": {
                "type": "integer",
                "minimum": 0,
                "description": "Tracks left out because the listener thumbed them down.",
            },
            "tracks": {"type": "array", "items": _ref("PlaylistTrack")},
        }
    ),
    "PlaylistSummary": _object(
        {
            "week_start": DATE,
            "kind": _string(enum=["personal", "popular"]),
            "model_version": _string(),
            "tracks": {**INT, "description": "Tracks left after the listener's thumbs-down."},
            "removed": {**INT, "description": "Tracks the listener thumbed down since."},
            "covers": {
                "type": "array",
                "items": URL,
                "maxItems": 4,
                "description": "Cover images of the first tracks left that have one.",
            },
        }
    ),
    "Track": _object(
        {
            "track_id": ID,
            "title": _string(),
            "artist_id": ID,
            "artist": _string(),
            "duration_ms": INT,
            **CATALOG_FIELDS,
        }
    ),
    "Feedback": _object(
        {
            "id": {"type": "integer"},
            "track_id": ID,
            "value": _string(enum=["up", "down"]),
            "rated_at": DATETIME,
            "source": _string(enum=["web", "api"]),
        }
    ),
    "FeedbackInput": _object({"track_id": ID, "value": _string(enum=["up", "down"])}),
    "Run": _object(
        {
            "id": {"type": "integer"},
            "week_start": DATE,
            "status": _string(),
            "trigger": _string(),
            "started_at": DATETIME,
            "finished_at": _nullable(DATETIME),
            "model_version": _nullable(_string()),
            "error": _nullable(_string()),
            "steps": {
                "type": "array",
                "items": _object(
                    {
                        "step": _string(),
                        "chunk": {"type": "integer"},
                        "status": _string(),
                        "attempts": {"type": "integer"},
                        "seconds": _nullable({"type": "number"}),
                        "counts": _nullable({"type": "object"}),
                        "error": _nullable(_string()),
                    }
                ),
            },
        }
    ),
    "Model": _object(
        {
            "version": _string(),
            "week_start": DATE,
            "status": _string(enum=["trained", "published", "rejected"]),
            "created_at": DATETIME,
            "n_users": INT,
            "n_tracks": INT,
            "n_interactions": INT,
            "train_seconds": {"type": "number"},
            "params": {"type": "object"},
            "metrics": _nullable({"type": "object"}),
            "gate_reason": _nullable(_string()),
        }
    ),
    "Quarantine": _object(
        {
            "weekly_run_id": {"type": "integer"},
            "week_start": DATE,
            "total": INT,
            "events_read": COUNTS,
            "quarantined": {"type": "object", "additionalProperties": COUNTS},
        }
    ),
}


def _page_of(item: str) -> dict[str, Any]:
    return _object(
        {
            "items": {"type": "array", "items": _ref(item)},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
            "total": INT,
            "next": _nullable(_string()),
            "prev": _nullable(_string()),
        }
    )


def _list_of(item: str) -> dict[str, Any]:
    return _object({"items": {"type": "array", "items": _ref(item)}})


_JSPF_TRACK = {
    "type": "object",
    "required": ["title", "creator", "location", "identifier", "trackNum", "duration"],
    "properties": {
        "location": {"type": "array", "items": URL},
        "identifier": {"type": "array", "items": _string()},
        "title": _string(),
        "creator": _string(),
        "annotation": _string(),
        "info": URL,
        "image": URL,
        "album": _string(),
        "trackNum": {"type": "integer", "minimum": 1},
        "duration": INT,
        "extension": {"type": "object", "additionalProperties": {"type": "array"}},
    },
    "additionalProperties": False,
}
SCHEMAS |= {
    "Jspf": _object(
        {
            "playlist": _object(
                {
                    "title": _string(),
                    "creator": _string(),
                    "annotation": _string(),
                    "date": DATETIME,
                    "track": {"type": "array", "items": _JSPF_TRACK},
                }
            )
        }
    ),
    "PlaylistPage": _page_of("PlaylistSummary"),
    "FeedbackPage": _page_of("Feedback"),
    "RunList": _list_of("Run"),
    "ModelList": _list_of("Model"),
    "QuarantineList": _list_of("Quarantine"),
}
# Similar tracks are tracks with a similarity.
SCHEMAS["SimilarTrack"] = _object(
    {**SCHEMAS["Track"]["properties"], "similarity": {"type": "number"}}
)
SCHEMAS["SimilarTracks"] = _object(
    {
        "track_id": ID,
        "model_version": _string(),
        "items": {"type": "array", "items": _ref("SimilarTrack")},
    }
)

USER = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "description": "Listener id. Another listener's id answers 404, as an unknown one does.",
    "schema": ID,
}
TRACK = {"name": "track_id", "in": "path", "required": True, "schema": ID}


def _query_int(
    name: str, default: int, lowest: int, highest: int, description: str
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": lowest, "maximum": highest, "default": default},
    }


PAGE = [
    _query_int("page", 1, 1, 1_000_000, "Page number, from 1."),
    _query_int("per_page", 20, 1, 100, "Items per page."),
]
AUTH_ERRORS = {
    "400": _error("A parameter is malformed."),
    "401": _error("No valid bearer token."),
}
CACHED = {
    "ETag": {"description": "Strong validator of the body.", "schema": _string()},
    "Cache-Control": {"description": "private, max-age=N, must-revalidate", "schema": _string()},
}


def _get(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[Any],
    errors: dict[str, Any],
    tag: str,
    secured: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "parameters": params,
        "responses": {"200": ok, **errors},
    }
    if not secured:
        operation["security"] = []
    return {"get": operation}


def _service(
    summary: str, ok: dict[str, Any], errors: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An operation of the service itself: no parameters, no token needed."""
    return _get(summary, ok, params=[], errors=errors or {}, tag="service", secured=False)


def _operator_list(
    summary: str,
    schema: str,
    default: int,
    highest: int,
    items: str,
    *,
    order: str = "Newest first.",
) -> dict[str, Any]:
    """An operators' list of the newest ``limit`` items (``items`` names them)."""
    return _get(
        summary,
        _ok(schema, order),
        params=[_query_int("limit", default, 1, highest, f"How many {items}.")],
        errors=OPERATOR_ERRORS,
        tag="operators",
    )


def _playlist_ok() -> dict[str, Any]:
    return {**_ok("Playlist", "The playlist."), "headers": CACHED}


NOT_MODIFIED = {"304": {"description": "The playlist is unchanged since the given ETag."}}
LISTENER_404 = {"404": _error("No such listener (or not yours), or no such playlist.")}
OPERATOR_ERRORS = {**AUTH_ERRORS, "403": _error("The token is not an operator's.")}


@functools.cache
def openapi_document() -> dict[str, Any]:
    try:
        package_version = version("cratedigger")
    except PackageNotFoundError:  # running from a source tree
        package_version = "0.0.0"
    paths: dict[str, Any] = {
        "/health": _service("Liveness: the process answers", _ok("Health", "Alive.")),
        "/ready": _service(
            "Readiness: the database answers and its schema is current",
            _ok("Ready", "Ready to serve."),
            {"503": _ok("Ready", "Not ready; `checks` says why.")},
        ),
        "/openapi.json": _service(
            "This document",
            {
                "description": "The OpenAPI document.",
                "content": {JSON: {"schema": {"type": "object"}}},
            },
        ),
        "/docs": _service(
            "Readable documentation of this API",
            {"description": "HTML page.", "content": {"text/html": {"schema": _string()}}},
        ),
        "/users/{user_id}/playlists": _get(
            "A listener's published weekly playlists, newest first",
            {
                **_ok("PlaylistPage", "One page of playlists."),
                "headers": {"Link": {"description": "next and prev pages", "schema": _string()}},
            },
            params=[USER, *PAGE],
            errors={**AUTH_ERRORS, **LISTENER_404},
            tag="playlists",
        ),
        "/users/{user_id}/playlists/latest": _get(
            "A listener's newest weekly playlist (tracks they thumbed down are left out)",
            _playlist_ok(),
            params=[USER],
            errors={**NOT_MODIFIED, **AUTH_ERRORS, **LISTENER_404},
            tag="playlists",
        ),
        "/users/{user_id}/playlists/{week}": _get(
            "A listener's playlist of one week",
            _playlist_ok(),
            params=[
                USER,
                {
                    "name": "week",
                    "in": "path",
                    "required": True,
                    "description": "The Monday the week starts on, YYYY-MM-DD.",
                    "schema": DATE,
                },
            ],
            errors={**NOT_MODIFIED, **AUTH_ERRORS, **LISTENER_404},
            tag="playlists",
        ),
        **{
            f"/users/{{user_id}}/playlists/{{week}}/{fmt}": _get(
                f"A listener's playlist of one week as {name}, to download",
                {
                    "description": f"The playlist as {name} ({what}); thumbed-down tracks are "
                    "left out. `Content-Disposition` names the file.",
                    "content": {mimetype: {"schema": schema}},
                },
                params=[
                    USER,
                    {
                        "name": "week",
                        "in": "path",
                        "required": True,
                        "description": "The Monday the week starts on, YYYY-MM-DD, or `latest`.",
                        "schema": {"anyOf": [DATE, _string(enum=["latest"])]},
                    },
                ],
                errors={**AUTH_ERRORS, **LISTENER_404},
                tag="playlists",
            )
            for fmt, name, what, mimetype, schema in (
                ("jspf", "JSPF", "XSPF in JSON, as ListenBrainz reads it", JSON, _ref("Jspf")),
                ("xspf", "XSPF", "version 1", "application/xspf+xml", _string()),
                ("m3u", "M3U", "extended M3U in UTF-8", "audio/x-mpegurl", _string()),
            )
        },
        "/users/{user_id}/feedback": {
            **_get(
                "A listener's thumbs, newest first",
                _ok("FeedbackPage", "One page of thumbs."),
                params=[USER, *PAGE],
                errors={**AUTH_ERRORS, **LISTENER_404},
                tag="feedback",
            ),
            "post": {
                "summary": "Thumb a track up or down (as the page's buttons do); "
                "next week's run reads it, and a thumbed-down track leaves the playlist now",
                "tags": ["feedback"],
                "parameters": [USER],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("FeedbackInput")}},
                },
                "responses": {
                    "201": {
                        **_ok("Feedback", "Recorded."),
                        "headers": {"Location": {"schema": _string()}},
                    },
                    **AUTH_ERRORS,
                    "403": _error("Operators cannot rate tracks for a listener."),
                    "404": _error("No such listener (or not yours), or no such track."),
                    "413": _error("The body is too large."),
                    "415": _error("The body is not JSON."),
                },
            },
        },
        "/users/{user_id}/feedback/{track_id}": {
            "delete": {
                "summary": "Take back the listener's thumbs on a track (undo): a thumbed-down "
                "track comes back to the playlist, and next week's run no longer reads them",
                "tags": ["feedback"],
                "parameters": [USER, TRACK],
                "responses": {
                    "204": {"description": "Taken back."},
                    **AUTH_ERRORS,
                    "403": _error("Operators cannot rate tracks for a listener."),
                    "404": _error("No such listener (or not yours), or no thumb on that track."),
                },
            },
        },
        "/tracks/{track_id}": _get(
            "One track of the catalog",
            _ok("Track", "The track."),
            params=[TRACK],
            errors={**AUTH_ERRORS, "404": _error("No such track.")},
            tag="tracks",
        ),
        "/tracks/{track_id}/similar": _get(
            "Tracks nearest to this one in the newest published model's item factors",
            _ok("SimilarTracks", "Nearest tracks, most similar first."),
            params=[TRACK, _query_int("limit", 10, 1, 100, "How many tracks.")],
            errors={**AUTH_ERRORS, "404": _error("No such track, or no published model.")},
            tag="tracks",
        ),
        "/runs": _operator_list(
            "Operators: recent weekly runs with their steps", "RunList", 20, 200, "runs"
        ),
        "/models": _operator_list(
            "Operators: model versions with their gate metrics", "ModelList", 52, 520, "models"
        ),
        "/quarantine": _operator_list(
            "Operators: rows the aggregation set aside, by kind and reason",
            "QuarantineList",
            10,
            100,
            "runs",
            order="Newest run first.",
        ),
    }
    for item in paths.values():
        for operation in item.values():
            operation["responses"].setdefault("429", _error("Too many requests."))
            operation["responses"].setdefault("500", _error("Internal error (logged)."))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "cratedigger API",
            "version": package_version,
            "description": "Weekly discovery playlists, listeners' thumbs, similar tracks and "
            "the weekly run's state. Authenticate with `Authorization: Bearer <token>` "
            "(`cratedigger tokens create --user U` or `--operator`). Every error has the body "
            '`{"error": {"status", "code", "message"}}`.',
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "playlists"},
            {"name": "feedback"},
            {"name": "tracks"},
            {"name": "operators"},
            {"name": "service"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "API token"}
            },
            "schemas": SCHEMAS,
        },
    }


@functools.cache
def query_parameters(rule: str, method: str) -> frozenset[str]:
    """Names of the query parameters the document gives a Flask rule (``/users/<user_id>``)."""
    path = rule.replace("<", "{").replace(">", "}")
    operation = openapi_document()["paths"].get(path, {}).get(method.lower(), {})
    return frozenset(p["name"] for p in operation.get("parameters", []) if p["in"] == "query")

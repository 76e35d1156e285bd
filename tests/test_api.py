"""The JSON API through Flask's test client, on SQLite and PostgreSQL: authentication and
authorisation, playlists, caching, feedback, tracks, operators, health and bad input."""

from __future__ import annotations

import json

import pytest

from recsys.contract import TRACK_DISPLAY_COLUMNS
from recsys.db.engine import make_session_factory
from tests.webworld import CATALOG_EXTRAS, PREVIOUS_WEEK, WEEK, thumbs_given


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert error["status"] == status and error["code"] and error["message"]
    return error


LISTENER_ROUTES = [
    ("GET", "/api/v1/users/{u}/playlists"),
    ("GET", "/api/v1/users/{u}/playlists/latest"),
    ("GET", f"/api/v1/users/{{u}}/playlists/{WEEK}"),
    ("GET", "/api/v1/users/{u}/feedback"),
    ("POST", "/api/v1/users/{u}/feedback"),
]
OPERATOR_ROUTES = ["/api/v1/runs", "/api/v1/models", "/api/v1/quarantine"]


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dTE6cHc=", "Bearer cd_nope", "Bearer " + "x" * 5000],
)
def test_requests_without_a_valid_token_are_401(client, header) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in [*LISTENER_ROUTES, ("GET", "/api/v1/tracks/t00")]:
        response = client.open(path.format(u="u1"), method=method, headers=headers, json={})
        error_of(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_is_401(client, web_world) -> None:
    error_of(
        client.get("/api/v1/users/u1/playlists/latest", headers=bearer(web_world.revoked)), 401
    )


def test_listener_a_can_never_read_or_change_listener_bs_data(app, client, web_world) -> None:
    for method, path in LISTENER_ROUTES:
        body = {"track_id": "t00", "value": "down"}
        own = client.open(
            path.format(u="u2"), method=method, headers=bearer(web_world.u2), json=body
        )
        assert own.status_code in (200, 201), (method, path)
        other = client.open(
            path.format(u="u1"), method=method, headers=bearer(web_world.u2), json=body
        )
        unknown = client.open(
            path.format(u="nobody"), method=method, headers=bearer(web_world.u2), json=body
        )
        # The same answer as for a listener that does not exist: ids cannot be probed.
        assert error_of(other, 404)["code"] == error_of(unknown, 404)["code"]
        assert "u1" in error_of(other, 404)["message"]
    with make_session_factory(app.extensions["cratedigger"]["engine"])() as session:
        assert thumbs_given(session, "u1") == {}
        assert thumbs_given(session, "u2") == {"t00": -1}


def test_operators_read_any_listener_but_do_not_rate_for_them(client, web_world) -> None:
    token = bearer(web_world.operator)
    assert client.get("/api/v1/users/u1/playlists/latest", headers=token).status_code == 200
    assert client.get("/api/v1/users/u2/feedback", headers=token).status_code == 200
    response = client.post(
        "/api/v1/users/u1/feedback", headers=token, json={"track_id": "t00", "value": "up"}
    )
    error_of(response, 403)
    error_of(client.get("/api/v1/users/nobody/playlists", headers=token), 404)


@pytest.mark.parametrize("path", OPERATOR_ROUTES)
def test_operator_routes_refuse_listener_tokens(client, web_world, path: str) -> None:
    error = error_of(client.get(path, headers=bearer(web_world.u1)), 403)
    assert "operator" in error["message"]
    assert client.get(path, headers=bearer(web_world.operator)).status_code == 200


def test_latest_playlist_document(client, web_world) -> None:
    response = client.get("/api/v1/users/u1/playlists/latest", headers=bearer(web_world.u1))
    document = response.get_json()
    assert list(document) == [
        "user_id",
        "week_start",
        "title",
        "description",
        "model_version",
        "kind",
        "duration_ms",
        "new_releases",
        "removed",
        "tracks",
    ]
    assert document["week_start"] == WEEK.isoformat() and document["kind"] == "personal"
    tracks = document["tracks"]
    assert [t["position"] for t in tracks] == list(range(1, 51))
    assert tracks[0] == {
        "position": 1,
        "track_id": "t00",
        "title": "Song 0",
        "artist_id": "a1",
        "artist": "Bj\u00f6rk & <Friends>",
        "duration_ms": 61_000,
        **CATALOG_EXTRAS["t00"],
        "released_at": CATALOG_EXTRAS["t00"]["released_at"].isoformat(),
        "score": 2.0,
        "reason": "reason 0",
        "thumb": None,
    }
    assert tracks[3]["image_url"] is None and tracks[3]["album"] is None
    assert document["title"] == "Discoveries for Ada"
    assert document["duration_ms"] == sum(t["duration_ms"] for t in tracks)
    assert document["new_releases"] == 1  # t00, released 10 days before the week
    assert document["description"] == "Week of 16 November 2026: 50 tracks, 51 min, 1 new release"


def test_a_thumb_down_updates_the_header_as_well(client, web_world) -> None:
    token = bearer(web_world.u1)
    before = client.get("/api/v1/users/u1/playlists/latest", headers=token).get_json()
    posted = client.post(
        "/api/v1/users/u1/feedback", json={"track_id": "t00", "value": "down"}, headers=token
    )
    assert posted.status_code == 201
    after = client.get("/api/v1/users/u1/playlists/latest", headers=token).get_json()
    assert after["removed"] == 1 and len(after["tracks"]) == 49
    assert after["duration_ms"] == before["duration_ms"] - 61_000
    assert after["new_releases"] == 0 and "49 tracks" in after["description"]
    summary = client.get("/api/v1/users/u1/playlists", headers=token).get_json()["items"][0]
    assert summary["tracks"] == 49 and summary["removed"] == 1
    # The first four tracks left are t01..t04; t01 and t02 have covers (the API gives the
    # catalog's, wherever they are: only the pages limit the hosts they load from).
    assert summary["covers"] == [
        "https://elsewhere.example/covers/t01.png",
        "https://media.test/covers/t02.png",
    ]


def test_playlist_by_week_and_bad_weeks(client, web_world) -> None:
    token = bearer(web_world.u1)
    previous = client.get(f"/api/v1/users/u1/playlists/{PREVIOUS_WEEK}", headers=token)
    assert previous.get_json()["tracks"][0]["track_id"] == "t05"
    tuesday = error_of(client.get("/api/v1/users/u1/playlists/2026-11-17", headers=token), 404)
    assert "the Monday of that week is 2026-11-16" in tuesday["message"]
    error_of(client.get("/api/v1/users/u1/playlists/not-a-date", headers=token), 400)
    error_of(client.get("/api/v1/users/u1/playlists/2020-01-06", headers=token), 404)
    error_of(client.get("/api/v1/users/u3/playlists/latest", headers=bearer(web_world.u3)), 404)


def test_playlist_list_paginates_with_links(client, web_world) -> None:
    token = bearer(web_world.u1)
    first = client.get("/api/v1/users/u1/playlists?per_page=1", headers=token)
    page = first.get_json()
    assert page["total"] == 2 and page["page"] == 1 and page["prev"] is None
    assert [item["week_start"] for item in page["items"]] == [WEEK.isoformat()]
    assert page["items"][0]["tracks"] == 50
    assert 'rel="next"' in first.headers["Link"]
    second = client.get(page["next"], headers=token).get_json()
    assert [item["week_start"] for item in second["items"]] == [PREVIOUS_WEEK.isoformat()]
    assert second["next"] is None and second["prev"] is not None
    beyond = client.get("/api/v1/users/u1/playlists?page=3&per_page=1", headers=token).get_json()
    assert beyond["items"] == [] and beyond["total"] == 2


@pytest.mark.parametrize(
    "query",
    ["page=0", "page=-1", "page=abc", "per_page=0", "per_page=101", "page=1e3", "page=99999999999"],
)
def test_bad_pagination_is_400(client, web_world, query: str) -> None:
    error_of(client.get(f"/api/v1/users/u1/playlists?{query}", headers=bearer(web_world.u1)), 400)


def test_etag_cache_control_and_304(client, web_world) -> None:
    token = bearer(web_world.u1)
    first = client.get("/api/v1/users/u1/playlists/latest", headers=token)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and "private" in first.headers["Cache-Control"]
    assert "max-age=60" in first.headers["Cache-Control"]
    assert "Authorization" in first.headers["Vary"]
    again = client.get(
        "/api/v1/users/u1/playlists/latest", headers={**token, "If-None-Match": etag}
    )
    assert again.status_code == 304 and again.data == b""
    stale = client.get(
        "/api/v1/users/u1/playlists/latest", headers={**token, "If-None-Match": '"x"'}
    )
    assert stale.status_code == 200
    # A thumbs-down changes the playlist, so the old ETag no longer matches.
    client.post(
        "/api/v1/users/u1/feedback", headers=token, json={"track_id": "t01", "value": "down"}
    )
    changed = client.get(
        "/api/v1/users/u1/playlists/latest", headers={**token, "If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_feedback_post_has_the_effect_of_the_page(client, web_world) -> None:
    token = bearer(web_world.u1)
    response = client.post(
        "/api/v1/users/u1/feedback", headers=token, json={"track_id": "t02", "value": "down"}
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body["track_id"] == "t02" and body["value"] == "down" and body["source"] == "api"
    assert response.headers["Location"] == "/api/v1/users/u1/feedback"
    client.post("/api/v1/users/u1/feedback", headers=token, json={"track_id": "t04", "value": "up"})
    playlist = client.get("/api/v1/users/u1/playlists/latest", headers=token).get_json()
    ids = [t["track_id"] for t in playlist["tracks"]]
    assert "t02" not in ids and len(ids) == 49 and playlist["removed"] == 1
    assert next(t for t in playlist["tracks"] if t["track_id"] == "t04")["thumb"] == "up"
    listed = client.get("/api/v1/users/u1/feedback", headers=token).get_json()
    assert [(f["track_id"], f["value"]) for f in listed["items"]] == [
        ("t04", "up"),
        ("t02", "down"),
    ]


def test_a_thumb_taken_back_brings_the_track_back_and_leaves_the_export(
    app, client, web_world
) -> None:
    import datetime as dt

    from recsys.db import feedback

    token = bearer(web_world.u1)
    for track_id, value in (("t02", "down"), ("t02", "down"), ("t04", "up")):
        client.post(
            "/api/v1/users/u1/feedback", headers=token, json={"track_id": track_id, "value": value}
        )
    response = client.delete("/api/v1/users/u1/feedback/t02", headers=token)
    assert response.status_code == 204 and response.get_data() == b""
    playlist = client.get("/api/v1/users/u1/playlists/latest", headers=token).get_json()
    assert "t02" in [t["track_id"] for t in playlist["tracks"]] and playlist["removed"] == 0
    listed = client.get("/api/v1/users/u1/feedback", headers=token).get_json()
    assert [(f["track_id"], f["value"]) for f in listed["items"]] == [("t04", "up")]
    with make_session_factory(app.extensions["cratedigger"]["engine"])() as session:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        exported = [row for batch in feedback.feedback_before(session, later) for row in batch]
    assert [(u, t, v) for u, t, _, v in exported] == [("u1", "t04", 1)]
    # Nothing left to take back; another listener's thumbs; an operator; a hostile id.
    again = client.delete("/api/v1/users/u1/feedback/t02", headers=token)
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "not_found"
    assert client.delete("/api/v1/users/u2/feedback/t04", headers=token).status_code == 404
    operator = client.delete("/api/v1/users/u1/feedback/t04", headers=bearer(web_world.operator))
    assert operator.status_code == 403
    hostile = client.delete("/api/v1/users/u1/feedback/%3Cscript%3E", headers=token)
    assert hostile.status_code == 404
    assert client.delete("/api/v1/users/u1/feedback/t04").status_code == 401
    listed = client.get("/api/v1/users/u1/feedback", headers=token).get_json()
    assert [(f["track_id"], f["value"]) for f in listed["items"]] == [("t04", "up")]


#: JSON bodies that are not a valid thumb: 400.
MALFORMED_FEEDBACK = [
    b"not json",
    b"[1, 2]",
    b'"down"',
    b"null",
    b'{"track_id": "t00"}',
    b'{"track_id": "t00", "value": 1}',
    b'{"track_id": "t00", "value": "sideways"}',
    b'{"track_id": 7, "value": "up"}',
    b'{"track_id": "<script>", "value": "up"}',
    b'{"track_id": "t00", "value": "up", "admin": true}',
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        *[(body, "application/json", 400) for body in MALFORMED_FEEDBACK],
        (b'{"track_id": "nowhere", "value": "up"}', "application/json", 404),
        (b"track_id=t00&value=up", "application/x-www-form-urlencoded", 415),
        (b'{"track_id": "t00", "value": "up"}', "text/plain", 415),
        (
            json.dumps({"track_id": "t00", "value": "up", "pad": "x" * 70_000}).encode(),
            "application/json",
            413,
        ),
    ],
)
def test_bad_feedback_bodies_are_refused_and_store_nothing(
    app, client, web_world, body: bytes, content_type: str, status: int
) -> None:
    response = client.post(
        "/api/v1/users/u1/feedback",
        headers=bearer(web_world.u1),
        data=body,
        content_type=content_type,
    )
    error_of(response, status)
    with make_session_factory(app.extensions["cratedigger"]["engine"])() as session:
        assert thumbs_given(session, "u1") == {}


def test_tracks_and_similar_tracks(client, web_world) -> None:
    token = bearer(web_world.u1)
    track = client.get("/api/v1/tracks/t07", headers=token).get_json()
    assert track == {
        "track_id": "t07",
        "title": "Song 7",
        "artist_id": "a2",
        "artist": "Two",
        "duration_ms": 61_007,
        **dict.fromkeys(TRACK_DISPLAY_COLUMNS),
    }
    first = client.get("/api/v1/tracks/t00", headers=token).get_json()
    assert first["musicbrainz_recording_id"] == CATALOG_EXTRAS["t00"]["musicbrainz_recording_id"]
    assert first["preview_url"] == "https://media.test/previews/t00.wav"
    error_of(client.get("/api/v1/tracks/nope", headers=token), 404)
    similar = client.get("/api/v1/tracks/t07/similar?limit=5", headers=token).get_json()
    assert similar["track_id"] == "t07" and similar["model_version"] == f"{WEEK}-abc"
    items = similar["items"]
    assert len(items) == 5 and "t07" not in [i["track_id"] for i in items]
    scores = [i["similarity"] for i in items]
    assert scores == sorted(scores, reverse=True)
    # The world has two taste groups (t00-t29, t30-t59): neighbours come from the same one.
    assert all(int(i["track_id"][1:]) < 30 for i in items)
    far = client.get("/api/v1/tracks/t45/similar?limit=5", headers=token).get_json()
    assert all(int(i["track_id"][1:]) >= 30 for i in far["items"])
    error_of(client.get("/api/v1/tracks/t07/similar?limit=0", headers=token), 400)
    error_of(client.get("/api/v1/tracks/t07/similar?limit=101", headers=token), 400)


def test_operator_documents(client, web_world) -> None:
    token = bearer(web_world.operator)
    runs = client.get("/api/v1/runs?limit=1", headers=token).get_json()["items"]
    assert (
        len(runs) == 1
        and runs[0]["status"] == "succeeded"
        and runs[0]["steps"][0]["step"] == "aggregate"
    )
    models = client.get("/api/v1/models", headers=token).get_json()["items"]
    assert [m["week_start"] for m in models] == [WEEK.isoformat(), PREVIOUS_WEEK.isoformat()]
    quarantine = client.get("/api/v1/quarantine", headers=token).get_json()["items"]
    assert quarantine[0]["total"] == 10
    assert quarantine[0]["quarantined"]["plays"] == {
        "unknown_track": 7,
        "timestamp_after_cutoff": 3,
    }


def test_health_and_readiness(client) -> None:
    assert client.get("/api/v1/health").get_json() == {"status": "ok"}
    ready = client.get("/api/v1/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"database": "ok", "schema": "ok"}}


def test_readiness_reports_a_database_that_is_not_migrated(tmp_path) -> None:
    from recsys.settings import Settings
    from webapp import create_app

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    app = create_app({"TESTING": True}, settings=settings)
    response = app.test_client().get("/api/v1/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable" and body["checks"]["schema"].startswith("behind")
    app.extensions["cratedigger"]["engine"].dispose()


def test_readiness_reports_an_unreachable_database(tmp_path) -> None:
    from recsys.settings import Settings
    from webapp import create_app

    settings = Settings(
        data_dir=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    app = create_app({"TESTING": True}, settings=settings)
    response = app.test_client().get("/api/v1/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"].startswith("unavailable")
    assert app.test_client().get("/api/v1/health").status_code == 200
    app.extensions["cratedigger"]["engine"].dispose()


def test_method_not_allowed_is_a_json_405(client, web_world) -> None:
    response = client.delete("/api/v1/users/u1/playlists/latest", headers=bearer(web_world.u1))
    error_of(response, 405)
    assert "GET" in response.headers["Allow"]


def test_unknown_query_parameters_are_400(client, web_world) -> None:
    error = error_of(
        client.get("/api/v1/users/u1/playlists?perpage=5", headers=bearer(web_world.u1)), 400
    )
    assert "'perpage'" in error["message"] and "per_page" in error["message"]


@pytest.mark.parametrize("thumbs", [{}, {"t1": 1}, {"t2": -1, "t1": 1}])
def test_playlist_json_is_the_playlist_document(thumbs) -> None:
    """The fast path (stored tracks spliced in as text) says what the document says."""
    import datetime as dt

    from recsys.db.repository import PlaylistEntry, PublishedPlaylist, render_tracks
    from webapp.views import playlist_document, playlist_json

    catalog = {
        "t1": {
            "title": 'Say "hi" \\ <b>',
            "artist_id": "a1",
            "artist": "Bjørk \u2603",
            "duration_ms": 1000,
        },
        "t2": {"title": "Second", "artist_id": "a2", "artist": "Two", "duration_ms": 2000},
    }
    entries = [PlaylistEntry("t1", 0.1234567891, "Because </script>"), PlaylistEntry("t2", 2.0)]
    playlist = PublishedPlaylist(
        7, "u1", dt.date(2026, 11, 16), "personal", "v1", render_tracks(entries, catalog), thumbs
    )
    document = playlist_document(playlist)
    assert json.loads(playlist_json(playlist)) == document
    kept = [track["track_id"] for track in document["tracks"]]
    assert kept == [t for t in ("t1", "t2") if thumbs.get(t, 0) >= 0]
    assert document["removed"] == 2 - len(kept)
    assert document["tracks"][0]["title"] == 'Say "hi" \\ <b>'
    assert document["tracks"][0]["thumb"] == ("up" if thumbs.get("t1") == 1 else None)
    assert document["tracks"][0]["score"] == 0.123457

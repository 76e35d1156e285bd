"""Pages through Flask's test client, on SQLite and PostgreSQL: sign-in, playlists, thumbs,
history, operator pages, CSRF, rate limits, security headers and cookies."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest

from recsys.db import feedback, repository
from recsys.db.engine import make_session_factory
from recsys.settings import ConfigError, Settings
from tests.webworld import HOSTILE_ARTIST, PREVIOUS_WEEK, WEEK, thumbs_given
from webapp import create_app


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client, token: str, next_url: str = ""):
    form_page = client.get("/signin")
    data = {"token": token, "csrf_token": csrf_of(form_page.get_data(as_text=True))}
    if next_url:
        data["next"] = next_url
    return client.post("/signin", data=data)


def playlist_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-track-id="([^"]+)"', html)


def test_anonymous_visitors_are_sent_to_sign_in_and_come_back(client, web_world) -> None:
    response = client.get("/users/u1")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/signin?next=/users/u1")
    assert client.get("/").headers["Location"] == "/signin"
    signed = sign_in(client, web_world.u1, next_url="/users/u1/history")
    assert signed.status_code == 303 and signed.headers["Location"] == "/users/u1/history"


def test_sign_in_shows_the_listeners_playlist_escaped(client, web_world) -> None:
    response = sign_in(client, web_world.u1)
    assert response.status_code == 303 and response.headers["Location"] == "/users/u1"
    html = client.get("/users/u1").get_data(as_text=True)
    assert playlist_rows(html)[:3] == ["t00", "t01", "t02"] and len(playlist_rows(html)) == 50
    assert "Bj\u00f6rk &amp; &lt;Friends&gt;" in html and HOSTILE_ARTIST not in html
    assert "reason 0" in html and "1:01" in html
    assert html.count('value="down"') == 50  # a thumbs-down button on each track
    # The playlist's own title and description, not the listener's handle or the model id.
    assert "<h1>Discoveries for Ada</h1>" in html
    total = sum(61_000 + i for i in range(50))  # t00..t49, as the world wrote them
    assert (
        f"Week of 16 November 2026: 50 tracks, {round(total / 60_000)} min, 1 new release" in html
    )
    assert "2026-11-16-abc" not in html


def _row(html: str, track_id: str) -> str:
    start = html.index(f'<tr data-track-id="{track_id}">')
    return html[start : html.index("</tr>", start)]


def test_rows_show_covers_previews_and_links_from_allowed_hosts_only(client, web_world) -> None:
    sign_in(client, web_world.u1)
    response = client.get("/users/u1")
    html = response.get_data(as_text=True)
    first, second, third, fourth = (_row(html, t) for t in ("t00", "t01", "t02", "t03"))
    assert 'src="https://media.test/covers/t00.png"' in first
    assert (
        '<audio class="preview" controls preload="none" src="https://media.test/previews/t00.wav"'
        in first
    )
    assert 'href="https://music.example/track/t00"' in first
    assert 'href="https://musicbrainz.org/recording/8f3471b5-7e6a-48da-86a9-c1c07a0f47ae"' in first
    assert "First &lt;Album&gt;" in first and '<time datetime="2026-11-06">2026</time>' in first
    # A cover from a host the settings do not name is not loaded: a placeholder instead.
    assert "elsewhere.example" not in second and 'src="/art/a2.svg"' in second
    assert 'src="https://media.test/covers/t02.png"' in third
    assert 'src="/art/a2.svg"' in fourth and "<audio" not in fourth and "Listen" not in fourth
    csp = response.headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://media.test;" in csp
    assert "media-src 'self' https://media.test;" in csp


def test_the_placeholder_cover_is_an_svg_of_its_own(client) -> None:
    one, other = client.get("/art/a1.svg"), client.get("/art/a2.svg")
    assert one.status_code == 200 and one.mimetype == "image/svg+xml"
    assert one.get_data(as_text=True).startswith("<svg") and one.data != other.data
    assert "immutable" in one.headers["Cache-Control"]
    assert client.get("/art/a1.svg").data == one.data  # the same artist, the same cover
    assert client.get("/art/..%2Fx.svg").status_code == 404
    assert client.get("/art/" + "x" * 500 + ".svg").status_code == 404


def test_without_media_hosts_every_cover_is_a_placeholder(web_settings, web_world) -> None:
    app = create_app(
        {"TESTING": True}, settings=web_settings.model_copy(update={"media_hosts": ""})
    )
    client = app.test_client()
    sign_in(client, web_world.u1)
    response = client.get("/users/u1")
    html = response.get_data(as_text=True)
    assert "media.test" not in html and html.count('src="/art/') == 50
    assert "img-src 'self' data:;" in response.headers["Content-Security-Policy"]
    app.extensions["cratedigger"]["engine"].dispose()


def test_popular_playlists_say_so(client, web_world) -> None:
    sign_in(client, web_world.u2)
    html = client.get("/users/u2").get_data(as_text=True)
    assert "<h1>Popular picks for u2</h1>" in html and len(playlist_rows(html)) == 50
    assert "Play a few tracks" in html


@pytest.mark.parametrize("fmt", ["jspf", "xspf", "m3u8"])
def test_the_page_offers_its_week_as_files(client, web_world, fmt: str) -> None:
    sign_in(client, web_world.u1)
    html = client.get("/users/u1").get_data(as_text=True)
    link = f"/users/u1/weeks/{WEEK}/playlist.{fmt}"
    assert f'href="{link}" download' in html
    token = csrf_of(html)
    client.post("/users/u1/thumbs", data={"track_id": "t03", "value": "down", "csrf_token": token})
    response = client.get(link)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="cratedigger-u1-{WEEK}.{fmt}"'
    )
    body = response.get_data(as_text=True)
    titles = set(re.findall(r"Song \d+", body))  # as the page shows them: t03 is gone
    assert titles == {f"Song {i}" for i in range(50)} - {"Song 3"}
    assert client.get(f"/users/u1/weeks/{WEEK}/playlist.exe").status_code == 404
    assert client.get(f"/users/u2/weeks/{WEEK}/playlist.{fmt}").status_code == 404  # not yours


@pytest.mark.parametrize("token", ["", "cd_wrong", "x" * 5000, "cd_\u00e9\u00e9", "' OR 1=1 --"])
def test_a_bad_token_does_not_sign_in(client, token: str) -> None:
    response = sign_in(client, token)
    assert response.status_code == 401
    assert "not valid" in response.get_data(as_text=True)
    assert client.get("/users/u1").status_code == 303


def test_a_revoked_token_does_not_sign_in(client, web_world) -> None:
    assert sign_in(client, web_world.revoked).status_code == 401


def test_revoking_a_token_ends_its_web_session(app, client, web_world) -> None:
    sign_in(client, web_world.u1)
    assert client.get("/users/u1").status_code == 200
    sessions = make_session_factory(app.extensions["cratedigger"]["engine"])
    with sessions.begin() as session:
        from recsys.db.tokens import authenticate, revoke_token

        principal = authenticate(session, web_world.u1, touch=False)
        assert principal is not None
        revoke_token(session, principal.token_id)
    assert client.get("/users/u1").status_code == 303


def test_open_redirects_are_refused(client, web_world) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        response = sign_in(client, web_world.u1, next_url=target)
        assert response.headers["Location"] == "/users/u1"
        client.post("/signout", data={"csrf_token": csrf_of(client.get("/users/u1").text)})


#: ``next`` values that name another site once a browser has read them, or nothing usable
HOSTILE_NEXT = [
    "/%09/evil.example",  # the issue's, as a form posts it: a literal %09
    "/\t/evil.example",  # the issue's, as the query string decodes: browsers drop the tab
    "//evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\\/evil.example",
    "https://evil.example",
    "http:/\\evil.example",
    "HTTPS:evil.example",
    "javascript:alert(1)",
    " javascript:alert(1)",
    "/%0a/evil",
    "/\n/evil",
    "/\r\n/evil.example",
    "/\r\nSet-Cookie: x=y",
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/%5C/evil.example",
    "/%252F%252Fevil.example",
    " //evil.example",
    "\x00//evil.example",
    "\t//evil.example",
    "\x0b//evil.example",
    "/\x00/evil.example",
    "/\x85/evil.example",
    "//evil.example/" + "a" * 3000,
    "/" + "a" * 5000,
    "\uff0f\uff0fevil.example",  # fullwidth solidi: not a slash to a browser's parser
]
#: kept as they are
LEGITIMATE_NEXT = [
    "/users/u1?week=2026-11-16",
    "/users/u1/history?page=2",
    f"/users/u1/weeks/{WEEK}",
]
#: odd, but paths of this site to a browser too (sent percent-encoded): either answer will do
ODD_LOCAL_NEXT = ["/users/u1/\u00e9t\u00e9", "/\u2028/evil.example", "/u\u202e//evil.example"]


def assert_same_origin(location: str, origin: str = "http://localhost") -> None:
    """The Location names a path of ``origin``, for a browser too: nothing a browser drops
    or turns into a slash first (controls, spaces, backslashes), then the same host."""
    assert not re.search(r"[\x00-\x20\x7f\\\\]", location), location
    assert location.startswith("/") and not location.startswith("//"), location
    assert urlsplit(urljoin(f"{origin}/signin", location)).netloc == urlsplit(origin).netloc


@pytest.mark.parametrize("target", HOSTILE_NEXT + LEGITIMATE_NEXT + ODD_LOCAL_NEXT)
def test_next_never_leads_off_the_site(app, web_world, target: str) -> None:
    """On every path that redirects to ``next`` (GET and POST sign-in): never a 500, never
    another host; hostile values fall back to the default page."""

    def check(response, fallback: str) -> None:
        assert response.status_code == 303
        assert_same_origin(response.headers["Location"])
        if target in LEGITIMATE_NEXT:
            assert response.headers["Location"] == target
        elif target in HOSTILE_NEXT:
            assert response.headers["Location"] == fallback

    client = app.test_client()
    form = client.get("/signin", query_string={"next": target})
    assert form.status_code == 200
    kept = re.search(r'name="next" value="([^"]*)"', form.text)
    if target not in ODD_LOCAL_NEXT:  # the form carries a safe next only
        assert (kept is not None) == (target in LEGITIMATE_NEXT)
    # POST: after signing in, to the next page or to the listener's own.
    check(sign_in(client, web_world.u1, next_url=target), "/users/u1")
    # GET when already signed in: straight there, or to the start page.
    check(client.get("/signin", query_string={"next": target}), "/")


@pytest.mark.parametrize(
    "query",
    ["next=/%09/evil.example", "next=/%0a/evil", "next=/%0d%0a/evil", "next=%20//evil.example"],
)
def test_next_in_the_raw_query_string(app, web_world, query: str) -> None:
    """As the issue reproduces it: ``/signin?next=/%09/evil.example`` answered
    ``Location: //evil.example``; one with %0a answered 500."""
    client = app.test_client()
    sign_in(client, web_world.u1)
    response = client.get(f"/signin?{query}")
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_another_listeners_pages_are_404_like_unknown_ones(client, web_world) -> None:
    sign_in(client, web_world.u2)
    for path in ("/users/u1", "/users/u1/history", f"/users/u1/weeks/{WEEK}", "/users/nobody"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.mimetype == "text/html"
    html = client.get("/users/u2").get_data(as_text=True)
    thumb = client.post(
        "/users/u1/thumbs", data={"track_id": "t00", "value": "down", "csrf_token": csrf_of(html)}
    )
    assert thumb.status_code == 404


def test_thumbs_down_removes_the_track_now_and_for_good(app, client, web_world) -> None:
    sign_in(client, web_world.u1)
    html = client.get("/users/u1").get_data(as_text=True)
    response = client.post(
        "/users/u1/thumbs", data={"track_id": "t03", "value": "down", "csrf_token": csrf_of(html)}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/users/u1#playlist"
    html = client.get("/users/u1").get_data(as_text=True)
    rows = playlist_rows(html)
    assert "t03" not in rows and len(rows) == 49 and "1 removed by you" in html
    assert "is gone" in html  # the flash message
    assert "t03" not in playlist_rows(client.get("/users/u1").get_data(as_text=True))
    with make_session_factory(app.extensions["cratedigger"]["engine"])() as session:
        assert thumbs_given(session, "u1") == {"t03": -1}
        rows_, total = feedback.list_feedback(session, "u1", limit=10)
        assert total == 1 and rows_[0].source == "web"


def test_thumbs_up_is_shown_pressed_and_can_be_changed(app, client, web_world) -> None:
    sign_in(client, web_world.u1)
    token = csrf_of(client.get("/users/u1").get_data(as_text=True))
    client.post("/users/u1/thumbs", data={"track_id": "t05", "value": "up", "csrf_token": token})
    html = client.get("/users/u1").get_data(as_text=True)
    row = html[html.index('data-track-id="t05"') :]
    row = row[: row.index("</tr>")]
    assert 'value="up" class="thumb up" aria-pressed="true"' in row
    client.post("/users/u1/thumbs", data={"track_id": "t05", "value": "down", "csrf_token": token})
    assert "t05" not in playlist_rows(client.get("/users/u1").get_data(as_text=True))


def test_a_thumb_taken_back_on_the_page_brings_the_track_back(app, client, web_world) -> None:
    sign_in(client, web_world.u1)
    token = csrf_of(client.get("/users/u1").get_data(as_text=True))
    client.post("/users/u1/thumbs", data={"track_id": "t03", "value": "down", "csrf_token": token})
    client.post("/users/u1/thumbs", data={"track_id": "t05", "value": "up", "csrf_token": token})
    html = client.get("/users/u1").get_data(as_text=True)
    removed = html[html.index('id="removed-heading"') :]
    assert 'data-track-id="t03"' in removed and 'aria-label="Bring back:' in removed
    row = html[html.index('<tr data-track-id="t05"') :]
    assert 'formaction="/users/u1/thumbs/undo"' in row[: row.index("</tr>")]
    for track_id in ("t03", "t05"):
        response = client.post(
            "/users/u1/thumbs/undo", data={"track_id": track_id, "csrf_token": token}
        )
        assert response.status_code == 303 and response.headers["Location"] == "/users/u1#playlist"
    html = client.get("/users/u1").get_data(as_text=True)
    rows = playlist_rows(html)
    assert "t03" in rows and len(rows) == 50 and "removed by you" not in html.lower()
    assert "is taken back" in html
    with make_session_factory(app.extensions["cratedigger"]["engine"])() as session:
        assert thumbs_given(session, "u1") == {}
    missing_csrf = client.post("/users/u1/thumbs/undo", data={"track_id": "t03"})
    assert missing_csrf.status_code == 400
    hostile = client.post(
        "/users/u1/thumbs/undo", data={"track_id": "<script>", "csrf_token": token}
    )
    assert hostile.status_code == 400


@pytest.mark.parametrize(
    "form",
    [
        {"track_id": "t00", "value": "sideways"},
        {"track_id": "", "value": "down"},
        {"track_id": "<script>", "value": "down"},
        {"track_id": "not-in-catalog", "value": "down"},
        {"value": "down"},
    ],
)
def test_bad_thumb_forms_are_400_and_store_nothing(app, client, web_world, form) -> None:
    sign_in(client, web_world.u1)
    token = csrf_of(client.get("/users/u1").get_data(as_text=True))
    response = client.post("/users/u1/thumbs", data={**form, "csrf_token": token})
    assert response.status_code == 400 and response.mimetype == "text/html"
    with make_session_factory(app.extensions["cratedigger"]["engine"])() as session:
        assert thumbs_given(session, "u1") == {}


def test_a_thumb_without_the_csrf_token_is_refused(app, client, web_world) -> None:
    sign_in(client, web_world.u1)
    for data in (
        {"track_id": "t00", "value": "down"},
        {"track_id": "t00", "value": "down", "csrf_token": "forged"},
    ):
        response = client.post("/users/u1/thumbs", data=data)
        assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    with make_session_factory(app.extensions["cratedigger"]["engine"])() as session:
        assert thumbs_given(session, "u1") == {}


def test_sign_in_without_csrf_is_refused(client, web_world) -> None:
    response = client.post("/signin", data={"token": web_world.u1})
    assert response.status_code == 400


def test_history_and_previous_weeks(client, web_world) -> None:
    sign_in(client, web_world.u1)
    html = client.get("/users/u1/history").get_data(as_text=True)
    assert html.index(f"/users/u1/weeks/{WEEK}") < html.index(f"/users/u1/weeks/{PREVIOUS_WEEK}")
    assert "2 weekly playlists" in html
    # Each week's count of tracks and a few covers (t00 and t02 have allowed covers).
    assert html.count("50 tracks") == 2 and "removed by you" not in html
    covers = re.findall(r'<img src="([^"]+)"', html)
    assert covers[:4] == [
        "https://media.test/covers/t00.png",
        "/art/a2.svg",
        "https://media.test/covers/t02.png",
        "/art/a2.svg",
    ]
    previous = client.get(f"/users/u1/weeks/{PREVIOUS_WEEK}").get_data(as_text=True)
    assert playlist_rows(previous)[0] == "t05"
    token = csrf_of(previous)
    response = client.post(
        "/users/u1/thumbs",
        data={"track_id": "t06", "value": "down", "week": str(PREVIOUS_WEEK), "csrf_token": token},
    )
    assert response.headers["Location"] == f"/users/u1/weeks/{PREVIOUS_WEEK}#playlist"
    html = client.get("/users/u1/history").get_data(as_text=True)
    # t06 is in both weeks: gone from both, and neither says 50 any more.
    assert html.count("49 tracks (1 removed by you)") == 2 and "50 tracks" not in html
    for path in ("/users/u1/weeks/2026-11-17", "/users/u1/weeks/2020-01-06", "/users/u1/weeks/x"):
        assert client.get(path).status_code == 404
    assert client.get("/users/u1/history?page=999999999").status_code == 200


def test_sign_out_ends_the_session(client, web_world) -> None:
    sign_in(client, web_world.u1)
    token = csrf_of(client.get("/users/u1").get_data(as_text=True))
    assert client.post("/signout", data={"csrf_token": token}).status_code == 303
    assert client.get("/users/u1").status_code == 303


def test_operator_pages_are_for_operators_only(client, web_world) -> None:
    pages = (
        "/operator/",
        "/operator/runs",
        "/operator/models",
        "/operator/tuning",
        "/operator/quarantine",
        "/operator/listeners",
    )
    for path in pages:
        assert client.get(path).status_code == 303  # anonymous: sign in first
    sign_in(client, web_world.u1)
    for path in pages:
        assert client.get(path).status_code == 404, path
    token = csrf_of(client.get("/users/u1").get_data(as_text=True))
    client.post("/signout", data={"csrf_token": token})
    assert sign_in(client, web_world.operator).headers["Location"] == "/operator/"
    for path in pages:
        assert client.get(path).status_code == 200, path
    # Operators may read any listener's playlist for support, but not rate for them.
    html = client.get("/users/u1").get_data(as_text=True)
    assert len(playlist_rows(html)) == 50 and 'value="down"' not in html


def test_models_page_plots_metrics_across_weeks(client, web_world) -> None:
    sign_in(client, web_world.operator)
    html = client.get("/operator/models").get_data(as_text=True)
    # Two weeks: no line yet (tests/test_operator_pages.py draws one from three weeks), but
    # bars of the newest week: model 0.30, most popular 0.15, the previous model 0.25.
    assert '<polyline class="line-model"' not in html
    bars = re.findall(
        r'<rect class="bar (bar-\w+)"[^>]* width="([\d.]+)"[^>]*>\s*<title>ndcg@50', html
    )
    widths = {css: float(width) for css, width in bars}
    assert widths["bar-model"] > widths["bar-previous"] > widths["bar-pop"] > 0
    assert "0.3000" in html and "0.1500" in html and "0.2500" in html


def test_quarantine_page_counts_by_reason(client, web_world) -> None:
    sign_in(client, web_world.operator)
    html = client.get("/operator/quarantine").get_data(as_text=True)
    assert "unknown_track" in html and "timestamp_after_cutoff" in html
    assert "10 rows" in html and "0.700 %" in html


def test_tuning_page_plots_the_newest_search_and_says_what_was_adopted(
    app, client, web_world
) -> None:
    sign_in(client, web_world.operator)
    assert "No search yet" in client.get("/operator/tuning").get_data(as_text=True)
    sessions = make_session_factory(app.extensions["cratedigger"]["engine"])
    scores = [(0.20, "complete"), (0.25, "complete"), (0.10, "pruned"), (0.22, "complete")]
    with sessions.begin() as session:
        run = repository.start_weekly_run(session, WEEK, "beat", "/data")
        search = repository.start_tuning(session, run.id, WEEK)
        for number, (score, state) in enumerate(scores):
            params = {"factors": 16 * (number + 1), "regularization": 0.1, "alpha": 5.0}
            repository.add_tuning_trial(
                session,
                search.id,
                number,
                {"params": params | {"iterations": 15}, "score": score, "seconds": 1.5}
                | {"stage": "start" if number == 0 else "search", "state": state},
            )
        repository.finish_tuning(
            session,
            search.id,
            "succeeded",
            current_score=0.20,
            best_score=0.25,
            holdout_current=0.18,
            holdout_best=0.21,
            best_params={"factors": 32, "regularization": 0.1, "alpha": 5.0, "iterations": 15}
            | {"blend": "rp3beta:0.5"},
            adopted=True,
            reason="adopted: holdout NDCG 0.2100 vs 0.1800 now",
        )
    html = client.get("/operator/tuning").get_data(as_text=True)
    assert "<strong>adopted</strong>: adopted: holdout NDCG 0.2100 vs 0.1800 now" in html
    assert "32 factors, reg 0.1, alpha 5, 15 it., blend rp3beta:0.5" in html
    best = re.search(r'<polyline class="line-model" fill="none" points="([^"]+)"', html)
    assert best is not None
    ys = [float(point.split(",")[1]) for point in best.group(1).split()]
    # Best so far: 0.20, 0.25, 0.25, 0.25 (never falls: y never grows).
    assert len(ys) == 4 and ys[0] > ys[1] == ys[2] == ys[3]
    assert html.count('<circle class="dot-trial"') == 3
    assert html.count('<circle class="dot-pruned"') == 1


def test_runs_page_shows_steps_chunks_and_errors(app, client, web_world) -> None:
    sessions = make_session_factory(app.extensions["cratedigger"]["engine"])
    with sessions.begin() as session:
        run = repository.start_weekly_run(session, WEEK.replace(day=23), "beat", "/data")
        repository.begin_step(session, run.id, "aggregate")
        repository.finish_step(session, run.id, "aggregate", counts={"interactions": 1234})
        for chunk in range(3):
            repository.begin_step(session, run.id, "generate", chunk)
        repository.finish_step(session, run.id, "generate", chunk=0, counts={"playlists": 7})
        repository.end_weekly_run(
            session, run.id, "failed", error="GateRejected: <below> popularity"
        )
        published = repository.start_weekly_run(session, WEEK.replace(day=30), "beat", "/data")
        repository.begin_export(session, WEEK.replace(day=30), "p.d.playlists", published.id)
        repository.end_export(
            session, WEEK.replace(day=30), "p.d.playlists", error="BigQueryError: <away>"
        )
    sign_in(client, web_world.operator)
    html = client.get("/operator/runs").get_data(as_text=True)
    assert f"Run #{run.id}" in html and "failed" in html
    assert "failed: BigQueryError: &lt;away&gt;" in html and "0 rows to p.d.playlists" in html
    assert "generate: 1/3 chunks succeeded, 3 attempts" in html
    assert "<dt>interactions</dt><dd>1,234</dd>" in html and "<dt>playlists</dt><dd>7</dd>" in html
    assert "GateRejected: &lt;below&gt; popularity" in html
    listeners = client.get("/operator/listeners?page=abc").get_data(as_text=True)
    assert (
        'href="/users/u1"' in listeners and "Ada" in listeners and 'href="/users/u3"' in listeners
    )


def test_html_errors_for_pages_and_json_errors_for_api(client) -> None:
    page = client.get("/no/such/page")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "404" in page.get_data(as_text=True)
    api = client.get("/api/v1/nothing-here")
    assert api.status_code == 404 and api.get_json()["error"]["code"] == "not_found"


def test_security_headers_on_every_answer(client) -> None:
    for path in ("/signin", "/static/style.css", "/api/v1/health", "/nowhere"):
        response = client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        response.close()


def test_pages_have_no_inline_scripts_or_styles(client, web_world) -> None:
    sign_in(client, web_world.operator)
    for path in ("/signin", "/users/u1", "/operator/models", "/operator/runs", "/api/v1/docs"):
        html = client.get(path).get_data(as_text=True)
        assert "<script" not in html and "<style" not in html and " style=" not in html, path


def test_session_cookie_is_httponly_lax_and_secure_over_https(app, web_world) -> None:
    plain = app.test_client()
    sign_in(plain, web_world.u1)
    cookie = plain.get_cookie("cratedigger_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    assert not cookie.secure
    https = app.test_client()
    https.get("/signin", base_url="https://localhost")
    page = https.get("/signin", base_url="https://localhost").get_data(as_text=True)
    response = https.post(
        "/signin",
        data={"token": web_world.u1, "csrf_token": csrf_of(page)},
        base_url="https://localhost",
        headers={"Referer": "https://localhost/signin"},
    )
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]
    assert "HttpOnly" in response.headers["Set-Cookie"]


def test_sign_in_attempts_are_rate_limited(web_settings, web_world) -> None:
    settings = web_settings.model_copy(update={"signin_rate_limit": "3 per minute"})
    app = create_app({"TESTING": True}, settings=settings)
    client = app.test_client()
    codes = [sign_in(client, "cd_wrong").status_code for _ in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    # Another wrong token from that address: the address is over its limit.
    limited = sign_in(client, "cd_another-typo")
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    # A valid token is never refused for other people's failures from its address.
    assert sign_in(client, web_world.u1).status_code == 303
    # From another address: the same wrong prefix is over its own limit, another is not.
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert sign_in(elsewhere, "cd_wrong").status_code == 429
    assert sign_in(elsewhere, "cd_typo").status_code == 401
    assert sign_in(elsewhere, web_world.u2).status_code == 303
    app.extensions["cratedigger"]["engine"].dispose()


def test_successful_sign_ins_do_not_count_against_the_limit(web_settings, web_world) -> None:
    settings = web_settings.model_copy(update={"signin_rate_limit": "2 per minute"})
    app = create_app({"TESTING": True}, settings=settings)
    codes = [sign_in(app.test_client(), web_world.u1).status_code for _ in range(4)]
    assert codes == [303] * 4
    app.extensions["cratedigger"]["engine"].dispose()


def test_the_app_refuses_to_start_without_a_secret_key(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ConfigError, match="CRATEDIGGER_SECRET_KEY"):
        create_app(settings=settings)
    keyed = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}", secret_key="k" * 40
    )
    app = create_app(settings=keyed)
    assert app.secret_key == "k" * 40
    app.extensions["cratedigger"]["engine"].dispose()


def test_a_short_secret_key_is_a_configuration_error(monkeypatch) -> None:
    from recsys.settings import load_settings

    monkeypatch.setenv("CRATEDIGGER_SECRET_KEY", "short")
    with pytest.raises(ConfigError, match="CRATEDIGGER_SECRET_KEY"):
        load_settings()


def test_static_files_are_served_by_the_app(client) -> None:
    response = client.get("/static/style.css")
    assert response.status_code == 200 and b"--accent" in response.data
    response.close()

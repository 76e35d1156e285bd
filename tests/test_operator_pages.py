"""The operator pages through Flask's test client, on SQLite and PostgreSQL: the overview's
figures against the same figures computed here from the rows the world wrote, the runs in
pipeline order with the live run marked, the models' bars and lines, the quarantined rows
escaped, and the charts' text alternatives."""

from __future__ import annotations

import datetime as dt
import html as html_module
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, update

from recsys.db import feedback, repository
from recsys.db.engine import make_session_factory
from recsys.db.models import (
    Feedback,
    JobRun,
    ModelVersion,
    Playlist,
    PlaylistTrack,
    Track,
    User,
    WeeklyRun,
    WeekPublication,
)
from tests.test_webapp import csrf_of, sign_in
from tests.webworld import PREVIOUS_WEEK, TRACKS, WEEK
from tests.worlds import publish_week_playlists

#: A third, older published week, so that lines across weeks have three points.
OLDEST_WEEK = PREVIOUS_WEEK - dt.timedelta(days=7)
COLD_TRACKS = [f"t{i:02d}" for i in range(60, 80)]
HOSTILE_RECORD = (
    '{"user_id": "<script>alert(1)</script>", "track_id": "\\"><img src=x onerror=alert(2)>"}'
)
HOSTILE_FILE = "plays/<b>bold</b>.jsonl"
#: The operator's pages and where each is.
PAGES = {
    "overview": "/operator/",
    "runs": "/operator/runs",
    "models": "/operator/models",
    "tuning": "/operator/tuning",
    "quarantine": "/operator/quarantine",
    "listeners": "/operator/listeners",
}


@dataclass(frozen=True)
class OperatorWorld:
    #: the run that rebuilt and republished the week of WEEK, last of all
    rerun: int
    #: the run the week of WEEK was first published with
    first_run: int
    #: a run of the week of WEEK that failed after the rerun was published
    failed_run: int


def _at(base: dt.datetime, seconds: float) -> dt.datetime:
    return base + dt.timedelta(seconds=seconds)


def _step(session, run_id: int, step: str, start: float, end: float, origin, **finish) -> None:
    """A step (or chunk) begun and finished by the repository, then given the times it
    would have taken in a real run (``start``/``end`` seconds after ``origin``)."""
    chunk = finish.pop("chunk", -1)
    job = repository.begin_step(session, run_id, step, chunk)
    repository.finish_step(session, run_id, step, chunk=chunk, **finish)
    job.started_at, job.finished_at = _at(origin, start), _at(origin, end)
    job.seconds = end - start


def _quarantine_rows(folder: Path) -> None:
    """The quarantine Parquet of an aggregation, as jobs/aggregate.py writes it."""
    long_record = '{"user_id": "u1", "note": "' + "x" * 500 + '"}'
    rows = [
        (
            "plays",
            "unknown_track",
            HOSTILE_FILE,
            "<script>alert(1)</script>",
            "t99",
            HOSTILE_RECORD,
        ),
        ("plays", "unknown_track", "plays/part-1.parquet", "u1", "t98", long_record),
        ("plays", "unknown_track", "plays/part-1.parquet", "u2", "t97", '{"n": 3}'),
        ("plays", "unknown_track", "plays/part-1.parquet", "u2", "t96", '{"n": 4}'),
        ("plays", "unknown_track", "plays/part-1.parquet", "u2", "t95", '{"n": 5}'),
        ("plays", "timestamp_after_cutoff", "plays/part-2.csv", "u1", "t01", "u1,t01,2099-01-01"),
        ("tracks", "missing_title", "tracks.csv", None, "t77", "t77,,a3"),
    ]
    names = ("kind", "reason", "source_file", "user_id", "track_id", "record")
    folder.mkdir(parents=True)
    table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)})
    pq.write_table(table, folder / "part-00000.snappy.parquet")


@pytest.fixture
def operator_world(app, web_world, web_settings) -> OperatorWorld:
    """The web world and, on top of it: older history, a third published week, twenty
    tracks nobody was recommended but the rerun's cold slots, thumbs on both sides of week
    boundaries, and a rerun of the newest week with every step of a weekly run, published
    with its export and its quarantine on disk; then a failed run of the same week."""
    sessions = make_session_factory(app.extensions["cratedigger"]["engine"])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with sessions.begin() as session:
        first_run = session.scalar(
            select(WeekPublication.weekly_run_id).where(WeekPublication.week_start == WEEK)
        )
        # The world's runs happened days ago; the rerun below is the newest.
        session.execute(
            update(WeeklyRun).values(
                started_at=now - dt.timedelta(days=2), finished_at=now - dt.timedelta(days=2)
            )
        )
        repository.upsert_artists(session, [{"artist_id": "a3", "name": "Three"}])
        repository.upsert_tracks(
            session,
            [
                {"track_id": t, "title": f"New {t}", "artist_id": "a3", "duration_ms": 90_000}
                | {"released_at": None}
                for t in COLD_TRACKS
            ],
        )
        oldest = f"{OLDEST_WEEK.isoformat()}-abc"
        repository.save_model_version(
            session,
            ModelVersion(
                version=oldest,
                week_start=OLDEST_WEEK,
                fingerprint="e" * 64,
                artifact_path="/nowhere",
                params={"factors": 8},
                n_users=40,
                n_tracks=60,
                n_interactions=400,
                train_seconds=0.1,
                status="published",
                metrics={
                    "model": {"ndcg@50": 0.2, "recall@50": 0.3},
                    "popular": {"ndcg@50": 0.12, "recall@50": 0.2},
                },
            ),
        )
        oldest_run = publish_week_playlists(
            session,
            OLDEST_WEEK,
            oldest,
            [
                repository.NewPlaylist(
                    "u1",
                    [
                        repository.PlaylistEntry(track, 1.0 - i / 100)
                        for i, track in enumerate(TRACKS[:10] + COLD_TRACKS[:5])
                    ],
                )
            ],
        )
        session.execute(
            update(WeeklyRun)
            .where(WeeklyRun.id == oldest_run)
            .values(started_at=now - dt.timedelta(days=9), finished_at=now - dt.timedelta(days=9))
        )
        thumbs = [
            ("u1", "t00", 1, WEEK, dt.timedelta(days=1)),
            ("u1", "t01", -1, WEEK, dt.timedelta(days=2)),
            ("u2", "t59", 1, WEEK, dt.timedelta(days=6, hours=23, minutes=59)),
            ("u2", "t58", 1, WEEK, dt.timedelta(days=7)),  # the next week's first second
            ("u1", "t05", -1, PREVIOUS_WEEK, dt.timedelta(days=1)),
            ("u1", "t06", -1, WEEK, -dt.timedelta(microseconds=1)),  # the week before's last
        ]
        for user, track, value, week, after in thumbs:
            start = dt.datetime.combine(week, dt.time(), tzinfo=dt.UTC)
            feedback.record_thumb(session, user, track, value, source="web", rated_at=start + after)

        rerun = repository.start_weekly_run(session, WEEK, "manual", "/data/world")
        origin = now - dt.timedelta(minutes=10)
        rerun.started_at, rerun.aggregation = origin, f"run-{rerun.id}"
        rerun.model_version = f"{WEEK.isoformat()}-abc"
        counts = {
            "events_read": {"plays": 2400, "thumbs": 60},
            "quarantined": {
                "plays": {"unknown_track": 5, "timestamp_after_cutoff": 1},
                "tracks": {"missing_title": 1},
            },
            "interactions": 900,
            "aggregation": f"run-{rerun.id}",
        }
        _step(session, rerun.id, "aggregate", 0, 40, origin, counts=counts)
        _step(session, rerun.id, "tune", 40, 41, origin, counts={"searched": True, "trials": 3})
        search = repository.start_tuning(session, rerun.id, WEEK)
        for number, (score, state) in enumerate(
            [(0.2, "complete"), (0.1, "pruned"), (0.24, "complete")]
        ):
            params = {"factors": 16 * (number + 1), "regularization": 0.1, "alpha": 5.0}
            repository.add_tuning_trial(
                session,
                search.id,
                number,
                {
                    "params": params,
                    "score": score,
                    "seconds": 0.5,
                    "stage": "search",
                    "state": state,
                },
            )
        repository.finish_tuning(
            session,
            search.id,
            "succeeded",
            current_score=0.2,
            best_score=0.24,
            holdout_current=0.18,
            holdout_best=0.17,
            best_params={"factors": 48, "regularization": 0.1, "alpha": 5.0, "iterations": 15},
            adopted=False,
            reason="kept: holdout NDCG 0.1700 vs 0.1800 now",
        )
        _step(session, rerun.id, "train", 41, 70, origin, counts={"listeners": 40})
        _step(session, rerun.id, "gate", 70, 80, origin, counts={"passed": True})
        personal = repository.NewPlaylist(
            "u1",
            [
                repository.PlaylistEntry(track, 2.0 - i / 100)
                for i, track in enumerate(TRACKS[:45] + COLD_TRACKS[:5])
            ],
        )
        popular = repository.NewPlaylist(
            "u2",
            [repository.PlaylistEntry(TRACKS[59 - i], 1.0 - i / 100) for i in range(50)],
            "popular",
        )
        for chunk, playlist, cold in ((0, personal, 5), (1, popular, 0)):
            written = repository.replace_week_playlists(
                session, WEEK, rerun.model_version, [playlist], rerun.id
            )
            chunk_counts = {"playlists": 1, "cold_tracks": cold, "playlist_tracks": written}
            _step(
                session,
                rerun.id,
                "generate",
                80 + chunk,
                100 + 5 * chunk,
                origin,
                chunk=chunk,
                counts=chunk_counts,
            )
        repository.begin_step(session, rerun.id, "generate", 1)  # a retried chunk
        repository.finish_step(session, rerun.id, "generate", chunk=1, counts=chunk_counts)
        _step(session, rerun.id, "publish", 105, 106, origin, counts={"playlists": 2})
        repository.claim_publication(session, rerun.id)
        repository.publish_week(session, rerun.id)
        rerun.finished_at = _at(origin, 106)
        repository.begin_export(session, WEEK, "proj.cd.playlists", rerun.id)
        repository.end_export(session, WEEK, "proj.cd.playlists", rows=100)
        failed = repository.start_weekly_run(session, WEEK, "beat", "/data/world")
        failed.started_at = now - dt.timedelta(minutes=1)
        error = "InputError: <no files>"
        _step(
            session, failed.id, "aggregate", 0, 5, failed.started_at, status="failed", error=error
        )
        repository.end_weekly_run(session, failed.id, "failed", error=error)
        world = OperatorWorld(rerun=rerun.id, first_run=int(first_run), failed_run=failed.id)
    # The run's step renamed its generate chunk's times; the retried chunk kept "now".
    with sessions.begin() as session:
        retried = session.scalars(
            select(JobRun).where(JobRun.weekly_run_id == world.rerun, JobRun.chunk == 1)
        ).one()
        retried.started_at, retried.finished_at = _at(origin, 81), _at(origin, 105)
    _quarantine_rows(
        web_settings.data_dir / "quarantine" / f"week={WEEK.isoformat()}" / f"run-{world.rerun}"
    )
    return world


def _operator(client, web_world) -> None:
    assert sign_in(client, web_world.operator).status_code == 303


def _section(html: str, element_id: str) -> str:
    """The <section> that holds the element of that id."""
    start = html.rindex("<section", 0, html.index(f'id="{element_id}"'))
    return html[start : html.index("</section>", start)]


def _cells(row_html: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="([\w-]+)">([^<]*)<', row_html))


# --- the overview -----------------------------------------------------------------------


def _expected_weeks(session) -> dict[dt.date, dict[str, str]]:
    """Each published week's figures, from the rows themselves and written as the page
    writes them: a slow, obvious reading of the tables, not the page's queries."""
    tracks = {t.track_id: t.artist_id for t in session.scalars(select(Track))}
    expected = {}
    for publication in session.scalars(select(WeekPublication)):
        playlists = session.scalars(
            select(Playlist).where(
                Playlist.week_start == publication.week_start,
                Playlist.weekly_run_id == publication.weekly_run_id,
            )
        ).all()
        entries = {
            p.id: session.scalars(
                select(PlaylistTrack.track_id).where(PlaylistTrack.playlist_id == p.id)
            ).all()
            for p in playlists
        }
        shown = {track for ids in entries.values() for track in ids}
        artists = [len({tracks[t] for t in ids}) for ids in entries.values()]
        start = dt.datetime.combine(publication.week_start, dt.time(), tzinfo=dt.UTC)
        up = down = 0
        for thumb in session.scalars(select(Feedback)):
            rated = (
                thumb.rated_at if thumb.rated_at.tzinfo else thumb.rated_at.replace(tzinfo=dt.UTC)
            )
            if start <= rated < start + dt.timedelta(days=7):
                up, down = up + (thumb.value == 1), down + (thumb.value == -1)
        cold = placed = 0
        counted = False
        for job in session.scalars(
            select(JobRun).where(
                JobRun.weekly_run_id == publication.weekly_run_id, JobRun.step == "generate"
            )
        ):
            counted = True
            cold += job.counts["cold_tracks"]
            placed += job.counts["playlist_tracks"]
        n_tracks = sum(len(ids) for ids in entries.values())
        expected[publication.week_start] = {
            "playlists": f"{len(playlists):,}",
            "coverage": f"{100 * len(shown) / len(tracks):.1f} %",
            "diversity": f"{sum(artists) / len(artists):.1f}",
            "up": str(up),
            "down": str(down),
            "up-share": f"{100 * up / (up + down):.1f} %" if up + down else "–",
            "thumb-rate": f"{100 * (up + down) / n_tracks:.1f}",
            "cold": f"{100 * cold / placed:.1f} %" if counted else "–",
        }
    return expected


def test_the_overview_shows_what_the_rows_say(app, client, web_world, operator_world) -> None:
    _operator(client, web_world)
    response = client.get("/operator/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    sessions = make_session_factory(app.extensions["cratedigger"]["engine"])
    with sessions() as session:
        expected = _expected_weeks(session)
        listeners = len(session.scalars(select(User)).all())
        tracks = len(session.scalars(select(Track)).all())
        newest_run = max(session.scalars(select(WeeklyRun)), key=lambda r: r.started_at)
        aggregate = session.scalars(
            select(JobRun).where(
                JobRun.weekly_run_id == operator_world.rerun, JobRun.step == "aggregate"
            )
        ).one()
    # The sums the tables give, known from how the world was written.
    assert set(expected) == {OLDEST_WEEK, PREVIOUS_WEEK, WEEK}
    assert expected[WEEK] == {
        "playlists": "2",
        "coverage": "81.2 %",
        "diversity": "2.5",
        "up": "2",
        "down": "1",
        "up-share": "66.7 %",
        "thumb-rate": "3.0",
        "cold": "5.0 %",
    }
    assert expected[PREVIOUS_WEEK]["down"] == "2" and expected[PREVIOUS_WEEK]["cold"] == "–"
    tiles = _cells(_section(page, "now"))
    assert tiles["listeners"] == f"{listeners:,}" == "3"
    assert tiles["tracks"] == f"{tracks:,}" == "80"
    assert tiles["events"] == f"{sum(aggregate.counts['events_read'].values()):,}" == "2,460"
    assert tiles["playlists"] == expected[WEEK]["playlists"]
    assert tiles["coverage"] == expected[WEEK]["coverage"]
    assert tiles["diversity"] == expected[WEEK]["diversity"]
    weeks = _section(page, "weeks")
    rows = re.findall(r'<tr data-week="([\d-]+)">(.*?)</tr>', weeks, re.S)
    assert [week for week, _ in rows] == [str(w) for w in (WEEK, PREVIOUS_WEEK, OLDEST_WEEK)]
    for week, row in rows:
        assert _cells(row) == expected[dt.date.fromisoformat(week)], week
    # The charts: a bar per week, as wide as its value, and a text alternative each.
    for chart in ("chart-coverage", "chart-diversity", "chart-thumbs", "chart-cold"):
        assert f'aria-labelledby="{chart}-title {chart}-desc"' in weeks
        assert re.search(rf'<desc id="{chart}-desc">[^<]*{WEEK}', weeks), chart
    coverage = re.search(r'id="chart-coverage".*?</figure>', weeks, re.S)
    assert coverage is not None
    widths = [
        float(w)
        for w in re.findall(r'<rect class="bar bar-model"[^>]* width="([\d.]+)"', coverage.group(0))
    ]
    assert len(widths) == 3 and widths[0] > widths[1] > widths[2] > 0  # 81 %, 62 %, 19 %
    assert "81.2 %" in coverage.group(0)
    thumbs_chart = re.search(r'id="chart-thumbs".*?</figure>', weeks, re.S)
    assert thumbs_chart is not None
    down = re.findall(r'<rect class="bar bar-down"[^>]* width="([\d.]+)"', thumbs_chart.group(0))
    # 1, 2 and 0 thumbs down, newest week first, on one scale with the thumbs up.
    assert len(down) == 3 and float(down[1]) == pytest.approx(2 * float(down[0]), abs=0.1)
    assert float(down[2]) == 0 and "0 down" in thumbs_chart.group(0)
    # The last run's timeline: its steps in pipeline order, as bars from the run's start.
    last = _section(page, "last-run")
    assert newest_run.id == operator_world.failed_run
    assert (
        f"Run #{operator_world.failed_run}</a>" in last and "InputError: &lt;no files&gt;" in last
    )
    assert re.search(r'<th scope="row">aggregate</th><td><span class="status status-failed">', last)
    assert 'class="span span-failed"' in last and "span-succeeded" not in last


def test_the_timeline_puts_steps_on_a_time_axis(app, client, web_world, operator_world) -> None:
    sessions = make_session_factory(app.extensions["cratedigger"]["engine"])
    with sessions.begin() as session:  # the failed run never happened: the rerun is last
        session.delete(session.get(WeeklyRun, operator_world.failed_run))
    _operator(client, web_world)
    last = _section(client.get("/operator/").get_data(as_text=True), "last-run")
    assert f"Run #{operator_world.rerun}</a>" in last and "badge-live" in last
    rows = re.findall(
        r'<tr><th scope="row">([^<]+)</th>.*?<td class="num">([\d.]+)</td><td class="num">([\d.]+)',
        last,
        re.S,
    )
    assert rows == [
        ("aggregate", "0.0", "40.0"),
        ("tune", "40.0", "1.0"),
        ("train", "41.0", "29.0"),
        ("gate", "70.0", "10.0"),
        ("generate (2 chunks)", "80.0", "25.0"),
        ("publish", "105.0", "1.0"),
    ]
    assert (
        '<title id="timeline-title">Timeline of run' in last and '<desc id="timeline-desc">' in last
    )
    spans = re.findall(
        r'<rect class="span span-succeeded" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"', last
    )
    assert len(spans) == 7  # five steps and two chunks
    x = {round(float(sx), 1): float(w) for sx, _, w in spans}
    # The axis runs to 2 min (the round end after 106 s) over 560 - 88 - 16 units.
    scale = (560 - 88 - 16) / 120
    assert x[88.0] == pytest.approx(40 * scale, abs=0.2)  # aggregate: 0 s to 40 s
    assert max(x) == pytest.approx(88 + 105 * scale, abs=0.2)  # publish starts at 105 s
    ticks = re.findall(
        r'<text class="tick" x="[\d.]+" y="[\d.]+" text-anchor="\w+">(\d+ s)</text>', last
    )
    assert ticks == ["0 s", "30 s", "60 s", "90 s", "120 s"]
    # One lane (22 units) per step; the generate lane's two chunks share it, one above the other.
    tops = sorted(float(y) for _, y, _ in spans)
    assert tops == [11.0, 33.0, 55.0, 77.0, 99.0, 107.0, 121.0]
    assert last.count('height="16.0"') == 5 and last.count('height="8.0"') == 2


# --- weekly runs ------------------------------------------------------------------------


def test_runs_are_in_pipeline_order_with_readable_counts_and_the_live_run(
    client, web_world, operator_world
) -> None:
    _operator(client, web_world)
    page = client.get("/operator/runs").get_data(as_text=True)
    rerun = _section(page, f"run-{operator_world.rerun}")
    steps = re.findall(r'<tr(?: class="[^"]*")?><th scope="row">([^<]+)</th>', rerun)
    assert steps == ["aggregate", "tune", "train", "gate", "generate", "publish", "export"]
    assert "generate: 2/2 chunks succeeded, 3 attempts" in rerun
    # Counts as key/value lists, nested ones too, never a JSON blob.
    assert '<dt>events_read</dt><dd><dl class="counts"><div><dt>plays</dt><dd>2,400</dd>' in rerun
    assert (
        "<dt>cold_tracks</dt><dd>5</dd>" in rerun
        and "<dt>playlist_tracks</dt><dd>100</dd>" in rerun
    )
    assert "<dt>passed</dt><dd>yes</dd>" in rerun
    assert "{&#34;" not in page and '{"' not in page
    assert "100 rows to proj.cd.playlists" in rerun
    # The week of WEEK had three runs; readers see the rerun's playlists.
    assert 'class="badge badge-live"' in rerun
    for other in (operator_world.first_run, operator_world.failed_run):
        assert "badge-live" not in _section(page, f"run-{other}")
    assert "InputError: &lt;no files&gt;" in _section(page, f"run-{operator_world.failed_run}")
    assert page.count('class="badge badge-live" title=') == 3  # the rerun and two other weeks


# --- models -----------------------------------------------------------------------------


def test_models_show_the_weeks_bars_and_from_three_weeks_a_line(
    client, web_world, operator_world
) -> None:
    _operator(client, web_world)
    page = client.get("/operator/models").get_data(as_text=True)
    line = re.search(r'<polyline class="line-model" fill="none" points="([^"]+)"', page)
    assert line is not None
    points = [tuple(map(float, p.split(","))) for p in line.group(1).split()]
    # NDCG 0.20, 0.25, 0.30 over three weeks: each point right of and above the one before.
    assert len(points) == 3
    assert points[0][0] < points[1][0] < points[2][0] and points[0][1] > points[1][1] > points[2][1]
    assert '<desc id="ndcg-weeks-desc">' in page and f"{OLDEST_WEEK} 0.2000" in page
    bars = _section(page, "newest-metrics")
    assert f"Week of {WEEK}" in bars
    rows = re.findall(
        r'<tr><th scope="row">([^<]+)</th>' + r'<td class="num">([^<]+)</td>' * 3 + "</tr>",
        bars,
    )
    # This week's model, most popular, and the model published the week before.
    assert rows == [
        ("ndcg@50", "0.3000", "0.1500", "0.2500"),
        ("recall@50", "0.4000", "0.2000", "0.4000"),
    ]
    assert f"<code>{PREVIOUS_WEEK.isoformat()}-abc</code>" in bars


# --- quarantine -------------------------------------------------------------------------


def test_quarantine_shows_the_first_rows_of_each_reason_escaped(
    client, web_world, operator_world
) -> None:
    _operator(client, web_world)
    page = client.get("/operator/quarantine").get_data(as_text=True)
    rerun = _section(page, f"q-{operator_world.rerun}")
    assert "7 rows" in rerun
    unknown = re.search(r"<summary>plays · <code>unknown_track</code>.*?</details>", rerun, re.S)
    assert unknown is not None and "3 of 5</summary>" in unknown.group(0)
    records = [
        html_module.unescape(r)
        for r in re.findall(r'<pre class="record">([^<]*)</pre>', unknown.group(0))
    ]
    assert records[0] == HOSTILE_RECORD and records[2] == '{"n": 3}'
    assert records[1].endswith("x …") and len(records[1]) == 300 + 2  # cut to 300 characters
    assert html_module.escape(HOSTILE_FILE, quote=False) in unknown.group(0)
    assert "u1,t01,2099-01-01" in rerun and "t77,,a3" in rerun and "tracks.csv" in rerun
    # Nothing hostile reaches the page as markup.
    for text in ("<script>alert", "<img src=x", "<b>bold</b>"):
        assert text not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The world's first run of the week has counts but its rows are no longer on disk.
    first = _section(page, f"q-{operator_world.first_run}")
    assert "unknown_track" in first and "no longer on disk" in first


def test_a_quarantine_that_cannot_be_read_says_so(
    client, web_world, operator_world, web_settings
) -> None:
    folder = (
        web_settings.data_dir
        / "quarantine"
        / f"week={WEEK.isoformat()}"
        / f"run-{operator_world.rerun}"
    )
    (folder / "part-00000.snappy.parquet").write_bytes(b"not parquet at all")
    _operator(client, web_world)
    response = client.get("/operator/quarantine")
    assert response.status_code == 200
    assert "Could not read the quarantined rows" in _section(
        response.get_data(as_text=True), f"q-{operator_world.rerun}"
    )


# --- every page -------------------------------------------------------------------------


def test_every_operator_page_is_for_operators_and_has_text_for_its_charts(
    client, web_world, operator_world
) -> None:
    for path in PAGES.values():
        assert client.get(path).status_code == 303, path
    assert sign_in(client, web_world.u1).status_code == 303
    for path in PAGES.values():
        assert client.get(path).status_code == 404, path
    token = csrf_of(client.get("/users/u1").get_data(as_text=True))
    assert client.post("/signout", data={"csrf_token": token}).status_code == 303
    _operator(client, web_world)
    for name, path in PAGES.items():
        page = client.get(path).get_data(as_text=True)
        assert 'href="/static/operator.css"' in page, name
        assert "<script" not in page and "<style" not in page and " style=" not in page, name
        assert '<a href="/operator/" aria-current="page">' in page or name != "overview"
        ids = re.findall(r' id="([^"]+)"', page)
        assert len(ids) == len(set(ids)), f"{name}: duplicate ids"
        for svg in re.findall(r"<svg[^>]*>.*?</svg>", page, re.S):
            labels = re.search(r'aria-labelledby="([^"]+)"', svg)
            assert labels is not None and 'role="img"' in svg, name
            for label in labels.group(1).split():
                assert re.search(rf'id="{label}">[^<]+<', svg), f"{name}: {label} is empty"


def test_a_new_deployment_shows_empty_pages_not_errors(migrated_url: str, tmp_path: Path) -> None:
    from recsys.db.engine import make_engine
    from recsys.db.tokens import create_token
    from recsys.settings import Settings
    from webapp import create_app

    engine = make_engine(migrated_url)
    with make_session_factory(engine).begin() as session:
        token = create_token(session, operator=True)[1]
    engine.dispose()
    settings = Settings(data_dir=tmp_path / "state", database_url=migrated_url)
    app = create_app({"TESTING": True}, settings=settings)
    try:
        client = app.test_client()
        assert sign_in(client, token).status_code == 303
        pages = {name: client.get(path) for name, path in PAGES.items()}
        assert {name: r.status_code for name, r in pages.items()} == dict.fromkeys(PAGES, 200)
        overview = pages["overview"].get_data(as_text=True)
        assert "No week is published yet" in overview and "No weekly run yet" in overview
        assert _cells(_section(overview, "now")) == {
            "listeners": "0",
            "tracks": "0",
            "events": "–",
            "playlists": "–",
        }
        assert "<svg" not in overview
        assert "No weekly run yet" in pages["runs"].get_data(as_text=True)
        assert "No model trained yet" in pages["models"].get_data(as_text=True)
        assert "No aggregation has run yet" in pages["quarantine"].get_data(as_text=True)
    finally:
        app.extensions["cratedigger"]["cache"].close()
        app.extensions["cratedigger"]["engine"].dispose()

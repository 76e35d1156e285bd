"""Operator pages: an overview of the service, weekly runs, model versions with their
metrics, the parameter searches, quarantine, listeners."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, render_template, request

from recsys.db import repository, stats
from recsys.db.models import JobRun, ModelVersion, PlaylistExport, TuningRun, WeeklyRun
from webapp import db_session, settings_of
from webapp.auth import operator_page
from webapp.charts import Bar, BarChart, BarGroup, Lane, LineChart, Series, Span, Timeline

log = logging.getLogger(__name__)

bp = Blueprint("operator", __name__)

LISTENERS_PER_PAGE = 50
#: Weeks of the overview's per-week figures.
OVERVIEW_WEEKS = 12
#: A line across weeks says something from this many weeks on; before, bars.
MIN_WEEKS_FOR_LINES = 3
#: Quarantined records shown per kind and reason, and the characters shown of each.
SAMPLES_PER_REASON = 3
SAMPLE_CHARS = 300
#: Parquet rows read at a time, and batches read at most, while looking for the samples.
SAMPLE_BATCH_ROWS = 4096
SAMPLE_BATCHES = 64


def _limit(default: int, most: int) -> int:
    return max(1, min(request.args.get("limit", default=default, type=int) or default, most))


@bp.app_template_filter("figure")
def figure(value: Any) -> str:
    """A count's value as read by a person: 12,345 · 0.1235 · yes/no · text as is."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}" if abs(value) >= 1 else f"{value:.4f}"
    if value is None:
        return "–"
    return str(value)


def _utc(moment: dt.datetime) -> dt.datetime:
    """SQLite gives back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


# --- weekly runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRow:
    """One row of a run's steps table: a step, or all the chunks of a chunked step."""

    step: str
    status: str
    seconds: float | None
    attempts: int
    counts: Mapping[str, Any] | None = None
    error: str | None = None
    #: "12/12 chunks succeeded, 3 attempts" for a chunked step
    detail: str | None = None
    export: PlaylistExport | None = None


def _order(step: str) -> int:
    steps = stats.PIPELINE_STEPS
    return steps.index(step) if step in steps else len(steps)


def _summed_counts(chunks: Sequence[JobRun]) -> dict[str, Any]:
    """The chunks' numeric counts added up (playlists, short, cold_tracks, ...)."""
    total: dict[str, Any] = {}
    for chunk in chunks:
        for key, value in (chunk.counts or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


def _chunks_status(chunks: Sequence[JobRun]) -> str:
    statuses = {chunk.status for chunk in chunks}
    for status in ("failed", "abandoned", "cancelled", "running"):
        if status in statuses:
            return status
    return "succeeded"


def step_rows(run: WeeklyRun, export: PlaylistExport | None) -> list[StepRow]:
    """The run's steps in pipeline order (aggregate, tune, train, gate, generate, publish,
    export; unknown steps last), the generate chunks as one row."""
    chunked: dict[str, list[JobRun]] = {}
    single: list[JobRun] = []
    for job in run.steps:
        if job.chunk >= 0:
            chunked.setdefault(job.step, []).append(job)
        else:
            single.append(job)
    rows: list[tuple[int, int, StepRow]] = []
    for job in single:
        row = StepRow(job.step, job.status, job.seconds, job.attempts, job.counts, job.error)
        rows.append((_order(job.step), job.id, row))
    for name, chunks in chunked.items():
        succeeded = sum(chunk.status == "succeeded" for chunk in chunks)
        attempts = sum(chunk.attempts for chunk in chunks)
        seconds = [chunk.seconds for chunk in chunks if chunk.seconds is not None]
        errors = [f"chunk {c.chunk}: {c.error}" for c in chunks if c.error]
        row = StepRow(
            name,
            _chunks_status(chunks),
            sum(seconds) if seconds else None,
            attempts,
            _summed_counts(chunks),
            "\n".join(errors) or None,
            detail=f"{succeeded}/{len(chunks)} chunks succeeded, "
            f"{attempts} attempt{'' if attempts == 1 else 's'}",
        )
        rows.append((_order(name), min(chunk.id for chunk in chunks), row))
    if export is not None:
        row = StepRow(
            "export", export.status, None, export.attempts, None, export.error, None, export
        )
        rows.append((_order("export"), 0, row))
    return [row for _, _, row in sorted(rows, key=lambda r: (r[0], r[1]))]


@bp.get("/runs")
@operator_page
def runs() -> Any:
    """The latest weekly runs with their steps, counts, timings and errors, and which run
    each week is published with."""
    session = db_session()
    recent = repository.recent_weekly_runs(session, _limit(20, 200))
    exports = repository.exports_of(session, [run.id for run in recent])
    live = stats.live_runs(session, [run.week_start for run in recent])
    steps = {run.id: step_rows(run, exports.get(run.id)) for run in recent}
    return render_template("runs.html", runs=recent, steps=steps, live=live)


# --- model versions ---------------------------------------------------------------------


def holdout_ndcg(model: ModelVersion, name: str) -> float | None:
    """NDCG@K of ``name`` (model or popular) on the gate's holdout, if the gate ran."""
    entry = (model.metrics or {}).get(name)
    if not isinstance(entry, dict):
        return None
    for key, value in entry.items():
        if key.startswith("ndcg@") and isinstance(value, int | float):
            return float(value)
    return None


def _metric(model: ModelVersion | None, name: str, metric: str) -> float | None:
    entry = (model.metrics or {}).get(name) if model is not None else None
    value = entry.get(metric) if isinstance(entry, dict) else None
    return float(value) if isinstance(value, int | float) else None


def metric_bars(model: ModelVersion, previous: ModelVersion | None) -> BarChart:
    """One group per holdout metric of ``model``: the model, most-popular on the same
    holdout, and the previous published model (on its own week's holdout)."""
    entry = (model.metrics or {}).get("model") or {}
    groups = []
    for metric in entry:
        values = [
            ("this week's model", _metric(model, "model", metric), "bar-model"),
            ("most popular", _metric(model, "popular", metric), "bar-pop"),
            ("previous published model", _metric(previous, "model", metric), "bar-previous"),
        ]
        bars = [
            Bar(name, value, css, f"{value:.4f}" if value is not None else "–")
            for name, value, css in values
        ]
        groups.append(BarGroup(metric, bars))
    return BarChart(groups=groups)


@bp.get("/models")
@operator_page
def models() -> Any:
    """Model versions with their gate metrics: the newest evaluated model's metrics as bars
    beside most-popular and the previous model, and the metrics across weeks as lines once
    there are enough weeks."""
    session = db_session()
    versions = repository.recent_model_versions(session, _limit(52, 520))
    by_week: dict[str, ModelVersion] = {}
    for model in sorted(versions, key=lambda m: (m.week_start, m.created_at)):
        if holdout_ndcg(model, "model") is not None:
            by_week[model.week_start.isoformat()] = model  # the week's newest evaluated model
    newest = list(by_week.values())[-1] if by_week else None
    previous = repository.published_model_before(session, newest.week_start) if newest else None
    bars = metric_bars(newest, previous) if newest is not None else None
    chart = None
    if len(by_week) >= MIN_WEEKS_FOR_LINES:
        chart = LineChart(
            labels=list(by_week),
            series=[
                Series("model", [holdout_ndcg(m, "model") for m in by_week.values()], "line-model"),
                Series(
                    "most popular",
                    [holdout_ndcg(m, "popular") for m in by_week.values()],
                    "line-pop",
                ),
            ],
        )
    return render_template(
        "models.html",
        models=versions,
        chart=chart,
        bars=bars,
        newest=newest,
        previous=previous,
        weeks=len(by_week),
        min_weeks=MIN_WEEKS_FOR_LINES,
        ndcg=holdout_ndcg,
    )


# --- parameter searches -----------------------------------------------------------------


def search_chart(tuning: TuningRun) -> LineChart:
    """Each trial's validation NDCG in the order tried (pruned ones at half training), and
    the best complete score so far."""
    complete: list[float | None] = []
    pruned: list[float | None] = []
    reranked: list[float | None] = []
    best: list[float | None] = []
    top: float | None = None
    for trial in tuning.trials:
        # Re-ranking trials score the fully re-ranked lists: another objective, not "best".
        model = trial.stage != "rerank"
        score = trial.score if trial.state == "complete" and model else None
        complete.append(score)
        pruned.append(trial.score if trial.state == "pruned" else None)
        reranked.append(trial.score if not model and trial.state != "failed" else None)
        if score is not None and (top is None or score > top):
            top = score
        best.append(top)
    series = [
        Series("best so far", best, "line-model"),
        Series("trial", complete, "dot-trial", joined=False),
        Series("pruned at half training", pruned, "dot-pruned", joined=False),
    ]
    if any(value is not None for value in reranked):
        series.append(Series("re-ranking knobs (re-ranked lists)", reranked, "dot-rerank", False))
    return LineChart(labels=[str(trial.number + 1) for trial in tuning.trials], series=series)


@bp.get("/tuning")
@operator_page
def tuning() -> Any:
    """The weekly run's own parameter searches: every trial, the chart of the newest
    search, and whether each search's best was adopted."""
    searches = repository.recent_tunings(db_session(), _limit(10, 100))
    chart = search_chart(searches[0]) if searches and searches[0].trials else None
    return render_template("tuning.html", searches=searches, chart=chart)


# --- quarantine -------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantinedRow:
    source_file: str | None
    user_id: str | None
    track_id: str | None
    #: the row as read (JSON of its fields, or the raw line), cut to SAMPLE_CHARS
    record: str
    cut: bool


@dataclass
class QuarantineSample:
    """The first rows of each (kind, reason) of one aggregation's quarantine."""

    folder: Path
    #: False when the rows are gone (a run's aggregation not published is removed)
    found: bool
    rows: dict[tuple[str, str], list[QuarantinedRow]] = field(default_factory=dict)
    error: str | None = None

    def of(self, kind: str, reason: str) -> list[QuarantinedRow]:
        return self.rows.get((kind, reason), [])


def quarantine_folder(data_dir: Path, week_start: dt.date, aggregation: str | None) -> Path | None:
    """Where the aggregation's quarantine Parquet is (``jobs.week.Storage`` lays it out:
    ``quarantine/week=W/<aggregation>/``, the week's folder itself before per-run
    aggregations); None for a name that is not a plain folder name."""
    week = data_dir / "quarantine" / f"week={week_start.isoformat()}"
    if not aggregation:
        return week
    if "/" in aggregation or "\\" in aggregation or aggregation.startswith("."):
        return None
    return week / aggregation


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def sample_quarantine(
    folder: Path, wanted: Iterable[tuple[str, str]], per_reason: int = SAMPLES_PER_REASON
) -> QuarantineSample:
    """Read the first ``per_reason`` rows of each wanted (kind, reason) from the quarantine
    Parquet in ``folder``, batch by batch, stopping once each has its rows (or after
    SAMPLE_BATCHES batches of SAMPLE_BATCH_ROWS: a bad week's quarantine can hold millions
    of rows)."""
    import pyarrow.dataset as ds

    # Only the folder's own files: the week's folder of the layout before per-run
    # aggregations also holds the run-<id> folders of later runs.
    files = sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []
    sample = QuarantineSample(folder=folder, found=bool(files))
    if not files:
        return sample
    missing = set(wanted)
    try:
        dataset = ds.dataset(files, format="parquet")
        columns = ("kind", "reason", "source_file", "user_id", "track_id", "record")
        present = [c for c in columns if c in dataset.schema.names]
        for number, batch in enumerate(
            dataset.to_batches(columns=present, batch_size=SAMPLE_BATCH_ROWS)
        ):
            if not missing or number >= SAMPLE_BATCHES:
                break
            for row in batch.to_pylist():
                key = (str(row.get("kind")), str(row.get("reason")))
                rows = sample.rows.setdefault(key, [])
                if len(rows) >= per_reason:
                    continue
                record = _text(row.get("record")) or ""
                rows.append(
                    QuarantinedRow(
                        source_file=_text(row.get("source_file")),
                        user_id=_text(row.get("user_id")),
                        track_id=_text(row.get("track_id")),
                        record=record[:SAMPLE_CHARS],
                        cut=len(record) > SAMPLE_CHARS,
                    )
                )
                if len(rows) >= per_reason:
                    missing.discard(key)
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        log.warning("could not read the quarantine in %s: %s", folder, exc)
        sample.error = f"{type(exc).__name__}: {exc}"
    return sample


@bp.get("/quarantine")
@operator_page
def quarantine() -> Any:
    """Rows the aggregation set aside, by kind and reason, for recent runs, with the first
    few rows of each reason as they were read."""
    session = db_session()
    counted = repository.quarantine_counts(session, _limit(10, 100))
    data_dir = settings_of(current_app).data_dir
    samples: dict[int, QuarantineSample | None] = {}
    for run in counted:
        weekly_run = repository.get_weekly_run(session, run.weekly_run_id)
        folder = quarantine_folder(
            data_dir, run.week_start, weekly_run.aggregation if weekly_run else None
        )
        wanted = [(kind, reason) for kind, reasons in run.counts.items() for reason in reasons]
        samples[run.weekly_run_id] = (
            sample_quarantine(folder, wanted) if folder is not None and wanted else None
        )
    return render_template(
        "quarantine.html", runs=counted, samples=samples, per_reason=SAMPLES_PER_REASON
    )


# --- listeners --------------------------------------------------------------------------


@bp.get("/listeners")
@operator_page
def listeners() -> Any:
    """Every listener, for support: operators may read any listener's playlists."""
    page = max(1, min(request.args.get("page", default=1, type=int) or 1, 1_000_000))
    session = db_session()
    total = repository.count_listeners(session)
    rows = repository.list_listeners(
        session, limit=LISTENERS_PER_PAGE, offset=(page - 1) * LISTENERS_PER_PAGE
    )
    pages = max(1, -(-total // LISTENERS_PER_PAGE))
    return render_template("listeners.html", listeners=rows, page=page, pages=pages, total=total)


# --- overview ---------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return f"{100 * value:.1f} %" if value is not None else "–"


def _number(value: float | None, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value is not None else "–"


def week_charts(figures: Sequence[stats.WeekFigures], catalog_tracks: int) -> dict[str, BarChart]:
    """One horizontal bar per week (newest on top) for each figure of the overview."""
    newest_first = list(reversed(figures))

    def chart(bars: Sequence[list[Bar]]) -> BarChart:
        labels = [f.week_start.isoformat() for f in newest_first]
        groups = [BarGroup(label, row) for label, row in zip(labels, bars, strict=True)]
        return BarChart(groups=groups, label_width=96)

    coverage = [f.coverage(catalog_tracks) for f in newest_first]
    return {
        "coverage": chart([[Bar("coverage", c, "bar-model", _percent(c))] for c in coverage]),
        "diversity": chart(
            [
                [
                    Bar(
                        "artists",
                        f.artists_per_playlist,
                        "bar-model",
                        _number(f.artists_per_playlist),
                    )
                ]
                for f in newest_first
            ]
        ),
        "thumbs": chart(
            [
                [
                    Bar("thumbs up", float(f.thumbs_up), "bar-up", f"{f.thumbs_up:,} up"),
                    Bar("thumbs down", float(f.thumbs_down), "bar-down", f"{f.thumbs_down:,} down"),
                ]
                for f in newest_first
            ]
        ),
        "cold": chart(
            [
                [Bar("cold start", f.cold_share, "bar-cold", _percent(f.cold_share))]
                for f in newest_first
            ]
        ),
    }


@dataclass(frozen=True)
class TimelineRow:
    step: str
    status: str
    #: seconds after the run started
    start: float
    end: float
    running: bool


def run_timeline(run: WeeklyRun, now: dt.datetime) -> tuple[Timeline, list[TimelineRow]]:
    """The run's steps (each chunk of a chunked step) as bars on a time axis from the run's
    start, in pipeline order; a step still running ends now. And the same as table rows,
    a chunked step as one row from its first chunk's start to its last chunk's end."""
    origin = _utc(run.started_at)

    def seconds(moment: dt.datetime | None) -> float:
        return max(0.0, ((_utc(moment) if moment else now) - origin).total_seconds())

    by_step: dict[str, list[JobRun]] = {}
    for job in run.steps:
        by_step.setdefault(job.step, []).append(job)
    lanes, rows = [], []
    for name in sorted(by_step, key=lambda s: (_order(s), min(j.id for j in by_step[s]))):
        jobs = sorted(by_step[name], key=lambda j: (j.started_at, j.chunk))
        spans = []
        for job in jobs:
            start, end = seconds(job.started_at), seconds(job.finished_at)
            label = name if job.chunk < 0 else f"{name} chunk {job.chunk}"
            title = f"{label}: {job.status}, {end - start:.1f} s from +{start:.1f} s"
            spans.append(Span(start, end, f"span-{job.status}", title))
        lanes.append(Lane(name, spans))
        rows.append(
            TimelineRow(
                step=name if len(jobs) == 1 else f"{name} ({len(jobs)} chunks)",
                status=_chunks_status(jobs),
                start=min(s.start for s in spans),
                end=max(s.end for s in spans),
                running=any(job.finished_at is None for job in jobs),
            )
        )
    return Timeline(lanes=lanes), rows


@bp.get("/")
@operator_page
def overview() -> Any:
    """What an operator lands on: the catalog, the last aggregation's events, the published
    weeks' playlists, coverage, diversity, cold-start share and thumbs, and the last run's
    timeline."""
    session = db_session()
    catalog = stats.catalog_size(session)
    aggregation = stats.last_aggregation(session)
    # A publication's playlists do not change: each worker reads them once.
    known = current_app.extensions.setdefault("cratedigger.operator.publications", {})
    if len(known) > 4 * OVERVIEW_WEEKS:
        known.clear()
    figures = stats.week_figures(session, OVERVIEW_WEEKS, known)
    recent = repository.recent_weekly_runs(session, 1)
    last_run = recent[0] if recent else None
    timeline, timeline_rows = (
        run_timeline(last_run, dt.datetime.now(dt.UTC)) if last_run else (None, [])
    )
    live = stats.live_runs(session, [last_run.week_start]) if last_run else {}
    return render_template(
        "overview.html",
        catalog=catalog,
        aggregation=aggregation,
        figures=figures,
        newest=figures[-1] if figures else None,
        charts=week_charts(figures, catalog.tracks) if figures else None,
        last_run=last_run,
        live=live,
        timeline=timeline,
        timeline_rows=timeline_rows,
        percent=_percent,
        number=_number,
    )

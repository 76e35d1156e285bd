"""Operator pages: weekly runs, model versions with their metrics, the parameter searches,
quarantine, listeners."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from recsys.db import repository
from recsys.db.models import ModelVersion, TuningRun
from webapp import db_session
from webapp.auth import operator_page
from webapp.charts import LineChart, Series

bp = Blueprint("operator", __name__)

LISTENERS_PER_PAGE = 50


def _limit(default: int, most: int) -> int:
    return max(1, min(request.args.get("limit", default=default, type=int) or default, most))


@bp.get("/runs")
@operator_page
def runs() -> Any:
    """The latest weekly runs with their steps, counts, timings and errors."""
    session = db_session()
    recent = repository.recent_weekly_runs(session, _limit(20, 200))
    exports = repository.exports_of(session, [run.id for run in recent])
    return render_template("runs.html", runs=recent, exports=exports)


def holdout_ndcg(model: ModelVersion, name: str) -> float | None:
    """NDCG@K of ``name`` (model or popular) on the gate's holdout, if the gate ran."""
    entry = (model.metrics or {}).get(name)
    if not isinstance(entry, dict):
        return None
    for key, value in entry.items():
        if key.startswith("ndcg@") and isinstance(value, int | float):
            return float(value)
    return None


@bp.get("/models")
@operator_page
def models() -> Any:
    """Model versions with their gate metrics, and a chart of the metrics across weeks."""
    versions = repository.recent_model_versions(db_session(), _limit(52, 520))
    by_week: dict[str, ModelVersion] = {}
    for model in sorted(versions, key=lambda m: (m.week_start, m.created_at)):
        if holdout_ndcg(model, "model") is not None:
            by_week[model.week_start.isoformat()] = model  # the week's newest evaluated model
    labels = list(by_week)
    chart = LineChart(
        labels=labels,
        series=[
            Series("model", [holdout_ndcg(m, "model") for m in by_week.values()], "line-model"),
            Series(
                "most popular", [holdout_ndcg(m, "popular") for m in by_week.values()], "line-pop"
            ),
        ],
    )
    return render_template("models.html", models=versions, chart=chart, ndcg=holdout_ndcg)


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


@bp.get("/quarantine")
@operator_page
def quarantine() -> Any:
    """Rows the aggregation set aside, by kind and reason, for recent runs."""
    return render_template(
        "quarantine.html", runs=repository.quarantine_counts(db_session(), _limit(10, 100))
    )


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

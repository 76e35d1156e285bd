"""The weekly run: aggregate -> tune (every few weeks) -> train -> validation gate ->
generate (in chunks) -> publish.

Each step is a plain function of the settings and a weekly run id that records its progress
in ``job_runs``. Celery tasks (``jobs/tasks.py``) are thin wrappers around these functions,
and :func:`run_in_process` calls the same functions one after another for the embedded
default. Only events strictly before the week's Monday 00:00 UTC are used.

Exactly one visible playlist per listener and week: chunks write their playlists under the
run's id together with the chunk's ``job_runs`` row in one transaction (a retried chunk
replaces its own rows), and :func:`step_publish` switches the week to the run in one
transaction. Until then readers keep seeing the previously published run.

The steps are the only functions of ``jobs/`` below the command line and the Celery tasks
that read the settings: each reads them once into typed objects (:class:`StepContext`,
:class:`jobs.week.Storage`, :class:`jobs.week.PlaylistPolicy`, the ALS parameters) and opens
the run's :class:`jobs.week.Week` once per process. Chunks cut the week's one fixed list of
listeners (:meth:`jobs.week.PlaylistPolicy.plan`): first every listener with a personal
playlist (model rows, in order), then the listeners of the users table without usable
history, who get a popular playlist (sorted by id). The list depends only on the week's
aggregates and settings, so a retried chunk rebuilds exactly its own listeners.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from jobs import lease
from jobs.bigquery import BigQueryConfig
from jobs.db import require_schema, sessions
from jobs.errors import describe_error
from jobs.generation import build_playlists
from jobs.sources import DirectorySource, is_bigquery, open_source, staged
from jobs.training import ResolvedParams, cached_model, train_week
from jobs.week import LEGACY_AGGREGATION, PlaylistPolicy, Storage, Week, load_catalog, open_week
from recsys.contract import week_cutoff
from recsys.db import published, repository
from recsys.db.models import ModelVersion, WeeklyRun, WeekPublication
from recsys.db.repository import RunNotActive
from recsys.gate import GateDecision, GateThresholds, decide
from recsys.settings import Settings
from recsys.tuning import TUNED_FIELDS, Trial, best_trial, chosen_rerank, save_tuned_params

log = logging.getLogger(__name__)

ProgressFactory = Callable[[int, str], Any]
T = TypeVar("T")


class GateRejected(RuntimeError):
    """The validation gate refused to publish the run's model."""


#: Errors worth another try: the database being away for a while (a restart, a failover).
TRANSIENT_DB = (OperationalError, InterfaceError)

__all__ = ["GateRejected", "RunNotActive", "WeekReport"]


@dataclass
class WeekReport:
    """What a weekly run did: counts and seconds per stage."""

    week_start: str
    data_dir: str
    run_id: int = 0
    status: str = "running"
    error: str | None = None
    stages: dict[str, float] = field(default_factory=dict)
    aggregation: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    model_version: str | None = None
    listeners: int = 0
    playlists: int = 0
    playlist_tracks: int = 0
    short_playlists: int = 0
    cold_tracks: int = 0
    popular_playlists: int = 0
    #: Catalog rows loaded into the database by :func:`generate_and_publish` (artists,
    #: tracks, users); the weekly run's aggregate step records its own in ``job_runs``.
    catalog: dict[str, int] = field(default_factory=dict)
    #: The warehouse export after publishing: rows, or the error (the week stays published).
    export: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)


# ----------------------------------------------------------------------------- run steps


def start_run(
    settings: Settings,
    data_dir: str | Path,
    week_start: dt.date,
    trigger: str,
    *,
    owner: str | None = None,
) -> int:
    """Record a new running run for the week held by ``owner`` (default: this process).

    An active run of the week whose owner is gone is marked ``abandoned`` with the reason
    first (:mod:`jobs.lease`); raises ``RunAlreadyActive`` if a live one holds the week.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    require_schema(settings)
    with sessions(settings).begin() as session:
        run = repository.start_weekly_run(
            session,
            week_start,
            trigger,
            str(data_dir),
            owner=owner or lease.this_process(),
            dead_reason=lease.Lease.of(settings).dead_reason,
        )
        run_id = run.id
    log.info("weekly run #%d for the week of %s started (%s)", run_id, week_start, trigger)
    return run_id


@dataclass(frozen=True)
class StepContext:
    """What a step knows of its run, read when the step begins, and the settings it needs
    as typed objects."""

    run_id: int
    week_start: dt.date
    #: The run's source: a data directory or a ``bigquery://`` dataset (jobs.sources).
    data_dir: str
    model_version: str | None
    #: The run's aggregation folder (:meth:`jobs.week.Storage.paths`), once it has one.
    aggregation: str | None
    #: The database's session factory.
    db: Any
    storage: Storage
    policy: PlaylistPolicy

    def week(self) -> Week:
        """The run's week, opened once per process and aggregation."""
        return open_week(self.storage, self.policy, self.week_start, self.aggregation)


class _Outcome:
    """What a step body reports back to :func:`_step`."""

    def __init__(self) -> None:
        self.counts: dict[str, Any] | None = None
        #: The body finished the step itself, inside its own transaction.
        self.finished = False


@contextmanager
def _step(
    settings: Settings, run_id: int, name: str, chunk: int = -1
) -> Iterator[tuple[StepContext, _Outcome]]:
    """Record a step: running, then succeeded (the body may finish it inside its own
    transaction) or failed with the error, in one line. A cancelled, abandoned or ended
    run does nothing. The run's lease is renewed while the step runs."""
    db = sessions(settings)
    with db.begin() as session:
        # Locked: two publish tasks (two chunks that saw every chunk done) must not both
        # start the step; the second waits for the first, then finds the run ended.
        run = repository.get_weekly_run(session, run_id, lock=True)
        if run is None:
            raise ValueError(f"no weekly run #{run_id}")
        if run.status == "cancelling":
            repository.end_weekly_run(
                session, run_id, "cancelled", error=f"cancelled before {name}"
            )
        if run.status not in repository.ACTIVE:
            raise RunNotActive(f"weekly run #{run_id} is {run.status}; skipping {name}")
        repository.renew_lease(session, run_id, run.owner or "")
        repository.begin_step(session, run_id, name, chunk)
        context = StepContext(
            run_id=run_id,
            week_start=run.week_start,
            data_dir=run.data_dir,
            model_version=run.model_version,
            aggregation=run.aggregation,
            db=db,
            storage=Storage.of(settings),
            policy=PlaylistPolicy.of(settings),
        )
        owner = run.owner or ""
    outcome = _Outcome()
    with lease.holding(db, run_id, owner, settings.run_heartbeat_seconds):
        try:
            yield context, outcome
        except RunNotActive:
            raise  # the run ended meanwhile (another task published it): nothing failed here
        except Exception as exc:
            _record_failure(db, run_id, name, chunk, exc)
            raise
    if not outcome.finished:
        with db.begin() as session:
            repository.finish_step(session, run_id, name, chunk=chunk, counts=outcome.counts)


def _record_failure(db: Any, run_id: int, name: str, chunk: int, exc: BaseException) -> None:
    """Mark the step failed; if even that fails (the database is away, the disk is full),
    log it and let the original error through: the run's lease expires by itself."""
    try:
        with db.begin() as session:
            repository.finish_step(
                session, run_id, name, chunk=chunk, status="failed", error=describe_error(exc)
            )
    except Exception as recording:
        log.error(
            "could not record that step %s of weekly run #%d failed (%s): %s",
            name,
            run_id,
            describe_error(exc),
            describe_error(recording),
        )


def aggregate(
    settings: Settings,
    data_dir: str | Path,
    week_start: dt.date,
    aggregation: str | None = None,
    *,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Run the Spark aggregation of the source ``data_dir`` (a data directory, or a
    ``bigquery://`` dataset staged first: :mod:`jobs.sources`) for the week on
    ``settings.spark_master`` into the week's folder ``aggregation`` (replaced whole if it
    exists), with the web app's thumbs given before the cut-off.

    Without ``aggregation`` (the ``aggregate``, ``evaluate`` and ``tune`` commands), into
    a new ``cli-<time>`` folder, which then replaces the week's earlier ``cli-`` ones; the
    folders of weekly runs are left alone. ``progress``: a bar of Spark's tasks, from it.
    """
    import shutil
    from contextlib import nullcontext

    from jobs.aggregate import AggregationParams, check_layout, run_aggregation
    from jobs.feedback import export_feedback
    from jobs.spark import spark_session, task_progress

    check_source(data_dir)  # before Spark starts and anything is written
    source = open_source(data_dir, BigQueryConfig.of(settings))
    manual = aggregation is None
    if aggregation is None:
        aggregation = f"cli-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}"
    storage = Storage.of(settings)
    paths = storage.paths(week_start, aggregation)
    for folder in (paths.root, paths.quarantine):
        if folder.exists():  # a retried step starts again from nothing
            shutil.rmtree(folder)
    paths.root.mkdir(parents=True, exist_ok=True)
    params = AggregationParams.from_settings(settings, week_cutoff(week_start))
    feedback, thumbs = export_feedback(
        sessions(settings), storage.feedback(week_start, aggregation), week_start
    )
    # A BigQuery source is staged here; one left by a killed run of the week goes now.
    staging_root = settings.data_dir / "staging" / f"week={week_start}"
    shutil.rmtree(staging_root, ignore_errors=True)
    staging = staging_root / aggregation
    # The session (and its JVM, ~2 GB) ends with the aggregation unless it was running
    # before (a test's): nothing after this step needs Spark.
    spark = spark_session(
        settings.spark_master,
        shuffle_partitions=settings.spark_shuffle_partitions,
        local_dir=spark_local_dir(settings),
        driver_memory=settings.spark_driver_memory,
    )
    with staged(source, week_cutoff(week_start), staging) as directory, spark as session:
        if not isinstance(source, DirectorySource):
            check_layout(directory)
        shown = (
            task_progress(session, progress(0, "aggregate (Spark tasks)"))
            if progress is not None
            else nullcontext()
        )
        with shown:
            summary = run_aggregation(session, directory, paths, params, extra_thumbs=feedback)
    if manual:
        storage.remove(week_start, {aggregation}, prefix="cli-")
    return asdict(summary) | {
        "quarantined_total": summary.quarantined_total,
        "web_thumbs_exported": thumbs,
        "aggregation": aggregation,
    }


def check_source(data_dir: str | Path) -> None:
    """Refuse, in one line and before Spark starts or anything is written, a data directory
    that cannot hold a week (:func:`jobs.aggregate.check_layout`: no catalog, no events
    folder or no file of plays in it). A ``bigquery://`` source is checked once staged.

    Raises
    ------
    jobs.aggregate.InputError
    """
    if is_bigquery(data_dir):
        return
    from jobs.aggregate import check_layout

    check_layout(Path(data_dir).absolute())


def spark_local_dir(settings: Settings) -> Path:
    """Where the in-process Spark keeps its scratch files: ``DATA_DIR/tmp/spark``."""
    return settings.data_dir / "tmp" / "spark"


def step_aggregate(
    settings: Settings, run_id: int, *, progress: ProgressFactory | None = None
) -> dict[str, Any]:
    """Spark aggregation of the run's data directory into the run's own aggregation
    folder, then the catalog into the database."""
    aggregation = f"run-{run_id}"
    with _step(settings, run_id, "aggregate") as (step, outcome):
        with step.db.begin() as session:
            run = repository.get_weekly_run(session, run_id)
            assert run is not None
            run.aggregation = aggregation
        summary = aggregate(
            settings, step.data_dir, step.week_start, aggregation, progress=progress
        )
        catalog = load_catalog(step.db, step.storage.paths(step.week_start, aggregation))
        outcome.counts = {
            "events_read": summary["events_read"],
            "duplicates_dropped": summary["duplicates_dropped"],
            "quarantined": summary["quarantined"],
            "quarantined_total": summary["quarantined_total"],
            "web_thumbs_exported": summary["web_thumbs_exported"],
            "interactions": summary["interactions"],
            "aggregation": aggregation,
            **{f"catalog_{k}": v for k, v in catalog.items()},
        }
        if summary.get("files_quarantined"):
            outcome.counts["files_quarantined"] = summary["files_quarantined"]
    return summary


def tuning_due(db: Any, settings: Settings, week_start: dt.date) -> str | None:
    """Why the run does not search parameters this week, or None when it does: when no
    search has finished yet, then every ``tune_every_weeks`` weeks after the last one."""
    if settings.tune_every_weeks == 0:
        return "self-tuning is off (CRATEDIGGER_TUNE_EVERY_WEEKS=0)"
    if not settings.use_tuned_params:
        return "tuned parameters are not used (CRATEDIGGER_USE_TUNED_PARAMS=false)"
    if all(ResolvedParams.of(settings).sources[name] == "environment" for name in TUNED_FIELDS):
        return "every tuned ALS parameter is set in the environment"
    with db() as session:
        last = repository.last_tuning(session)
    if last is None:
        return None
    weeks = (week_start - last.week_start).days // 7
    if weeks >= settings.tune_every_weeks:
        return None
    every = settings.tune_every_weeks
    return f"searched {weeks} week(s) ago (week of {last.week_start}); every {every} weeks"


def step_tune(settings: Settings, run_id: int) -> dict[str, Any]:
    """Search ALS parameters on the run's aggregation when it is due (:func:`tuning_due`),
    storing every trial, and adopt the best (``tuned_params.json``, which the train step
    reads) only if it beats the current parameters on the gate's holdout
    (:func:`jobs.quality.self_tune`)."""
    from jobs.quality import self_tune

    with _step(settings, run_id, "tune") as (step, outcome):
        skipped = tuning_due(step.db, settings, step.week_start)
        if skipped is not None:
            log.info("no parameter search this week: %s", skipped)
            outcome.counts = {"searched": False, "reason": skipped}
            return outcome.counts
        with step.db.begin() as session:
            tuning_id = repository.start_tuning(session, run_id, step.week_start).id
        numbers = iter(range(1_000_000))

        def store(trial: Trial) -> None:
            with step.db.begin() as session:
                repository.add_tuning_trial(session, tuning_id, next(numbers), trial.to_dict())

        try:
            found = self_tune(
                step.storage.paths(step.week_start, step.aggregation),
                step.week_start,
                step.policy,
                ResolvedParams.of(settings),
                holdout_days=settings.gate_holdout_days,
                trials=settings.tune_trials,
                budget_s=settings.tune_budget_s,
                on_trial=store,
            )
        except ValueError as exc:  # too little history to search on: train as before
            with step.db.begin() as session:
                repository.finish_tuning(session, tuning_id, "failed", reason=str(exc))
            log.warning("no parameter search this week: %s", exc)
            outcome.counts = {"searched": False, "reason": str(exc)}
            return outcome.counts
        if found.tuned is not None:
            save_tuned_params(step.storage.tuned_params, found.tuned)
        best = best_trial(found.trials)
        knobs = chosen_rerank(found.trials)
        best_params = best.to_dict()["params"]
        if knobs is not None:
            best_params["rerank"] = asdict(knobs)
        with step.db.begin() as session:
            repository.finish_tuning(
                session,
                tuning_id,
                "succeeded",
                split=found.split,
                listeners=found.listeners,
                current_score=found.trials[0].score,
                best_score=best.score,
                holdout_current=found.holdout.get("current"),
                holdout_best=found.holdout.get("best"),
                best_params=best_params,
                adopted=found.tuned is not None,
                reason=found.reason,
            )
        log.info("parameter search of %d trials: %s", len(found.trials), found.reason)
        outcome.counts = {
            "searched": True,
            "trials": len(found.trials),
            "adopted": found.tuned is not None,
            "reason": found.reason,
        }
    return outcome.counts


def step_train(settings: Settings, run_id: int, *, show_progress: bool = False) -> str:
    """Train and record the week's model; returns its version."""
    with _step(settings, run_id, "train") as (step, outcome):
        week = step.week()
        model = train_week(
            week,
            ResolvedParams.of(settings),
            step.db,
            settings.models_dir,
            show_progress=show_progress,
        )
        version = str(model.metadata["version"])
        with step.db.begin() as session:
            run = repository.get_weekly_run(session, run_id)
            assert run is not None
            run.model_version = version
        outcome.counts = {
            "model_version": version,
            "listeners": int(week.data.matrix.shape[0]),
            "interactions": int(week.data.matrix.user_items.nnz),
        }
    return version


def step_gate(settings: Settings, run_id: int) -> dict[str, Any]:
    """Compare the run's model with the previous published model and with popularity on a
    recent holdout (:func:`jobs.quality.holdout_metrics`); a model that falls below either
    is not published (GateRejected)."""
    from jobs.quality import holdout_metrics

    with _step(settings, run_id, "gate") as (step, outcome):
        assert step.model_version is not None, "the gate runs after training"
        metrics = holdout_metrics(
            step.storage.paths(step.week_start, step.aggregation),
            step.week_start,
            step.policy,
            ResolvedParams.of(settings).config,
            settings.gate_holdout_days,
        )
        with step.db.begin() as session:
            if "model" in metrics:
                thresholds = GateThresholds(
                    metric=f"ndcg@{step.policy.rules.length}",
                    min_vs_popular=settings.gate_min_vs_popular,
                    min_vs_previous=settings.gate_min_vs_previous,
                )
                previous = repository.published_model_before(session, step.week_start)
                before = (previous.metrics or {}).get("model") if previous is not None else None
                decision = decide(metrics["model"], metrics["popular"], before, thresholds)
            else:
                decision = GateDecision(True, "no holdout listeners: nothing to compare, published")
            log.info("gate for %s: %s", step.model_version, decision.reason)
            model = session.get(ModelVersion, step.model_version)
            assert model is not None
            model.metrics = metrics
            model.gate_reason = decision.reason
            if not decision.passed:
                model.status = "rejected"
        outcome.counts = {"passed": decision.passed, "reason": decision.reason, **metrics}
        if not decision.passed:
            raise GateRejected(f"model {step.model_version} rejected: {decision.reason}")
    return {"passed": decision.passed, "reason": decision.reason, **metrics}


def run_is_active(settings: Settings, run_id: int) -> bool:
    with sessions(settings)() as session:
        run = repository.get_weekly_run(session, run_id)
        return run is not None and run.status == "running"


def plan_chunks(settings: Settings, run_id: int) -> int:
    """How many generate chunks the run has (listeners / generate_chunk_size, rounded up)."""
    with sessions(settings)() as session:
        run = repository.get_weekly_run(session, run_id)
        if run is None:
            raise ValueError(f"no weekly run #{run_id}")
        week_start, aggregation = run.week_start, run.aggregation
    return Week.of(settings, week_start, aggregation).n_chunks


def chunks_done(settings: Settings, run_id: int) -> int:
    """How many of the run's generate chunks have succeeded (committed rows)."""
    with sessions(settings)() as session:
        return repository.chunks_succeeded(session, run_id)


def step_generate_chunk(settings: Settings, run_id: int, chunk: int) -> dict[str, int]:
    """Write the playlists of one chunk of listeners, idempotently."""
    with _step(settings, run_id, "generate", chunk) as (step, outcome):
        week = step.week()
        with step.db() as session:
            model_row = session.get(ModelVersion, step.model_version)
            assert model_row is not None
            artifact = model_row.artifact_path
        rows, newcomers = week.chunk(chunk)
        built = build_playlists(week.policy, cached_model(artifact), week.data, rows, newcomers)
        counts = {
            "playlists": len(built.playlists),
            "short": built.short,
            "cold_tracks": built.cold_tracks,
            "popular": built.popular,
        }
        with step.db.begin() as session:
            counts["playlist_tracks"] = repository.replace_week_playlists(
                session, step.week_start, model_row.version, built.playlists, run_id
            )
            # Finishing the chunk in the same transaction as its rows: a chunk is either
            # written and marked done, or neither.
            repository.finish_step(session, run_id, "generate", chunk=chunk, counts=counts)
        outcome.finished = True
    return counts


def step_publish(settings: Settings, run_id: int, n_chunks: int) -> dict[str, Any]:
    """Publish the week if every chunk succeeded and the run is still ours, in one
    transaction; then delete the week's other aggregations."""
    with _step(settings, run_id, "publish") as (step, outcome):
        with step.db.begin() as session:
            statuses = repository.chunk_statuses(session, run_id)
            missing = [c for c in range(n_chunks) if statuses.get(c) != "succeeded"]
            if missing:
                raise RuntimeError(f"chunks not finished: {missing[:20]}")
            repository.claim_publication(session, run_id)
            visible = repository.publish_week(session, run_id)
            repository.finish_step(session, run_id, "publish", counts={"playlists": visible})
        outcome.finished = True
    log.info("weekly run #%d published %d playlists for %s", run_id, visible, step.week_start)
    _publish_answers(step.db, published.configure(settings.serving_redis_url))
    _remove_unused_aggregations(step.db, step.storage, step.week_start)
    return {"playlists": visible, "week_start": step.week_start.isoformat()}


def _publish_answers(db: Any, store: published.Store | None) -> None:
    """Write the listeners' newest playlists to the serving store, after the publication
    committed. A failure costs speed only: readers fall back to the database, and the next
    publication writes a new epoch whole (:mod:`recsys.db.published`)."""
    if store is None:
        return
    try:
        written = published.publish_latest(db, store)
    except Exception:
        log.warning("could not write the published answers to Redis", exc_info=True)
        return
    log.info("wrote %d published answers to the serving store", written)


def _remove_unused_aggregations(db: Any, storage: Storage, week_start: dt.date) -> None:
    """Keep the published run's aggregation and those of the week's active runs."""
    with db() as session:
        keep = {
            storage.resolve(week_start, key)
            for key in session.scalars(
                select(WeeklyRun.aggregation)
                .join(WeekPublication, WeekPublication.weekly_run_id == WeeklyRun.id)
                .where(WeekPublication.week_start == week_start)
                .union(
                    select(WeeklyRun.aggregation).where(
                        WeeklyRun.week_start == week_start,
                        WeeklyRun.status.in_(repository.ACTIVE),
                    )
                )
            )
            if key is not None
        }
    if keep:
        storage.remove(week_start, keep)


def fail_run(settings: Settings, run_id: int, error: BaseException | str) -> None:
    """Mark the run failed (or cancelled, if that was asked) with the reason, in one line.

    If the database cannot be written (it is away, the disk is full), this logs both
    errors and returns: the run's lease then expires and the next run takes over.
    """
    reason = error if isinstance(error, str) else describe_error(error)
    try:
        with sessions(settings).begin() as session:
            run = repository.get_weekly_run(session, run_id)
            if run is None or run.status not in repository.ACTIVE:
                return
            status = "cancelled" if run.status == "cancelling" else "failed"
            repository.end_weekly_run(session, run_id, status, error=reason)
    except Exception as recording:
        log.error(
            "weekly run #%d failed (%s) and could not be marked failed: %s",
            run_id,
            reason,
            describe_error(recording),
        )
        return
    log.error("weekly run #%d %s: %s", run_id, status, reason)


# ------------------------------------------------------------------------- in-process run


@contextmanager
def _timed(report: WeekReport, name: str) -> Iterator[None]:
    started = time.perf_counter()
    log.info("stage %s started", name)
    yield
    report.stages[name] = round(time.perf_counter() - started, 3)
    log.info("stage %s finished in %.2f s", name, report.stages[name])


def _retrying(step: Callable[[], T], what: str, attempts: int = 6) -> T:
    """Run a step again after a transient database error (a restart, a failover), with
    exponential backoff, as the Celery tasks are retried; the steps are idempotent."""
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except TRANSIENT_DB as exc:
            if attempt == attempts:
                raise
            delay = min(30.0, 0.5 * 2**attempt)
            log.warning(
                "%s failed (%s); again in %.0f s (attempt %d of %d)",
                what,
                describe_error(exc),
                delay,
                attempt + 1,
                attempts,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def _generate_all_chunks(
    settings: Settings, report: WeekReport, progress: ProgressFactory | None
) -> int:
    """Every generate chunk of the run, one after another, counted into ``report``."""
    n_chunks = _retrying(lambda: plan_chunks(settings, report.run_id), "planning the chunks")
    bar = progress(n_chunks, "generate chunks") if progress else None
    for chunk in range(n_chunks):
        counts = _retrying(
            functools.partial(step_generate_chunk, settings, report.run_id, chunk),
            f"generate chunk {chunk}",
        )
        report.playlist_tracks += counts["playlist_tracks"]
        report.short_playlists += counts["short"]
        report.listeners += counts["playlists"]
        report.cold_tracks += counts["cold_tracks"]
        report.popular_playlists += counts["popular"]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return n_chunks


def _publish(settings: Settings, report: WeekReport, n_chunks: int) -> None:
    report.playlists = _retrying(
        lambda: step_publish(settings, report.run_id, n_chunks)["playlists"], "publishing"
    )
    report.status = "succeeded"
    if settings.bigquery_export_table:
        report.export = export_published(settings, dt.date.fromisoformat(report.week_start))


#: Tries of a warehouse export in one process, and the first pause between them.
EXPORT_TRIES, EXPORT_PAUSE_S = 4, 2.0


def export_published(settings: Settings, week_start: dt.date) -> dict[str, Any]:
    """Export the published week to BigQuery (:func:`jobs.bigquery.export_week`), trying
    again on transient errors; never raises: a failed export leaves the week published,
    recorded as failed in ``playlist_exports`` (``status``, ``/operator/runs``), for
    ``cratedigger bigquery export`` or the next run to retry."""
    from jobs.bigquery import BigQueryError, export_week, is_transient

    config, db = BigQueryConfig.of(settings), sessions(settings)
    attempt = 1
    while True:
        try:
            return {"rows": export_week(config, db, week_start)}
        except BigQueryError as exc:
            if attempt < EXPORT_TRIES and is_transient(exc):
                time.sleep(EXPORT_PAUSE_S * 2 ** (attempt - 1))
                attempt += 1
                continue
            error = str(exc)
        except Exception as exc:  # the database away while recording: told, not raised
            error = describe_error(exc)
        log.error("the week of %s is published but not exported: %s", week_start, error)
        return {"error": error}


def _write_report(runs_dir: Path, report: WeekReport) -> None:
    """``runs/run-<id>.json``, best effort: failing to write it (a read-only data
    directory) must not hide why the run itself failed."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        target = runs_dir / f"run-{report.run_id}.json"
        partial = target.with_suffix(".json.partial")
        partial.write_text(report.to_json())
        partial.replace(target)
    except OSError as exc:
        log.warning("could not write the report of weekly run #%d: %s", report.run_id, exc)


def _failed(settings: Settings, report: WeekReport, exc: BaseException) -> None:
    report.status = "failed"
    report.error = describe_error(exc)
    fail_run(settings, report.run_id, exc)


def run_in_process(
    settings: Settings,
    data_dir: str | Path,
    week_start: dt.date,
    *,
    trigger: str = "cli",
    progress: ProgressFactory | None = None,
) -> WeekReport:
    """All steps of the week in this process (the embedded default): the same step
    functions the Celery tasks run. Raises GateRejected if the gate refuses the model.

    The run is held by this process (:mod:`jobs.lease`): if the process dies, the next
    run of the week finds its owner gone, marks it abandoned and proceeds.
    """
    check_source(data_dir)  # a directory without events fails here, before the run exists
    report = WeekReport(week_start=week_start.isoformat(), data_dir=str(data_dir))
    report.run_id = start_run(settings, data_dir, week_start, trigger)
    try:
        with _timed(report, "aggregate"):
            summary = step_aggregate(settings, report.run_id, progress=progress)
        report.aggregation = summary
        with _timed(report, "tune"):
            report.tuning = _retrying(lambda: step_tune(settings, report.run_id), "tuning")
        with _timed(report, "train"):
            report.model_version = step_train(
                settings, report.run_id, show_progress=progress is not None
            )
        with _timed(report, "gate"):
            report.gate = _retrying(lambda: step_gate(settings, report.run_id), "the gate")
        with _timed(report, "generate"):
            n_chunks = _generate_all_chunks(settings, report, progress)
            log.info(
                "%d cold-start tracks entered playlists; %d popular playlists for listeners "
                "without history",
                report.cold_tracks,
                report.popular_playlists,
            )
        with _timed(report, "publish"):
            _publish(settings, report, n_chunks)
    except BaseException as exc:
        _failed(settings, report, exc)
        raise
    finally:
        _write_report(settings.runs_dir, report)
    return report


def generate_and_publish(
    settings: Settings,
    week_start: dt.date,
    *,
    gate: bool = True,
    progress: ProgressFactory | None = None,
) -> WeekReport:
    """Build and publish the week's playlists with the week's newest trained model and
    newest aggregation, without aggregating or training again: the weekly run's last
    steps over aggregates made elsewhere (``spark-submit jobs/aggregate.py``, README
    "Running on a cluster").

    The aggregation's catalog is loaded into the database first, since the playlists
    reference its tracks and the web app shows them. ``gate``: the model must pass the
    validation gate (:func:`step_gate`) to be published (GateRejected); without it, it is
    published as it is (an operator's explicit choice).
    """
    db = sessions(settings)
    with db() as session:
        model_row = repository.newest_model_version(session, week_start)
    if model_row is None:
        raise ValueError(f"no model trained for the week of {week_start}; run `cratedigger train`")
    storage = Storage.of(settings)
    aggregation = storage.resolve(week_start)
    paths = storage.paths(week_start, aggregation)
    if not paths.summary.exists():
        raise ValueError(
            f"no complete aggregation for the week of {week_start} under "
            f"{paths.root.parent}: aggregate the week first"
        )
    report = WeekReport(week_start=week_start.isoformat(), data_dir="")
    report.run_id = start_run(settings, settings.events_source, week_start, "cli-generate")
    report.model_version = model_row.version
    try:
        with db.begin() as session:
            run = repository.get_weekly_run(session, report.run_id)
            assert run is not None
            run.model_version = model_row.version
            run.aggregation = aggregation
        report.catalog = _retrying(lambda: load_catalog(db, paths), "loading the catalog")
        if gate:
            report.gate = _retrying(lambda: step_gate(settings, report.run_id), "the gate")
        n_chunks = _generate_all_chunks(settings, report, progress)
        _publish(settings, report, n_chunks)
    except BaseException as exc:
        _failed(settings, report, exc)
        raise
    return report


def regenerate_listener(settings: Settings, user_id: str, week_start: dt.date) -> int:
    """Rebuild one listener's playlist of a published week with that week's model and
    the aggregation its run read.

    Returns the number of tracks written. Raises ValueError if the week is not published or
    the listener gets no playlist in it (no history, and no popular playlist either).
    """
    db = sessions(settings)
    with db() as session:
        publication = session.get(WeekPublication, week_start)
        if publication is None:
            raise ValueError(f"the week of {week_start} has not been published")
        run_id, version = publication.weekly_run_id, publication.model_version
        model_row = session.get(ModelVersion, version)
        assert model_row is not None
        artifact = model_row.artifact_path
        published_run = session.get(WeeklyRun, run_id)
        assert published_run is not None
        # Runs from before per-run aggregations read the week's folder itself.
        aggregation = published_run.aggregation or LEGACY_AGGREGATION
    week = Week.of(settings, week_start, aggregation)
    model = cached_model(artifact)
    rows = week.data.matrix.user_index([user_id])
    if rows[0] >= 0 and np.isin(rows[0], week.personal):
        built = build_playlists(week.policy, model, week.data, rows)
    elif np.isin(user_id, week.newcomers):
        built = build_playlists(week.policy, model, week.data, rows[:0], np.asarray([user_id]))
    else:
        raise ValueError(f"listener {user_id!r} has no history before the week of {week_start}")
    with db.begin() as session:
        return repository.replace_week_playlists(
            session, week_start, version, built.playlists, run_id
        )

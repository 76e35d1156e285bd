"""Celery tasks of the weekly run: thin wrappers around the steps in :mod:`jobs.weekly`.

``start_weekly_run`` claims the week (one active run per week) and launches
aggregate -> tune -> train -> gate -> fan-out; the fan-out sends one ``generate_chunk`` task
per chunk of listeners, and the chunk that finds every chunk done in the database sends
``publish``. Completion is counted in the database, not in the result backend (a chord's
counter lives in Redis, which a restart empties, and a lost count leaves the run waiting
for ever). Every task is idempotent, acknowledged late (a killed worker's task is
delivered again) and retried with backoff on transient database and broker errors; a step
that fails for good marks the run failed.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import Task, chain, group, shared_task
from celery.signals import setup_logging
from kombu.exceptions import OperationalError as BrokerError

from jobs import weekly
from jobs.lease import CELERY_OWNER
from recsys.contract import parse_week, week_start_of
from recsys.db.repository import RunAlreadyActive
from recsys.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Errors worth another try: the database or the broker being away for a while.
TRANSIENT = (*weekly.TRANSIENT_DB, BrokerError, ConnectionError, TimeoutError)


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    from recsys.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)


def _settings(task: Task) -> Settings:
    settings = getattr(task.app.conf, "cratedigger_settings", None)
    return settings if isinstance(settings, Settings) else load_settings()


class StepTask(Task):
    """A weekly-run step: retried on transient errors, and when it fails for good (or is
    rejected) the run is marked failed with the reason."""

    autoretry_for = TRANSIENT
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 12
    acks_late = True
    reject_on_worker_lost = True

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        run_id = kwargs.get("run_id", args[0] if args else None)
        if run_id is not None:
            try:
                weekly.fail_run(_settings(self), int(run_id), exc)
            except Exception:  # the database may be the reason we failed
                log.exception("could not mark weekly run #%s failed", run_id)


def week_to_build(now: dt.datetime) -> dt.date:
    """The week whose Monday 00:00 UTC is nearest to ``now``: a schedule on Sunday evening
    or on Monday morning (in any time zone) builds the week that is starting."""
    return week_start_of(now + dt.timedelta(days=3, hours=12))


def _skip(exc: weekly.RunNotActive) -> dict[str, Any]:
    log.warning("%s", exc)
    return {"skipped": str(exc)}


@shared_task(name="cratedigger.start_weekly_run", bind=True)
def start_weekly_run(
    self: Task, week: str | None = None, data_dir: str | None = None, trigger: str = "celery"
) -> dict[str, Any]:
    """Claim the week and launch its workflow. Without ``week``, the week whose Monday
    00:00 UTC is nearest to now (so a Sunday-evening or Monday-morning schedule both build
    the new week). Returns ``{"run_id"}`` or ``{"started": False, "reason"}``."""
    settings = _settings(self)
    week_start = parse_week(week) if week else week_to_build(dt.datetime.now(dt.UTC))
    source = data_dir or settings.events_source
    try:
        # The workers hold the run together: a killed worker's task is delivered again, so
        # the run is abandoned only when no task renewed it for longer than that takes.
        run_id = weekly.start_run(settings, source, week_start, trigger, owner=CELERY_OWNER)
    except RunAlreadyActive as exc:
        log.warning("%s", exc)
        return {"started": False, "reason": str(exc)}
    chain(
        aggregate.si(run_id=run_id),
        tune.si(run_id=run_id),
        train.si(run_id=run_id),
        gate.si(run_id=run_id),
        fan_out.si(run_id=run_id),
    ).apply_async()
    return {"started": True, "run_id": run_id, "week_start": week_start.isoformat()}


@shared_task(name="cratedigger.aggregate", bind=True, base=StepTask)
def aggregate(self: Task, run_id: int) -> dict[str, Any]:
    try:
        summary = weekly.step_aggregate(_settings(self), run_id)
    except weekly.RunNotActive as exc:
        return _skip(exc)
    return {"interactions": summary["interactions"], "quarantined": summary["quarantined_total"]}


@shared_task(name="cratedigger.tune", bind=True, base=StepTask)
def tune(self: Task, run_id: int) -> dict[str, Any]:
    try:
        return weekly.step_tune(_settings(self), run_id)
    except weekly.RunNotActive as exc:
        return _skip(exc)


@shared_task(name="cratedigger.train", bind=True, base=StepTask)
def train(self: Task, run_id: int) -> dict[str, Any]:
    try:
        return {"model_version": weekly.step_train(_settings(self), run_id)}
    except weekly.RunNotActive as exc:
        return _skip(exc)


@shared_task(name="cratedigger.gate", bind=True, base=StepTask)
def gate(self: Task, run_id: int) -> dict[str, Any]:
    try:
        return weekly.step_gate(_settings(self), run_id)
    except weekly.RunNotActive as exc:
        return _skip(exc)


@shared_task(name="cratedigger.fan_out", bind=True, base=StepTask)
def fan_out(self: Task, run_id: int) -> dict[str, Any]:
    """Send one task per chunk of listeners; the last one to finish publishes."""
    settings = _settings(self)
    if not weekly.run_is_active(settings, run_id):
        return {"skipped": f"weekly run #{run_id} is not active"}
    n_chunks = weekly.plan_chunks(settings, run_id)
    if n_chunks == 0:
        publish.si(run_id=run_id, n_chunks=0).apply_async()
    else:
        group(
            generate_chunk.si(run_id=run_id, chunk=c, n_chunks=n_chunks) for c in range(n_chunks)
        ).apply_async()
    return {"chunks": n_chunks}


@shared_task(name="cratedigger.generate_chunk", bind=True, base=StepTask)
def generate_chunk(self: Task, run_id: int, chunk: int, n_chunks: int) -> dict[str, Any]:
    """One chunk's playlists; then, if every chunk is done, send ``publish``. The count
    is read after this chunk's transaction committed, so of chunks ending together at
    least one sees them all (a second ``publish`` finds the run ended and does nothing),
    and a chunk killed between its commit and the send is delivered again and sends it."""
    settings = _settings(self)
    try:
        counts = weekly.step_generate_chunk(settings, run_id, chunk)
    except weekly.RunNotActive as exc:
        return _skip(exc)
    if weekly.chunks_done(settings, run_id) >= n_chunks:
        publish.si(run_id=run_id, n_chunks=n_chunks).apply_async()
    return counts


@shared_task(name="cratedigger.publish", bind=True, base=StepTask)
def publish(self: Task, run_id: int, n_chunks: int) -> dict[str, Any]:
    settings = _settings(self)
    try:
        outcome = weekly.step_publish(settings, run_id, n_chunks)
    except weekly.RunNotActive as exc:
        return _skip(exc)
    if settings.bigquery_export_table:
        export_playlists.si(week=outcome["week_start"]).apply_async()
    return outcome


@shared_task(name="cratedigger.export_playlists", bind=True, acks_late=True, max_retries=12)
def export_playlists(self: Task, week: str) -> dict[str, Any]:
    """Export a published week to BigQuery, retried with backoff on transient errors. Not
    a step of the run: a failure is recorded on the export and never fails the run."""
    from jobs.bigquery import BigQueryConfig, BigQueryError, export_week, is_transient
    from jobs.db import sessions

    settings = _settings(self)
    try:
        config = BigQueryConfig.of(settings)
        return {"rows": export_week(config, sessions(settings), parse_week(week))}
    except BigQueryError as exc:
        if is_transient(exc) and self.request.retries < (self.max_retries or 0):
            raise self.retry(exc=exc, countdown=min(60, 2 ** (self.request.retries + 1))) from exc
        return {"error": str(exc)}

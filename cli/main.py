"""The ``cratedigger`` command: the composition root over ``jobs``, ``webapp`` and ``lab``.

Each command loads the settings (:func:`cli.options.command_settings`), calls one function of
``jobs`` (or ``lab`` for the simulator, ``webapp`` for the server, ``migrations`` for
``db``) and prints what it did. The shared options live in :mod:`cli.options`, ``evaluate``
and ``tune`` in :mod:`cli.quality`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.bigquery import bigquery
from cli.imports import import_group
from cli.options import (
    WEEK_HELP,
    command_settings,
    friendly_errors,
    port_option,
    progress,
    source_option,
    week_option,
)
from cli.quality import evaluate, tune
from recsys.contract import is_valid_id, week_start_of
from recsys.db.tokens import create_token
from recsys.settings import Settings

if TYPE_CHECKING:
    from jobs.lease import Lease
    from recsys.db.models import WeeklyRun

log = logging.getLogger("cratedigger")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cratedigger")
def cli() -> None:
    """Weekly discovery playlists: aggregate events, train ALS, build 50-track playlists.

    Every option of the service comes from CRATEDIGGER_* environment variables
    (see the README); CRATEDIGGER_DATA_DIR and CRATEDIGGER_DATABASE_URL point every
    command at the same state.
    """


@cli.command()
@click.option("--users", type=click.IntRange(1, 10_000_000), default=2000, show_default=True)
@click.option("--tracks", type=click.IntRange(10, 10_000_000), default=20000, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=7, show_default=True)
@click.option(
    "--weeks",
    type=click.IntRange(1, 520),
    default=8,
    show_default=True,
    help="Weeks of listening before --end.",
)
@week_option("Monday the simulated events end before; default: this week's Monday.", "--end")
@click.option(
    "--corrupt-fraction",
    type=click.FloatRange(0, 0.5),
    default=0.001,
    show_default=True,
    help="Share of bad rows injected to exercise quarantine.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="New data directory to write.",
)
@friendly_errors
def simulate(
    users: int,
    tracks: int,
    seed: int,
    weeks: int,
    end: dt.date,
    corrupt_fraction: float,
    out: Path,
) -> None:
    """Write a simulated listening world in the data contract's format."""
    from lab.simulate import simulate_world

    command_settings()
    end_at = dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC)
    summary = simulate_world(
        out,
        users=users,
        tracks=tracks,
        seed=seed,
        end=end_at,
        weeks=weeks,
        corrupt_fraction=corrupt_fraction,
        progress=True,
    )
    click.echo(
        f"wrote {summary.plays:,} plays and {summary.thumbs:,} thumbs of {summary.users:,} "
        f"listeners over {summary.tracks:,} tracks ({summary.new_tracks:,} new, never played) "
        f"to {out}; events end before {end_at.isoformat()}"
    )


@cli.command()
@source_option(
    "Data directory (catalog/ and events/) or bigquery://PROJECT/DATASET.", required=True
)
@week_option()
@friendly_errors
def aggregate(data_dir: str, week: dt.date) -> None:
    """Validate and aggregate events before the week (Spark), quarantine bad rows,
    and load the catalog into the database."""
    from jobs.db import sessions
    from jobs.week import Storage, load_catalog
    from jobs.weekly import aggregate as aggregate_week

    settings = command_settings(database=True)
    summary = aggregate_week(settings, data_dir, week)
    load_catalog(sessions(settings), Storage.of(settings).paths(week, summary["aggregation"]))
    click.echo(
        f"{summary['interactions']:,} interactions of {summary['users']:,} listeners; "
        f"quarantined {summary['quarantined_total']:,} rows: {summary['quarantined']}"
    )


@cli.command("export-feedback")
@week_option()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write thumbs.parquet into: the aggregation's --feedback-thumbs.",
)
@friendly_errors
def export_feedback_command(week: dt.date, out: Path) -> None:
    """Write the thumbs listeners gave in the web app before the week as thumb events
    (OUT/thumbs.parquet), for `spark-submit jobs/aggregate.py --feedback-thumbs OUT`."""
    from jobs.db import sessions
    from jobs.feedback import export_feedback

    settings = command_settings(database=True)
    folder, written = export_feedback(sessions(settings), out, week)
    click.echo(f"{written:,} web thumbs given before {week} written to {folder / 'thumbs.parquet'}")


@cli.command()
@week_option()
@friendly_errors
def train(week: dt.date) -> None:
    """Train the week's model (ALS and its blend partners) and record its version."""
    from jobs.db import sessions
    from jobs.training import ResolvedParams, train_week
    from jobs.week import Week

    settings = command_settings(database=True)
    resolved = ResolvedParams.of(settings)
    model = train_week(
        Week.of(settings, week),
        resolved,
        sessions(settings),
        settings.models_dir,
        show_progress=True,
    )
    click.echo(
        f"model {model.metadata['version']} (blend {model.metadata.get('blend', 'none')}) "
        f"saved under {settings.models_dir}"
    )


@cli.command()
@week_option()
@click.option(
    "--no-gate",
    is_flag=True,
    help="Publish the model without the validation gate (an operator's explicit choice).",
)
@friendly_errors
def generate(week: dt.date, no_gate: bool) -> None:
    """Load the catalog of the week's newest aggregation into the database, gate the week's
    newest model, then build and publish the playlists with it."""
    from jobs.weekly import GateRejected, generate_and_publish

    settings = command_settings(database=True)
    try:
        report = generate_and_publish(settings, week, gate=not no_gate, progress=progress)
    except GateRejected as exc:
        raise click.ClickException(f"{exc}; nothing was published") from None
    catalog = report.catalog
    click.echo(
        f"catalog: {catalog['artists']:,} artists, {catalog['tracks']:,} tracks, "
        f"{catalog['users']:,} listeners"
    )
    if report.gate:
        click.echo(f"gate: {report.gate.get('reason')}")
    click.echo(
        f"run #{report.run_id}: {report.playlists:,} playlists "
        f"({report.playlist_tracks:,} tracks) published for the week of {week}"
    )


@cli.command("run-week")
@source_option(
    "Data directory (catalog/ and events/) or bigquery://PROJECT/DATASET; "
    "default: CRATEDIGGER_SOURCE_DIR."
)
@week_option(WEEK_HELP + " Only events before it are used.")
@click.option(
    "--via-celery",
    is_flag=True,
    help="Send the run to the Celery workers and follow it.",
)
@friendly_errors
def run_week_command(data_dir: str | None, week: dt.date, via_celery: bool) -> None:
    """Aggregate, train, gate, generate and publish the week's playlists.

    In-process by default (the embedded mode); with --via-celery the workers run the same
    steps and this command follows the run until it ends. Running a week again builds it
    anew and publishes it in place of the previous run, without duplicates.
    """
    from jobs.db import SchemaOutdated
    from jobs.errors import describe_error
    from jobs.weekly import GateRejected, run_in_process
    from recsys.db.repository import RunAlreadyActive

    settings = command_settings(database=True)
    source = data_dir or settings.events_source
    if via_celery:
        _run_via_celery(settings, source, week)
        return
    try:
        report = run_in_process(settings, source, week, progress=progress)
    except GateRejected as exc:
        raise click.ClickException(f"{exc}; nothing was published") from None
    except (KeyboardInterrupt, click.ClickException, RunAlreadyActive, SchemaOutdated):
        raise
    except Exception as exc:
        # The run is marked failed with this same line; the traceback is for -v readers.
        log.debug("the weekly run failed", exc_info=True)
        raise click.ClickException(
            f"the weekly run failed: {describe_error(exc)}; nothing was published "
            "(`cratedigger status` shows the run)"
        ) from None
    _print_report(report)


def _run_via_celery(settings: Settings, source: str, week: dt.date) -> None:
    import time

    from jobs.celery import app
    from jobs.db import sessions
    from jobs.tasks import start_weekly_run
    from recsys.db import repository

    result = start_weekly_run.apply_async(
        kwargs={"week": week.isoformat(), "data_dir": source, "trigger": "cli"}
    )
    broker = app.connection_for_write().as_uri()  # the password masked
    click.echo(f"sent to {broker}; waiting for a worker to claim the week")
    outcome = result.get(timeout=600)
    if not outcome.get("started"):
        raise click.ClickException(outcome.get("reason", "the run did not start"))
    run_id = int(outcome["run_id"])
    click.echo(f"run #{run_id} started")
    while True:
        with sessions(settings)() as session:
            run = repository.get_weekly_run(session, run_id)
            assert run is not None
            status, error = run.status, run.error
            done = sum(1 for s in run.steps if s.step == "generate" and s.status == "succeeded")
        if status not in repository.ACTIVE:
            break
        time.sleep(1.0)
    click.echo(f"run #{run_id} {status}; {done} generate chunks done")
    if status != "succeeded":
        raise click.ClickException(f"run #{run_id} {status}: {error}")


def _print_report(report: Any) -> None:
    click.echo(
        f"week {report.week_start}: run #{report.run_id} {report.status}, "
        f"model {report.model_version}"
    )
    if report.tuning:
        searched = f"{report.tuning['trials']} trials, " if report.tuning.get("searched") else ""
        click.echo(f"  tune: {searched}{report.tuning.get('reason')}")
    if report.gate:
        model = report.gate.get("model", {})
        popular = report.gate.get("popular", {})
        click.echo(
            f"  gate: {report.gate.get('reason')} (holdout model {model}, popularity {popular})"
        )
    click.echo(
        f"  {report.playlists:,} playlists, {report.playlist_tracks:,} tracks "
        f"({report.short_playlists:,} shorter than the playlist length)"
    )
    agg = report.aggregation
    click.echo(
        f"  events read {agg['events_read']}, duplicates dropped "
        f"{agg['duplicates_dropped']}, quarantined {agg['quarantined_total']:,}"
    )
    for kind, reasons in sorted(agg["quarantined"].items()):
        click.echo(f"    {kind}: " + ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())))
    if report.export:
        exported = report.export.get("rows")
        click.echo(
            f"  exported {exported:,} playlist rows to BigQuery"
            if exported is not None
            else f"  not exported to BigQuery: {report.export.get('error')}"
        )
    click.echo("  stage seconds: " + ", ".join(f"{k}={v:.1f}" for k, v in report.stages.items()))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@port_option
@click.option(
    "--dev",
    is_flag=True,
    help="Make a throwaway secret key when CRATEDIGGER_SECRET_KEY is unset "
    "(sign-ins end when the server stops).",
)
@friendly_errors
def serve(host: str, port: int, dev: bool) -> None:
    """Serve the pages and the JSON API with Flask's server (gunicorn in production: see
    the README)."""
    from webapp import create_app

    command_settings(database=True)
    create_app(dev=dev).run(host=host, port=port)


@cli.command()
@click.option("--users", type=click.IntRange(10, 100_000), default=500, show_default=True)
@click.option("--tracks", type=click.IntRange(200, 1_000_000), default=5000, show_default=True)
@port_option
@click.option("--no-serve", is_flag=True, help="Stop after the weekly run.")
@friendly_errors
def demo(users: int, tracks: int, port: int, no_serve: bool) -> None:
    """Simulate a small world, run this week, and serve the pages."""
    import shutil

    from jobs.weekly import run_in_process
    from lab.simulate import simulate_world
    from recsys.db import repository
    from recsys.db.engine import make_engine, make_session_factory

    settings = command_settings(database=True)
    week = week_start_of(dt.datetime.now(dt.UTC))
    world = settings.data_dir / "demo-world"
    if world.exists():
        shutil.rmtree(world)
    click.echo(f"simulating {users} listeners and {tracks} tracks into {world}")
    simulate_world(
        world,
        users=users,
        tracks=tracks,
        seed=7,
        end=dt.datetime.combine(week, dt.time(), tzinfo=dt.UTC),
        progress=True,
    )
    # A demo world is small and popularity-heavy; the gate still measures and reports the
    # model against popularity, but the demo publishes so that there is something to see.
    # A demo week shows every step, the parameter search too, in a minute or two.
    demo = {"gate_min_vs_popular": 0.0, "gate_min_vs_previous": 0.0, "tune_trials": 8}
    settings = settings.model_copy(update=demo | {"tune_budget_s": 60.0})
    report = run_in_process(settings, world, week, trigger="demo", progress=progress)
    _print_report(report)
    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
        listeners = repository.list_listeners(session, limit=1)
        first = listeners[0][0].user_id if listeners else ""
        _, listener_token = create_token(session, user_id=first, label="demo")
        _, operator_token = create_token(session, operator=True, label="demo")
    engine.dispose()
    base = f"http://127.0.0.1:{port}"
    click.echo(f"\nstate in {settings.data_dir}, database {settings.database_url}")
    click.echo(f"sign in at        {base}/signin")
    click.echo(f"  as listener {first}: {listener_token}")
    click.echo(f"  as an operator:  {operator_token}")
    click.echo(f"their playlist:   {base}/users/{first}")
    click.echo(f"weekly runs:      {base}/operator/runs")
    click.echo(f"API docs:         {base}/api/v1/docs")
    click.echo(
        f'the JSON:         curl -H "Authorization: Bearer {listener_token}" '
        f"{base}/api/v1/users/{first}/playlists/latest"
    )
    if not no_serve:
        from webapp import create_app

        create_app(dev=True).run(host="127.0.0.1", port=port)


@cli.command()
@click.option("--limit", type=click.IntRange(1, 1000), default=5, show_default=True)
@friendly_errors
def status(limit: int) -> None:
    """Show the latest weekly runs, who holds the running ones, and their steps."""
    from jobs.db import sessions
    from jobs.lease import Lease
    from recsys.db import repository

    settings = command_settings(database=True)
    lease = Lease.of(settings)
    now = dt.datetime.now(dt.UTC)
    with sessions(settings)() as session:
        runs = repository.recent_weekly_runs(session, limit)
        exports = repository.exports_of(session, [run.id for run in runs])
        if not runs:
            click.echo("no weekly runs yet")
        for run in runs:
            click.echo(
                f"run #{run.id}  week {run.week_start}  {run.status:<10} {run.trigger:<12} "
                f"started {run.started_at:%Y-%m-%d %H:%M:%S}  model {run.model_version or '-'}"
            )
            if run.status in repository.ACTIVE:
                click.echo(f"    {_lease_line(run, lease, now)}")
            if run.error:
                click.echo(f"    error: {run.error.splitlines()[-1][:300]}")
            chunks = [s for s in run.steps if s.step == "generate"]
            for step in run.steps:
                if step.step == "generate":
                    continue
                seconds = f"{step.seconds:.1f}s" if step.seconds is not None else "-"
                click.echo(
                    f"    {step.step:<10} {step.status:<10} {seconds:>8}  attempts {step.attempts}"
                )
            if chunks:
                done = sum(1 for c in chunks if c.status == "succeeded")
                retried = sum(c.attempts - 1 for c in chunks)
                click.echo(
                    f"    generate   {done}/{len(chunks)} chunks succeeded, {retried} retries"
                )
            export = exports.get(run.id)
            if export is not None:
                click.echo(f"    {_export_line(export)}")


def _export_line(export: Any) -> str:
    """The warehouse export of a published week, in one line."""
    where = f"to {export.destination}, attempt {export.attempts}"
    if export.status == "succeeded":
        return f"export     exported {export.rows or 0:,} rows {where}"
    if export.status == "failed":
        return f"export     FAILED {where}: {export.error}; retry: cratedigger bigquery export"
    return f"export     {export.status} {where}"


def _lease_line(run: WeeklyRun, lease: Lease, now: dt.datetime) -> str:
    """Who holds a running run and whether it is alive, in one line."""
    beat = run.heartbeat_at or run.started_at
    beat = beat if beat.tzinfo else beat.replace(tzinfo=dt.UTC)
    silent = int((now - beat).total_seconds())
    held = f"held by {run.owner or 'an unknown owner'}, heartbeat {silent} s ago"
    dead = lease.dead_reason(run, now)
    if dead is None:
        return held
    return f"{held}; its owner looks dead ({dead}): the next run of the week takes over"


@cli.command()
@click.argument("run_id", type=click.IntRange(1))
@click.option(
    "--force",
    is_flag=True,
    help="End the run now, even if its owner still works on it: the week is free at once.",
)
@friendly_errors
def cancel(run_id: int, force: bool) -> None:
    """Cancel a running weekly run: its remaining steps do nothing and nothing is published.

    A run whose owner is gone (killed, its machine down) is marked abandoned at once.
    """
    from jobs.db import sessions
    from jobs.lease import Lease
    from recsys.db import repository

    settings = command_settings(database=True)
    with sessions(settings).begin() as session:
        run = repository.request_cancel(
            session, run_id, force=force, dead_reason=Lease.of(settings).dead_reason
        )
        week, status, error = run.week_start, run.status, run.error
    if status == "cancelling":
        click.echo(f"run #{run_id} (week {week}) will stop at its next step")
    else:
        click.echo(f"run #{run_id} (week {week}) is {status}: {error}")


@cli.command()
@click.option("--user", "user_id", required=True, help="Listener id.")
@week_option()
@friendly_errors
def regenerate(user_id: str, week: dt.date) -> None:
    """Rebuild one listener's playlist of a published week with that week's model."""
    from jobs.weekly import regenerate_listener

    settings = command_settings(database=True)
    written = regenerate_listener(settings, user_id, week)
    click.echo(f"{user_id}: {written} tracks for the week of {week}")


@cli.group()
def tokens() -> None:
    """Access tokens for listeners (their pages and API) and operators."""


@tokens.command("create")
@click.option("--user", "user_id", help="Listener the token belongs to.")
@click.option("--operator", is_flag=True, help="An operator token (operator pages and API).")
@click.option("--label", default="", help="What the token is for, shown by `tokens list`.")
@friendly_errors
def tokens_create(user_id: str | None, operator: bool, label: str) -> None:
    """Create a token and print it. It is shown only this once; only its hash is stored."""
    from recsys.db.engine import make_engine, make_session_factory

    if operator == (user_id is not None):
        raise click.UsageError("give exactly one of --user U and --operator")
    if user_id is not None and not is_valid_id(user_id):
        raise click.BadParameter(f"{user_id!r} is not a listener id", param_hint="--user")
    settings = command_settings(database=True)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            row, plain = create_token(session, user_id=user_id, operator=operator, label=label)
            token_id = row.id
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(plain)
    who = "an operator" if operator else f"listener {user_id}"
    click.echo(f"token #{token_id} for {who}; it is not shown again", err=True)


@tokens.command("list")
@friendly_errors
def tokens_list() -> None:
    """List tokens (prefix, owner, dates); never the tokens themselves."""
    from recsys.db.engine import make_engine, make_session_factory
    from recsys.db.tokens import list_tokens

    settings = command_settings(database=True)
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        for row in list_tokens(session):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "live"
            used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
            owner = row.user_id if row.role == "listener" else "(operator)"
            click.echo(
                f"#{row.id:<5} {row.prefix}…  {owner:<24} {state:<18} used {used}  "
                f"{row.label or ''}"
            )
    engine.dispose()


@tokens.command("revoke")
@click.argument("token_id", type=click.IntRange(1))
@friendly_errors
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by its number; its API use and web sign-ins end at once."""
    from recsys.db.engine import make_engine, make_session_factory
    from recsys.db.tokens import revoke_token

    settings = command_settings(database=True)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            revoke_token(session, token_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"token #{token_id} revoked")


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@friendly_errors
def db_upgrade(revision: str) -> None:
    """Migrate the database to REVISION (default: head)."""
    from migrations import upgrade

    upgrade(command_settings().database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
@friendly_errors
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION (e.g. base)."""
    from migrations import downgrade

    downgrade(command_settings().database_url, revision)
    click.echo(f"database at {revision}")


@db.command("current")
@friendly_errors
def db_current() -> None:
    """Print the database's schema revision."""
    from recsys.db.engine import make_engine
    from recsys.db.schema import current_revision

    engine = make_engine(command_settings().database_url)
    click.echo(current_revision(engine) or "empty (no migration applied)")
    engine.dispose()


cli.add_command(evaluate)
cli.add_command(tune)
cli.add_command(import_group)
cli.add_command(bigquery)


def main() -> None:
    cli(prog_name="cratedigger")

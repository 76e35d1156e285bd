"""The ``cratedigger`` command: the composition root over ``jobs``, ``webapp`` and ``lab``.

Each command loads the settings (:func:`cli.options.command_settings`), calls one function of
``jobs`` (or ``lab`` for the simulator, ``webapp`` for the server, ``migrations`` for
``db``) and prints what it did. The shared options live in :mod:`cli.options`, ``evaluate``
and ``tune`` in :mod:`cli.quality`.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.bigquery import bigquery
from cli.imports import import_group
from cli.options import (
    WEEK_HELP,
    command_settings,
    friendly_errors,
    output,
    port_option,
    prepare_database,
    progress,
    source_option,
    week_option,
)
from cli.quality import evaluate, tune
from recsys.contract import is_valid_id, week_start_of
from recsys.db.tokens import create_token
from recsys.settings import ENV_PREFIX, ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from jobs.lease import Lease
    from recsys.db.models import WeeklyRun

log = logging.getLogger("cratedigger")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cratedigger")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log what happens: -v at INFO, -vv at DEBUG (default: warnings and errors only, "
    "or CRATEDIGGER_LOG_LEVEL when it is set).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on standard error (default: when it is a terminal).",
)
def cli(verbose: int, progress: bool | None) -> None:
    """Weekly discovery playlists: aggregate events, train ALS, build 50-track playlists.

    Every option of the service comes from CRATEDIGGER_* environment variables
    (see the README); CRATEDIGGER_DATA_DIR and CRATEDIGGER_DATABASE_URL point every
    command at the same state.
    """
    output.verbosity = verbose
    output.progress = progress


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
        progress=output.show_progress,
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
    from jobs.weekly import check_source

    settings = command_settings()
    check_source(data_dir)  # before Spark starts or the database is touched
    prepare_database(settings)
    summary = aggregate_week(settings, data_dir, week, progress=_progress_factory())
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
        show_progress=output.show_progress,
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
        report = generate_and_publish(
            settings, week, gate=not no_gate, progress=_progress_factory()
        )
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
    from jobs.weekly import GateRejected, check_source, run_in_process
    from recsys.db.repository import RunAlreadyActive

    settings = command_settings()
    source = data_dir or settings.events_source
    check_source(source)  # before Spark starts, a run is recorded or anything is written
    prepare_database(settings)
    if via_celery:
        _run_via_celery(settings, source, week)
        return
    try:
        report = run_in_process(settings, source, week, progress=_progress_factory())
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
    click.echo("\n".join(summary_lines(report, settings)))


def _progress_factory() -> Any:
    """The weekly run's progress factory when bars are shown, else None (no bars)."""
    return progress if output.show_progress else None


def _run_via_celery(settings: Settings, source: str, week: dt.date) -> None:
    import time

    from jobs.celery import app
    from jobs.db import sessions
    from jobs.tasks import start_weekly_run
    from jobs.weekly import plan_chunks
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
    steps_bar = progress(len(RUN_STEPS), f"run #{run_id}", unit="step")
    chunks_bar = None
    while True:
        with sessions(settings)() as session:
            run = repository.get_weekly_run(session, run_id)
            assert run is not None
            status, error = run.status, run.error
            finished = {s.step for s in run.steps if s.status == "succeeded" and s.chunk < 0}
            done = sum(1 for s in run.steps if s.step == "generate" and s.status == "succeeded")
        if status == "succeeded":
            # Only publishing ends a run so; a duplicate publish task may have left that
            # step's row running or failed after the first one published.
            finished |= set(RUN_STEPS)
        current = next((step for step in RUN_STEPS if step not in finished), "")
        steps_bar.set_postfix_str(current, refresh=False)
        steps_bar.update(len(finished & set(RUN_STEPS)) - steps_bar.n)
        if chunks_bar is None and "gate" in finished and output.show_progress:
            chunks_bar = progress(plan_chunks(settings, run_id), "generate chunks")
        if chunks_bar is not None:
            chunks_bar.update(done - chunks_bar.n)
        if status not in repository.ACTIVE:
            break
        time.sleep(1.0)
    for bar in (chunks_bar, steps_bar):
        if bar is not None:
            bar.close()
    click.echo(f"run #{run_id} {status}; {done} generate chunks done")
    if status != "succeeded":
        raise click.ClickException(f"run #{run_id} {status}: {error}")


#: The weekly run's steps but the chunks, in order (a Celery run's progress).
RUN_STEPS = ("aggregate", "tune", "train", "gate", "publish")


def summary_lines(report: Any, settings: Settings) -> list[str]:
    """What a weekly run did, on one screen: the outcome, each stage's counts and seconds,
    and where its state is (data directory, database, report, quarantine)."""
    agg = report.aggregation
    stages = report.stages
    events = ", ".join(f"{n:,} {kind}" for kind, n in sorted(agg["events_read"].items()))
    dropped = sum(agg["duplicates_dropped"].values())

    def took(stage: str) -> str:
        return f"{stages[stage]:6.1f} s" if stage in stages else "     - "

    indent = " " * 20
    lines = [
        f"week {report.week_start}: run #{report.run_id} {report.status}, "
        f"model {report.model_version}",
        f"  aggregate {took('aggregate')}  read {events}; {dropped:,} duplicates dropped, "
        f"{agg['quarantined_total']:,} rows quarantined",
        f"{indent}{agg['interactions']:,} (listener, track) pairs of {agg['users']:,} listeners",
    ]
    for kind, reasons in sorted(agg["quarantined"].items()):
        counts = ", ".join(f"{r}={n}" for r, n in sorted(reasons.items()))
        lines.append(f"{indent}quarantined {kind}: {counts}")
    tuning = report.tuning or {}
    searched = f"{tuning['trials']} trials, " if tuning.get("searched") else ""
    lines.append(f"  tune      {took('tune')}  {searched}{tuning.get('reason', '-')}")
    lines.append(f"  train     {took('train')}  model {report.model_version}")
    if report.gate:
        lines.append(f"  gate      {took('gate')}  {report.gate.get('reason')}")
        for name in ("model", "popular"):
            metrics = report.gate.get(name) or {}
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            if shown:
                lines.append(
                    f"{indent}holdout {'popularity' if name == 'popular' else name}: {shown}"
                )
    lines.append(
        f"  generate  {took('generate')}  {report.listeners:,} listeners: "
        f"{report.playlist_tracks:,} tracks, {report.short_playlists:,} playlists shorter "
        f"than {settings.playlist_length}"
    )
    lines.append(
        f"{indent}{report.cold_tracks:,} cold-start tracks, {report.popular_playlists:,} "
        "popular playlists for listeners without history"
    )
    lines.append(f"  publish   {took('publish')}  {report.playlists:,} playlists visible")
    if report.export:
        exported = report.export.get("rows")
        lines.append(
            f"  exported {exported:,} playlist rows to BigQuery"
            if exported is not None
            else f"  not exported to BigQuery: {report.export.get('error')}"
        )
    lines += [
        f"  total     {sum(stages.values()):6.1f} s",
        f"data dir:  {settings.data_dir}",
        f"database:  {_masked(settings.database_url)}",
        f"report:    {settings.runs_dir / f'run-{report.run_id}.json'}",
        f"quarantine: {settings.quarantine_dir / f'week={report.week_start}'}",
        f"status:    {_status_command(settings)}",
    ]
    return lines


def _status_command(settings: Settings) -> str:
    """``cratedigger status`` as it reads this run's database (the demo's is not the
    environment's: then with the demo's data directory, whose SQLite file it uses)."""
    try:
        environment = load_settings()
    except ConfigError:
        environment = None
    if environment is not None and environment.database_url == settings.database_url:
        return "cratedigger status"
    return f"{ENV_PREFIX}DATA_DIR={shlex.quote(str(settings.data_dir))} cratedigger status"


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


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

    settings = command_settings(database=True)
    app = create_app(settings=settings, dev=dev)
    click.echo(f"serving http://{host}:{port}/ (database {_masked(settings.database_url)})")
    app.run(host=host, port=port)


#: The file that marks a folder as the demo's own state (the demo may empty it).
DEMO_MARK = ".cratedigger-demo"


def demo_settings(state_dir: Path) -> Settings:
    """The demo's settings: the environment's, with its own data directory and SQLite
    database, never the configured ones."""
    from recsys.settings import load_settings

    return load_settings(
        data_dir=state_dir, database_url=f"sqlite:///{state_dir / 'cratedigger.db'}"
    )


def _fresh_demo_state(state_dir: Path) -> None:
    """Empty the demo's folder, refusing one that holds anything but an earlier demo."""
    import shutil

    if state_dir.exists() and any(state_dir.iterdir()):
        if not (state_dir / DEMO_MARK).is_file():
            raise click.ClickException(
                f"{state_dir} is not empty and is not a demo's state: give another --state-dir"
            )
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / DEMO_MARK).write_text("made by `cratedigger demo`; emptied by the next one\n")


@cli.command()
@click.option("--users", type=click.IntRange(10, 100_000), default=500, show_default=True)
@click.option("--tracks", type=click.IntRange(200, 1_000_000), default=5000, show_default=True)
@port_option
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The demo's own data directory and SQLite database, emptied first "
    "[default: $CRATEDIGGER_DATA_DIR/demo].",
)
@click.option("--no-serve", is_flag=True, help="Stop after the weekly run.")
@click.option(
    "--serve-only", is_flag=True, help="Serve the state of the last demo without running again."
)
@friendly_errors
def demo(
    users: int, tracks: int, port: int, state_dir: Path | None, no_serve: bool, serve_only: bool
) -> None:
    """Simulate a small world, run this week, and serve the pages, all in a state
    directory of its own (never CRATEDIGGER_DATA_DIR's aggregates or database)."""
    from jobs.weekly import run_in_process
    from lab.simulate import simulate_world
    from migrations import upgrade

    if no_serve and serve_only:
        raise click.UsageError("give at most one of --no-serve and --serve-only")
    configured = command_settings()
    state_dir = (state_dir or configured.data_dir / "demo").absolute()
    settings = demo_settings(state_dir)
    if serve_only:
        if not (state_dir / DEMO_MARK).is_file():
            raise click.ClickException(f"no demo in {state_dir}: run `cratedigger demo` first")
        upgrade(settings.database_url)
    else:
        _fresh_demo_state(state_dir)
        upgrade(settings.database_url)
        week = week_start_of(dt.datetime.now(dt.UTC))
        world = state_dir / "world"
        click.echo(
            f"demo state in {state_dir}: its own data directory and SQLite database (the "
            f"aggregates, models and database of real runs, in {configured.data_dir} and "
            f"{_masked(configured.database_url)}, are not touched)"
        )
        click.echo(f"simulating {users} listeners and {tracks} tracks into {world}")
        simulate_world(
            world,
            users=users,
            tracks=tracks,
            seed=7,
            end=dt.datetime.combine(week, dt.time(), tzinfo=dt.UTC),
            progress=output.show_progress,
        )
        # A demo world is small and popularity-heavy; the gate still measures and reports
        # the model against popularity, but the demo publishes so that there is something
        # to see. A demo week shows every step, the parameter search too, in a minute or two.
        relaxed = {"gate_min_vs_popular": 0.0, "gate_min_vs_previous": 0.0, "tune_trials": 8}
        settings = settings.model_copy(update=relaxed | {"tune_budget_s": 60.0})
        report = run_in_process(settings, world, week, trigger="demo", progress=_progress_factory())
        click.echo("\n".join(summary_lines(report, settings)))
    click.echo("\n".join(_demo_signin(settings, port)))
    if no_serve:
        click.echo(
            f"\nnext: `cratedigger demo --serve-only --state-dir {state_dir} --port {port}` "
            "serves these pages (a throwaway secret key: sign-ins end when it stops), or "
            f"`CRATEDIGGER_DATA_DIR={state_dir} cratedigger serve --dev --port {port}`"
        )
        return
    from webapp import create_app

    click.echo(f"\nserving {_base_url(port)}/ until Ctrl-C")
    create_app(settings=settings, dev=True).run(host="127.0.0.1", port=port)


def _base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _demo_signin(settings: Settings, port: int) -> list[str]:
    """Tokens for the demo's first listener and an operator, and where to use them."""
    from recsys.db import repository
    from recsys.db.engine import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
        listeners = repository.list_listeners(session, limit=1)
        first = listeners[0][0].user_id if listeners else ""
        _, listener_token = create_token(session, user_id=first, label="demo")
        _, operator_token = create_token(session, operator=True, label="demo")
    engine.dispose()
    base = _base_url(port)
    return [
        "",
        f"sign in at        {base}/signin",
        f"  as listener {first}: {listener_token}",
        f"  as an operator:  {operator_token}",
        f"their playlist:   {base}/users/{first}",
        f"operator pages:   {base}/operator/",
        f"API docs:         {base}/api/v1/docs",
        f'the JSON:         curl -H "Authorization: Bearer {listener_token}" '
        f"{base}/api/v1/users/{first}/playlists/latest",
    ]


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

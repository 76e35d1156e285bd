"""Crash safety of the weekly run: killed at every stage like a power cut, then run again.

Each run is a real ``cratedigger run-week`` process (with Spark's JVM) in a process group
of its own, killed with SIGKILL as a whole: in the middle of Spark (from outside, when the
run's aggregation has started writing) or at a chosen point (``tests/faultrun.py``). The
next plain ``run-week`` must finish without a manual step, mark the killed run abandoned
with the reason, leave exactly one playlist per listener and week, and the published week
must be served throughout (polled through the API while the runs happen).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from migrations import upgrade
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.models import JobRun, Playlist, TuningRun, WeeklyRun, WeekPublication
from recsys.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FIRST_WEEK = dt.date(2026, 11, 2)
LISTENER = "u0000001"
pytestmark = pytest.mark.spark


def _week(n: int) -> dt.date:
    return FIRST_WEEK + dt.timedelta(days=7 * n)


@dataclass
class Deployment:
    """A data directory, a database and the environment of the runs."""

    world: Path
    state: Path
    database_url: str
    env: dict[str, str]
    #: The run-week processes' output, for failure messages.
    outputs: list[str] = field(default_factory=list)
    _sessions: Any = None

    def run(
        self,
        *arguments: str,
        point: str = "none",
        kill_when: Callable[[], bool] | None = None,
        timeout: float = 600,
    ) -> int:
        """``cratedigger ARGS`` as its own process group; returns its exit status
        (``-9`` when killed)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faultrun", point, "--", *arguments],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        if kill_when is not None:
            deadline = time.monotonic() + timeout
            while process.poll() is None and not kill_when():
                assert time.monotonic() < deadline, "the kill condition never came"
                time.sleep(0.05)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=timeout)
        self.outputs.append(f"$ cratedigger {' '.join(arguments)} [{point}]\n{output}")
        return process.returncode

    def run_week(self, week: dt.date, **kwargs: Any) -> int:
        return self.run("run-week", "--data", str(self.world), "--week", week.isoformat(), **kwargs)

    def sessions(self) -> Any:
        if self._sessions is None:
            self._sessions = make_session_factory(make_engine(self.database_url))
        return self._sessions

    def last_run(self) -> WeeklyRun:
        with self.sessions()() as session:
            run = session.scalars(select(WeeklyRun).order_by(WeeklyRun.id.desc())).first()
            assert run is not None
            return run

    def newest_run_jobs(self, step: str, status: str) -> int:
        """How many job rows of the newest run have this step and status."""
        with self.sessions()() as session:
            newest = select(func.max(WeeklyRun.id)).scalar_subquery()
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(JobRun)
                    .where(
                        JobRun.weekly_run_id == newest,
                        JobRun.step == step,
                        JobRun.status == status,
                    )
                )
                or 0
            )

    def step_running(self, step: str) -> bool:
        return self.newest_run_jobs(step, "running") > 0

    def chunks_done(self) -> int:
        return self.newest_run_jobs("generate", "succeeded")

    def spark_writing(self, week: dt.date) -> Callable[[], bool]:
        """A kill condition: a new run of ``week`` has begun to write its aggregation (in
        the middle of Spark)."""
        before = self.last_run().id

        def writing() -> bool:
            run = self.last_run()
            if run.id == before or run.week_start != week or run.aggregation is None:
                return False
            folder = self.state / "quarantine" / f"week={week.isoformat()}" / run.aggregation
            return folder.exists()

        return writing


def _visible_playlists(deployment: Deployment, week: dt.date) -> tuple[int, int]:
    """(playlists of the week's published run, distinct listeners among them)."""
    with deployment.sessions()() as session:
        run_id = session.scalar(
            select(WeekPublication.weekly_run_id).where(WeekPublication.week_start == week)
        )
        count, listeners = session.execute(
            select(func.count(), func.count(func.distinct(Playlist.user_id))).where(
                Playlist.weekly_run_id == run_id
            )
        ).one()
    return int(count), int(listeners)


class Reader(threading.Thread):
    """Reads a published week's playlist through the API until stopped, recording every
    answer: the week must be served, unchanged, whatever the runs do."""

    def __init__(self, settings: Settings, token: str, week: dt.date) -> None:
        super().__init__(daemon=True)
        from webapp import create_app

        self.app = create_app({"TESTING": True}, settings=settings)
        self.path = f"/api/v1/users/{LISTENER}/playlists/{week.isoformat()}"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.answers: list[tuple[int, tuple[str, ...]]] = []
        self.halt = threading.Event()

    def read(self) -> tuple[int, tuple[str, ...]]:
        response = self.app.test_client().get(self.path, headers=self.headers)
        body = response.get_json(silent=True) or {}
        return response.status_code, tuple(t["track_id"] for t in body.get("tracks", []))

    def run(self) -> None:
        while not self.halt.wait(0.25):
            self.answers.append(self.read())

    def stop(self) -> list[tuple[int, tuple[str, ...]]]:
        self.halt.set()
        self.join(timeout=30)
        self.app.extensions["cratedigger"]["cache"].close()
        self.app.extensions["cratedigger"]["engine"].dispose()
        return self.answers


def _environment(state: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRATEDIGGER_")}
    env.update(
        {
            "CRATEDIGGER_DATA_DIR": str(state),
            "CRATEDIGGER_DATABASE_URL": database_url,
            "CRATEDIGGER_SPARK_MASTER": "local[2]",
            "CRATEDIGGER_SPARK_SHUFFLE_PARTITIONS": "2",
            "CRATEDIGGER_ALS_FACTORS": "8",
            "CRATEDIGGER_ALS_ITERATIONS": "3",
            "CRATEDIGGER_GATE_MIN_VS_POPULAR": "0",
            "CRATEDIGGER_GATE_MIN_VS_PREVIOUS": "0",
            "CRATEDIGGER_GENERATE_CHUNK_SIZE": "40",
            "CRATEDIGGER_RUN_HEARTBEAT_SECONDS": "1",
            "CRATEDIGGER_TUNE_EVERY_WEEKS": "0",  # on in the case that kills the search
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _deploy(tmp: Path, database_url: str) -> Deployment:
    from lab.simulate import simulate_world

    world = tmp / "world"
    simulate_world(
        world,
        users=150,
        tracks=1200,
        seed=11,
        end=dt.datetime.combine(_week(6), dt.time(), tzinfo=dt.UTC),
        weeks=10,
        plays_per_user=60,
    )
    state = tmp / "state"
    return Deployment(world, state, database_url, _environment(state, database_url))


def _token(deployment: Deployment) -> str:
    from recsys.db.tokens import create_token

    with deployment.sessions().begin() as session:
        return create_token(session, operator=True, label="fault tests")[1]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment on SQLite whose first week is published."""
    tmp = tmp_path_factory.mktemp("faults")
    deployment = _deploy(tmp, f"sqlite:///{tmp / 'state.db'}")
    assert deployment.run_week(FIRST_WEEK) == 0, deployment.outputs[-1]
    yield deployment


def _settings(deployment: Deployment) -> Settings:
    return Settings(
        data_dir=deployment.state,
        database_url=deployment.database_url,
        api_cache_entries=0,
    )


def _assert_recovered(deployment: Deployment, killed: WeeklyRun, week: dt.date) -> None:
    """The killed run is abandoned with its reason; the week has one playlist a listener."""
    with deployment.sessions()() as session:
        after = session.get(WeeklyRun, killed.id)
        assert after is not None
        assert after.status == "abandoned", deployment.outputs[-1]
        assert after.error is not None and "is gone" in after.error
        newest = session.scalars(select(WeeklyRun).order_by(WeeklyRun.id.desc())).first()
        assert newest is not None and newest.status == "succeeded"
        published = session.get(WeekPublication, week)
        assert published is not None and published.weekly_run_id == newest.id
    count, listeners = _visible_playlists(deployment, week)
    assert count == listeners > 100


def test_a_killed_rerun_of_a_published_week_keeps_it_served_and_readable(
    published: Deployment,
) -> None:
    reader = Reader(_settings(published), _token(published), FIRST_WEEK)
    before = reader.read()
    assert before[0] == 200 and len(before[1]) == 50
    reader.start()
    killed = published.run_week(FIRST_WEEK, kill_when=published.spark_writing(FIRST_WEEK))
    assert killed == -signal.SIGKILL, published.outputs[-1]
    run = published.last_run()
    assert run.status == "running", published.outputs[-1]  # nobody was left to say otherwise

    # The published run's aggregates were not touched: a listener's playlist of the week
    # can still be rebuilt from them.
    assert published.run("regenerate", "--user", LISTENER, "--week", FIRST_WEEK.isoformat()) == 0
    assert published.run("status") == 0
    assert "looks dead" in published.outputs[-1] and "takes over" in published.outputs[-1]
    assert published.run_week(FIRST_WEEK) == 0, published.outputs[-1]
    answers = reader.stop()
    _assert_recovered(published, run, FIRST_WEEK)
    assert answers and all(status == 200 for status, _ in answers)
    # Served throughout: the old playlist until the new run published, then the new one.
    distinct = list(dict.fromkeys(tracks for _, tracks in answers))
    assert distinct[0] == before[1] and len(distinct) <= 3  # old, regenerated, new


STAGES = ("aggregate", "tune", "train", "gate", "generate", "publish")
#: The weekly run's own parameter search, small: on only in the case that kills it.
SEARCHING = {"CRATEDIGGER_TUNE_EVERY_WEEKS": "4", "CRATEDIGGER_TUNE_TRIALS": "3"}


@pytest.mark.parametrize(
    ("stage", "week"), [(stage, _week(n)) for n, stage in enumerate(STAGES, start=1)]
)
def test_a_run_killed_at_each_stage_is_taken_over_by_the_next(
    published: Deployment, stage: str, week: dt.date
) -> None:
    previous = week - dt.timedelta(days=7)
    if _visible_playlists(published, previous)[0] == 0:  # the case before did not publish it
        assert published.run_week(previous) == 0, published.outputs[-1]
    reader = Reader(_settings(published), _token(published), previous)
    before = reader.read()
    assert before[0] == 200 and len(before[1]) == 50
    reader.start()
    if stage == "tune":
        published.env.update(SEARCHING)
    if stage == "aggregate":
        status = published.run_week(week, kill_when=published.spark_writing(week))
    else:
        status = published.run_week(week, point=stage)
    assert status == -signal.SIGKILL, published.outputs[-1]
    killed = published.last_run()
    assert killed.week_start == week and killed.status == "running"
    if stage != "aggregate":
        with published.sessions()() as session:
            steps = {
                s.step: s.status
                for s in session.scalars(select(JobRun).where(JobRun.weekly_run_id == killed.id))
            }
        assert steps[stage] == "running", steps

    assert published.run_week(week) == 0, published.outputs[-1]
    answers = reader.stop()
    _assert_recovered(published, killed, week)
    # The previous week was served, unchanged, all along.
    assert answers and {a for a in answers} == {before}
    if stage == "tune":  # the killed search is marked, its trial kept; the next one finished
        for name in SEARCHING:
            del published.env[name]
        with published.sessions()() as session:
            searches = session.scalars(select(TuningRun).order_by(TuningRun.id)).all()
            assert [(t.weekly_run_id, t.status) for t in searches] == [
                (killed.id, "abandoned"),
                (published.last_run().id, "succeeded"),
            ]
            assert len(searches[0].trials) == 1
            assert len([t for t in searches[1].trials if t.stage in ("start", "search")]) == 4


def _hold(deployment: Deployment, week: dt.date, owner: str, silent_seconds: float) -> int:
    """A running run of ``week`` held by ``owner``, last heard of ``silent_seconds`` ago."""
    from recsys.db import repository

    with deployment.sessions().begin() as session:
        run = repository.start_weekly_run(session, week, "test", "/elsewhere", owner=owner)
        run.heartbeat_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=silent_seconds)
        return run.id


def test_runs_held_elsewhere_are_respected_cancelled_by_force_or_abandoned_when_silent(
    published: Deployment,
) -> None:
    week = _week(5)
    far_away = "process far-away 42 1"
    held = _hold(published, week, far_away, silent_seconds=30)
    # Within its lease a run on another host holds the week: one clear line, no traceback.
    assert published.run_week(week) == 1
    assert f"already being built by run #{held}" in published.outputs[-1]
    assert "Traceback" not in published.outputs[-1]
    assert published.run("cancel", str(held)) == 0
    assert "will stop at its next step" in published.outputs[-1]
    assert published.run_week(week) == 1  # a run asked to stop still holds the week
    assert published.run("cancel", "--force", str(held)) == 0
    assert "cancelled by an operator" in published.outputs[-1]

    silent = _hold(published, week, far_away, silent_seconds=30)
    published.env["CRATEDIGGER_RUN_LEASE_SECONDS"] = "10"
    try:
        assert published.run("status") == 0
        assert "looks dead (no heartbeat from process far-away 42" in published.outputs[-1]
        assert published.run_week(week) == 0, published.outputs[-1]
    finally:
        del published.env["CRATEDIGGER_RUN_LEASE_SECONDS"]
    with published.sessions()() as session:
        after = session.get(WeeklyRun, silent)
        assert after is not None and after.status == "abandoned"
        assert after.error is not None and "no heartbeat from process far-away 42" in after.error
        forced = session.get(WeeklyRun, held)
        assert forced is not None and forced.status == "cancelled"
    count, listeners = _visible_playlists(published, week)
    assert count == listeners > 100


@pytest.mark.postgres
def test_a_postgresql_restart_mid_generation_is_survived(postgres_url: str, tmp_path: Path) -> None:
    upgrade(postgres_url)  # as the deployment's migrate step (only SQLite is made by the CLI)
    deployment = _deploy(tmp_path, postgres_url)
    deployment.env["CRATEDIGGER_GENERATE_CHUNK_SIZE"] = "10"
    assert deployment.run_week(FIRST_WEEK) == 0, deployment.outputs[-1]
    reader = Reader(_settings(deployment), _token(deployment), FIRST_WEEK)
    reader.start()
    admin = make_engine(postgres_url)
    restarts = 0

    def restart_when_generating() -> bool:
        nonlocal restarts
        if deployment.chunks_done() >= 1 + 3 * restarts and restarts < 2:
            with admin.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            restarts += 1
        return False  # never kill the run itself

    status = deployment.run_week(_week(1), kill_when=restart_when_generating)
    answers = reader.stop()
    admin.dispose()
    assert restarts == 2, deployment.outputs[-1]
    assert status == 0, deployment.outputs[-1]
    count, listeners = _visible_playlists(deployment, _week(1))
    assert count == listeners > 100
    assert answers and all(code in (200, 503) for code, _ in answers), answers
    assert sum(code == 200 for code, _ in answers) > 0


def test_the_root_cause_is_what_is_recorded_not_a_later_write_failure(
    spark, tmp_path: Path, settings: Settings
) -> None:
    from jobs.aggregate import InputError
    from jobs.weekly import run_in_process

    data = tmp_path / "data"
    # A layout that passes the check before Spark, and a tracks file that is not Parquet:
    # the aggregation fails reading it.
    (data / "catalog").mkdir(parents=True)
    (data / "catalog" / "artists.csv").write_text("artist_id,name\na1,One\n")
    (data / "catalog" / "tracks.parquet").write_bytes(b"not parquet at all")
    (data / "events" / "plays").mkdir(parents=True)
    (data / "events" / "plays" / "p.csv").write_text(
        "user_id,track_id,played_at,ms_played\nu1,t1,2026-11-01T10:00:00Z,1000\n"
    )
    settings.data_dir.mkdir(parents=True)
    settings.runs_dir.write_text("not a folder")  # and the run report cannot be written
    upgrade(settings.database_url)
    with pytest.raises(InputError, match=r"tracks\.parquet"):
        run_in_process(settings, data, FIRST_WEEK)
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        run = session.scalars(select(WeeklyRun)).one()
        step = session.scalars(select(JobRun).where(JobRun.step == "aggregate")).one()
    engine.dispose()
    assert run.status == "failed" and step.status == "failed"
    for error in (run.error, step.error):
        assert error is not None and "\n" not in error
        assert error.startswith("InputError: ") and "tracks.parquet" in error

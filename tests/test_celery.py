"""The weekly workflow on real Celery workers (separate processes), the real Redis broker
and PostgreSQL: crashes, an unreachable database, the gate, re-runs and concurrent runs."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from migrations import upgrade
from recsys.db.models import JobRun, Playlist, PlaylistTrack, WeeklyRun, WeekPublication
from recsys.settings import Settings
from tests.conftest import unavailable

WEEK = dt.date(2026, 11, 16)
PREVIOUS = WEEK - dt.timedelta(days=7)
REDIS = "redis://127.0.0.1:6379"
#: How long a wait for a worker may last before the test fails: a bound for a hung run, not
#: a speed target (a CI machine under load took over 300 s to finish a run after a crash).
PATIENCE_S = 900


@pytest.fixture(scope="module")
def redis_server() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {REDIS}: {exc}")
    return REDIS


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lab.simulate import simulate_world

    out = tmp_path_factory.mktemp("celery") / "world"
    simulate_world(
        out,
        users=60,
        tracks=800,
        seed=11,
        end=dt.datetime(2026, 11, 16, tzinfo=dt.UTC),
        corrupt_fraction=0.0,
    )
    return out


class Env:
    """The environment a worker and this test share: one data dir, database and broker."""

    def __init__(self, tmp_path: Path, database_url: str, redis_url: str, world: Path) -> None:
        import redis

        self.world = world
        self.database_url = database_url
        broker_db = 8 + os.getpid() % 4  # Redis has databases 0-15
        self.variables = {
            "CRATEDIGGER_DATA_DIR": str(tmp_path / "state"),
            "CRATEDIGGER_DATABASE_URL": database_url,
            "CRATEDIGGER_BROKER_URL": f"{redis_url}/{broker_db}",
            "CRATEDIGGER_RESULT_BACKEND": f"{redis_url}/{broker_db + 4}",
            "CRATEDIGGER_BROKER_VISIBILITY_TIMEOUT": "8",
            "CRATEDIGGER_SPARK_MASTER": "local[1]",
            "CRATEDIGGER_SPARK_SHUFFLE_PARTITIONS": "2",
            "CRATEDIGGER_ALS_FACTORS": "16",
            "CRATEDIGGER_ALS_ITERATIONS": "5",
            "CRATEDIGGER_GENERATE_CHUNK_SIZE": "2",
            "CRATEDIGGER_GATE_MIN_VS_POPULAR": "0",
            "CRATEDIGGER_GATE_MIN_VS_PREVIOUS": "0",
            "CRATEDIGGER_SOURCE_DIR": str(world),
        }
        for database in (broker_db, broker_db + 4):
            redis.Redis.from_url(f"{redis_url}/{database}").flushdb()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs = tmp_path / "workers.log"
        self.engine = create_engine(database_url)

    def settings(self, **overrides: Any) -> Settings:
        values = {k.removeprefix("CRATEDIGGER_").lower(): v for k, v in self.variables.items()}
        return Settings(**{**values, **overrides})

    def start_worker(self, concurrency: int = 1, **overrides: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.variables, **overrides}
        name = f"w{len(self.workers)}-{os.getpid()}@%h"
        log = self.logs.open("ab")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "jobs",
                "worker",
                "--loglevel=INFO",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                "-n",
                name,
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool processes at once, as a crashed machine would."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    def send(self, **kwargs: Any) -> Any:
        from jobs.celery import create_celery

        client = create_celery(self.settings())
        return client.send_task("cratedigger.start_weekly_run", kwargs=kwargs)

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.25)
        log_tail = self.logs.read_text(errors="replace")[-6000:] if self.logs.exists() else ""
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{log_tail}")

    def run(self, run_id: int) -> WeeklyRun:
        from sqlalchemy.orm import Session

        with Session(self.engine) as session:
            run = session.get(WeeklyRun, run_id)
            assert run is not None
            session.expunge(run)
            return run

    def finished(self, run_id: int) -> WeeklyRun | None:
        run = self.run(run_id)
        return run if run.status not in ("running", "cancelling") else None

    def scalar(self, statement: Any) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(statement).scalar()

    def visible_playlists(self, week: dt.date) -> dict[str, list[str]]:
        """user -> track ids of the week's published playlists (what readers see)."""
        statement = (
            select(Playlist.user_id, PlaylistTrack.track_id)
            .join(PlaylistTrack, PlaylistTrack.playlist_id == Playlist.id)
            .join(
                WeekPublication,
                (WeekPublication.week_start == Playlist.week_start)
                & (WeekPublication.weekly_run_id == Playlist.weekly_run_id),
            )
            .where(Playlist.week_start == week)
            .order_by(Playlist.user_id, PlaylistTrack.position)
        )
        result: dict[str, list[str]] = {}
        with self.engine.connect() as connection:
            for user_id, track_id in connection.execute(statement):
                result.setdefault(user_id, []).append(track_id)
        return result

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
        self.engine.dispose()


@pytest.fixture
def env(tmp_path: Path, postgres_url: str, redis_server: str, world: Path) -> Iterator[Env]:
    upgrade(postgres_url)  # as the deployment's migrate step: the workers never migrate
    environment = Env(tmp_path, postgres_url, redis_server, world)
    yield environment
    environment.close()


def _listeners_with_history(env: Env) -> int:
    from jobs.week import Week

    return len(Week.of(env.settings(), WEEK).personal)


def _start(env: Env, week: dt.date = WEEK) -> int:
    outcome = env.send(week=week.isoformat(), data_dir=str(env.world)).get(timeout=120)
    assert outcome["started"], outcome
    return int(outcome["run_id"])


def _chunks_done(env: Env, run_id: int) -> int:
    return int(
        env.scalar(
            select(func.count())
            .select_from(JobRun)
            .where(
                JobRun.weekly_run_id == run_id,
                JobRun.step == "generate",
                JobRun.status == "succeeded",
            )
        )
    )


def test_the_workflow_twice_gives_identical_playlists_without_duplicates(env: Env) -> None:
    env.start_worker()
    first = _start(env)
    assert (
        env.wait_for(lambda: env.finished(first), PATIENCE_S, "the first run").status == "succeeded"
    )
    playlists = env.visible_playlists(WEEK)
    assert len(playlists) == _listeners_with_history(env) > 0
    assert all(len(tracks) == 50 for tracks in playlists.values())

    second = _start(env)
    run = env.wait_for(lambda: env.finished(second), PATIENCE_S, "the second run")
    assert run.status == "succeeded", run.error
    assert env.visible_playlists(WEEK) == playlists
    # Only the published run's rows remain: exactly one playlist per listener and week.
    assert env.scalar(select(func.count()).select_from(Playlist)) == len(playlists)
    assert env.scalar(select(func.count()).select_from(PlaylistTrack)) == 50 * len(playlists)


def test_two_runs_started_together_one_runs_the_other_says_why(env: Env) -> None:
    env.start_worker(concurrency=2)
    results = [env.send(week=WEEK.isoformat(), data_dir=str(env.world)) for _ in range(2)]
    outcomes = [r.get(timeout=120) for r in results]
    started = [o for o in outcomes if o["started"]]
    refused = [o for o in outcomes if not o["started"]]
    assert len(started) == 1 and len(refused) == 1, outcomes
    run_id = started[0]["run_id"]
    assert (
        f"run #{run_id}" in refused[0]["reason"] and "already being built" in refused[0]["reason"]
    )
    assert env.wait_for(lambda: env.finished(run_id), PATIENCE_S, "the run").status == "succeeded"
    assert env.scalar(select(func.count()).select_from(WeeklyRun)) == 1
    assert len(env.visible_playlists(WEEK)) == _listeners_with_history(env)


def test_a_worker_killed_during_the_fan_out_is_survived(env: Env) -> None:
    worker = env.start_worker()
    run_id = _start(env)
    env.wait_for(lambda: _chunks_done(env, run_id) >= 3, PATIENCE_S, "the fan-out to be under way")
    env.kill(worker)
    total = _listeners_with_history(env)
    n_chunks = -(-total // 2)
    assert _chunks_done(env, run_id) < n_chunks, "the fan-out finished before the kill"
    assert env.run(run_id).status == "running"
    assert env.visible_playlists(WEEK) == {}  # nothing published half-way

    env.start_worker()
    run = env.wait_for(
        lambda: env.finished(run_id), PATIENCE_S, "the run to complete after the crash"
    )
    assert run.status == "succeeded", run.error
    playlists = env.visible_playlists(WEEK)
    assert len(playlists) == total
    assert env.scalar(select(func.count()).select_from(Playlist)) == total
    assert all(len(tracks) == len(set(tracks)) == 50 for tracks in playlists.values())


def test_the_result_backend_emptied_during_the_fan_out_does_not_stall_the_run(env: Env) -> None:
    """A Redis restart empties the result backend (Redis here keeps nothing on disk): the
    week is still published, since chunks are counted in the database."""
    import redis

    env.start_worker()
    run_id = _start(env)
    env.wait_for(lambda: _chunks_done(env, run_id) >= 2, PATIENCE_S, "the fan-out to be under way")
    redis.Redis.from_url(env.variables["CRATEDIGGER_RESULT_BACKEND"]).flushdb()
    run = env.wait_for(lambda: env.finished(run_id), PATIENCE_S, "the run to complete")
    assert run.status == "succeeded", run.error
    assert len(env.visible_playlists(WEEK)) == _listeners_with_history(env)


def test_the_database_refusing_connections_during_generation_is_retried(env: Env) -> None:
    env.start_worker()
    run_id = _start(env)
    env.wait_for(lambda: _chunks_done(env, run_id) >= 2, PATIENCE_S, "the fan-out to be under way")
    name = make_url(env.database_url).database
    admin = create_engine(
        make_url(env.database_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    env.engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        time.sleep(6)
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    admin.dispose()
    run = env.wait_for(
        lambda: env.finished(run_id), PATIENCE_S, "the run to complete after the outage"
    )
    assert run.status == "succeeded", run.error
    assert len(env.visible_playlists(WEEK)) == _listeners_with_history(env)
    retried = env.scalar(select(func.max(JobRun.attempts)).where(JobRun.weekly_run_id == run_id))
    logs = env.logs.read_text(errors="replace")
    assert retried > 1 or "Retry in" in logs, "no task was retried during the outage"


def test_a_model_failing_the_gate_publishes_nothing(env: Env) -> None:
    from jobs.weekly import run_in_process

    run_in_process(env.settings(), env.world, PREVIOUS, trigger="test")
    last_week = env.visible_playlists(PREVIOUS)
    assert last_week

    env.start_worker(CRATEDIGGER_GATE_MIN_VS_POPULAR="100")
    run_id = _start(env)
    run = env.wait_for(lambda: env.finished(run_id), PATIENCE_S, "the gated run")
    assert run.status == "failed"
    assert "rejected" in (run.error or "") and "popularity" in (run.error or "")
    assert env.visible_playlists(WEEK) == {}
    assert env.visible_playlists(PREVIOUS) == last_week
    assert (
        env.scalar(select(func.count()).select_from(Playlist).where(Playlist.week_start == WEEK))
        == 0
    )
    from recsys.db.models import ModelVersion

    assert (
        env.scalar(select(ModelVersion.status).where(ModelVersion.version == run.model_version))
        == "rejected"
    )

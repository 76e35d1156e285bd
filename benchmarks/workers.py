"""Generation throughput with two Celery worker processes against one, same data, same run.

    python benchmarks/workers.py [--users 20000] [--tracks 20000] [--chunk 500]

Simulates a world, runs the week in-process once (aggregate, train, gate, publish) against a
fresh PostgreSQL database, then times the generate fan-out of a new run of the same week on
real workers (Redis broker) with --concurrency=1 and with --concurrency=2, each twice,
alternating. Prints listeners per second of each and the ratio (target >= 1.7 on 2 cores).
BLAS runs on one thread per process (OPENBLAS_NUM_THREADS=1), as in the Docker image.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

WEEK = dt.date(2026, 11, 16)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--tracks", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cratedigger-bench-"))
    name = f"cratedigger_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
    variables = {
        "CRATEDIGGER_DATA_DIR": str(work / "state"),
        "CRATEDIGGER_DATABASE_URL": database_url,
        "CRATEDIGGER_BROKER_URL": f"{args.redis}/7",
        "CRATEDIGGER_RESULT_BACKEND": f"{args.redis}/6",
        "CRATEDIGGER_GENERATE_CHUNK_SIZE": str(args.chunk),
        "CRATEDIGGER_TUNE_EVERY_WEEKS": "0",  # only the generate fan-out is timed
        "CRATEDIGGER_SPARK_MASTER": "local[2]",
    }
    os.environ.update(variables)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import redis

    for db in (6, 7):
        redis.Redis.from_url(f"{args.redis}/{db}").flushdb()

    from jobs import weekly
    from jobs.celery import create_celery
    from jobs.db import sessions
    from lab.simulate import simulate_world
    from migrations import upgrade
    from recsys.db.models import JobRun
    from recsys.settings import load_settings

    settings = load_settings()
    upgrade(database_url)  # the weekly run only checks the schema
    world = work / "world"
    simulate_world(
        world,
        users=args.users,
        tracks=args.tracks,
        seed=7,
        end=dt.datetime.combine(WEEK, dt.time(), tzinfo=dt.UTC),
    )
    report = weekly.run_in_process(settings, world, WEEK, trigger="benchmark")
    print(
        f"world: {report.listeners} listeners, {args.tracks} tracks, model {report.model_version}"
    )
    client = create_celery(settings)
    engine = create_engine(database_url)

    def fan_out(concurrency: int) -> float:
        run_id = weekly.start_run(settings, world, WEEK, "benchmark")
        with sessions(settings).begin() as session:
            from recsys.db import repository

            repository.get_weekly_run(session, run_id).model_version = report.model_version
        n_chunks = weekly.plan_chunks(settings, run_id)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "jobs",
                "worker",
                f"--concurrency={concurrency}",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"bench{concurrency}@%h",
            ],
            env=os.environ.copy(),
            start_new_session=True,
        )
        # Warm each pool process (imports, model and data loaded once per process) on a
        # first round of the chunks, then time a second, identical round.
        for round_ in ("warm", "timed"):
            started = time.perf_counter()
            for chunk in range(n_chunks):
                client.send_task(
                    "cratedigger.generate_chunk", kwargs={"run_id": run_id, "chunk": chunk}
                )
            target = n_chunks * (2 if round_ == "timed" else 1)
            while True:
                with engine.connect() as connection:
                    done = connection.execute(
                        select(func.count())
                        .select_from(JobRun)
                        .where(
                            JobRun.weekly_run_id == run_id,
                            JobRun.step == "generate",
                            JobRun.status == "succeeded",
                        )
                    ).scalar()
                    attempts = connection.execute(
                        select(func.coalesce(func.sum(JobRun.attempts), 0)).where(
                            JobRun.weekly_run_id == run_id,
                            JobRun.step == "generate",
                            JobRun.status == "succeeded",
                        )
                    ).scalar()
                if done == n_chunks and attempts >= target:
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - started
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait()
        weekly.fail_run(settings, run_id, "benchmark run, not published")
        return seconds

    listeners = report.listeners
    timings: dict[int, list[float]] = {1: [], 2: []}
    for concurrency in (1, 2, 1, 2):
        timings[concurrency].append(fan_out(concurrency))
    one, two = min(timings[1]), min(timings[2])
    print(f"one worker process:  {listeners / one:8.0f} listeners/s ({one:.2f} s, best of 2)")
    print(f"two worker processes: {listeners / two:8.0f} listeners/s ({two:.2f} s, best of 2)")
    print(f"throughput ratio two/one: {one / two:.2f} (target >= 1.7)")
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    return 0


if __name__ == "__main__":
    sys.exit(main())

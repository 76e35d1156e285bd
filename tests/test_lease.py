"""Leases of weekly runs (jobs/lease.py, the repository's takeover) and one-line errors."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.errors import describe_error
from jobs.lease import CELERY_OWNER, Lease, holding, this_process
from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.models import JobRun, WeeklyRun
from recsys.settings import Settings

WEEK = dt.date(2026, 11, 16)
LEASE = Lease(process_seconds=60, celery_seconds=3600)
HOST = socket.gethostname()


def _run(owner: str | None, silent_seconds: float = 0) -> WeeklyRun:
    now = dt.datetime.now(dt.UTC)
    return WeeklyRun(
        id=1,
        week_start=WEEK,
        status="running",
        trigger="test",
        data_dir="/d",
        owner=owner,
        started_at=now - dt.timedelta(seconds=silent_seconds),
        heartbeat_at=now - dt.timedelta(seconds=silent_seconds),
    )


def _gone_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_live_process_on_this_host_holds_its_run_whatever_its_heartbeat() -> None:
    assert LEASE.dead_reason(_run(this_process(), silent_seconds=10_000)) is None


def test_a_gone_process_on_this_host_is_dead_at_once() -> None:
    pid = _gone_pid()
    reason = LEASE.dead_reason(_run(f"process {HOST} {pid} 123", silent_seconds=0))
    assert reason == f"its process {pid} on {HOST} is gone"


def test_a_reused_pid_is_not_the_owner() -> None:
    # This process's pid, but another start time: the owner died and its pid was reused.
    reason = LEASE.dead_reason(_run(f"process {HOST} {os.getpid()} 1", silent_seconds=0))
    assert reason is not None and "reused" in reason


@pytest.mark.parametrize(
    ("owner", "silent", "dead"),
    [
        ("process elsewhere 42 1", 59, False),
        ("process elsewhere 42 1", 61, True),
        (CELERY_OWNER, 3599, False),
        (CELERY_OWNER, 3601, True),
        (None, 61, True),  # a run started by code that names no owner
    ],
)
def test_elsewhere_only_the_heartbeat_tells(owner: str | None, silent: float, dead: bool) -> None:
    reason = LEASE.dead_reason(_run(owner, silent_seconds=silent))
    assert (reason is not None) == dead
    if dead:
        assert reason is not None and reason.startswith("no heartbeat from") and "lease" in reason


def test_a_celery_run_outlives_a_redelivery() -> None:
    settings = Settings(broker_visibility_timeout=3600, task_time_limit=600, run_lease_seconds=60)
    assert Lease.of(settings) == Lease(process_seconds=60, celery_seconds=4200)


@pytest.fixture
def sessions(migrated_url: str):
    engine = make_engine(migrated_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_the_next_run_abandons_a_dead_owners_run_and_its_steps(sessions) -> None:
    dead = f"process {HOST} {_gone_pid()} 1"
    with sessions.begin() as session:
        old = repository.start_weekly_run(session, WEEK, "cli", "/d", owner=dead)
        repository.begin_step(session, old.id, "train")
        old_id = old.id
    with sessions.begin() as session:
        new = repository.start_weekly_run(
            session, WEEK, "cli", "/d", owner=this_process(), dead_reason=LEASE.dead_reason
        )
        new_id = new.id
    with sessions() as session:
        before = session.get(WeeklyRun, old_id)
        assert before is not None and before.status == "abandoned"
        assert before.error is not None and before.error.startswith("abandoned: its process")
        step = session.scalars(select(JobRun).where(JobRun.weekly_run_id == old_id)).one()
        assert step.status == "abandoned"
        after = session.get(WeeklyRun, new_id)
        assert after is not None and after.status == "running" and after.owner == this_process()


def test_a_live_owners_run_is_not_taken_over(sessions) -> None:
    with sessions.begin() as session:
        held = repository.start_weekly_run(session, WEEK, "cli", "/d", owner=this_process()).id
    refused = pytest.raises(repository.RunAlreadyActive, match=f"run #{held}.*held by process")
    with refused, sessions.begin() as session:
        repository.start_weekly_run(
            session, WEEK, "cli", "/d", owner="x", dead_reason=LEASE.dead_reason
        )


def test_an_abandoned_run_can_neither_renew_nor_publish(sessions) -> None:
    with sessions.begin() as session:
        run_id = repository.start_weekly_run(session, WEEK, "cli", "/d", owner="me").id
    with sessions.begin() as session:
        assert repository.renew_lease(session, run_id, "me")
        assert not repository.renew_lease(session, run_id, "someone else")
        assert repository.abandon_run(session, run_id, "abandoned: test")
        assert not repository.abandon_run(session, run_id, "abandoned: again")
    with sessions.begin() as session:
        assert not repository.renew_lease(session, run_id, "me")
        with pytest.raises(repository.RunNotActive, match="is abandoned; not publishing"):
            repository.claim_publication(session, run_id)


def test_cancel_asks_a_live_run_ends_a_forced_or_dead_one(sessions) -> None:
    with sessions.begin() as session:
        live = repository.start_weekly_run(session, WEEK, "cli", "/d", owner=this_process()).id
        asked = repository.request_cancel(session, live, dead_reason=LEASE.dead_reason)
        assert asked.status == "cancelling"
        forced = repository.request_cancel(session, live, force=True)
        assert forced.status == "cancelled" and "--force" in (forced.error or "")
    with sessions.begin() as session:
        dead = f"process {HOST} {_gone_pid()} 1"
        gone = repository.start_weekly_run(session, WEEK, "cli", "/d", owner=dead).id
        ended = repository.request_cancel(session, gone, dead_reason=LEASE.dead_reason)
        assert ended.status == "abandoned" and "is gone" in (ended.error or "")
        with pytest.raises(ValueError, match="only a running run can be cancelled"):
            repository.request_cancel(session, gone, force=True)


def test_holding_renews_the_heartbeat_and_notices_a_lost_run(
    migrated_url: str, tmp_path: Path
) -> None:
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        run = repository.start_weekly_run(session, WEEK, "cli", "/d", owner="me")
        run.heartbeat_at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        run_id = run.id
    with holding(sessions, run_id, "me", every=1) as lost:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sessions() as session:
                beat = session.scalar(select(WeeklyRun.heartbeat_at).where(WeeklyRun.id == run_id))
            assert beat is not None
            beat = beat if beat.tzinfo else beat.replace(tzinfo=dt.UTC)
            if dt.datetime.now(dt.UTC) - beat < dt.timedelta(minutes=1):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the heartbeat was never renewed")
        assert not lost.is_set()
        with sessions.begin() as session:
            repository.abandon_run(session, run_id, "abandoned: test")
        assert lost.wait(20), "a lost lease went unnoticed"
    engine.dispose()


JAVA_FAILURE = """An error occurred while calling o67.parquet.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 3.0 failed
\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2898)
\tat scala.collection.immutable.List.foreach(List.scala:334)
Caused by: org.apache.spark.SparkException: Exception thrown in awaitResult
\tat org.apache.spark.util.SparkThreadUtils$.awaitResult(SparkThreadUtils.scala:56)
Caused by: java.io.EOFException: Unexpected end of input stream
\tat org.apache.hadoop.io.compress.DecompressorStream.decompress(DecompressorStream.java:165)
\t... 25 more
"""


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (RuntimeError(JAVA_FAILURE), "EOFException: Unexpected end of input stream"),
        (
            RuntimeError("[PATH_NOT_FOUND] Path does not exist: /x.\n\nJVM stacktrace:\nat a.b(C)"),
            "RuntimeError: [PATH_NOT_FOUND] Path does not exist: /x.",
        ),
        (ValueError("events/plays/a.csv: no header line\nmore"), "ValueError: events/plays/a.csv"),
        (KeyError("user_id"), "KeyError: 'user_id'"),
        (OSError(), "OSError"),
    ],
)
def test_errors_are_told_in_one_line_with_the_root_cause(error: Exception, line: str) -> None:
    told = describe_error(error)
    assert "\n" not in told and "\tat " not in told
    assert told.startswith(line)


def test_a_huge_error_is_cut() -> None:
    told = describe_error(ValueError("x" * 100_000))
    assert len(told) == 500 and told.endswith("…")

"""Leases of weekly runs: a run is held by an owner that proves it is alive.

A run killed at any moment (SIGKILL, power loss, a worker that never comes back) must not
block its week. So every run names its owner and renews ``heartbeat_at`` while it works:

- an in-process run is owned by its process (``process <host> <pid> <start time>``); on
  the same host, a run whose process is gone (or whose pid now belongs to another process)
  is dead at once, and on another host when its heartbeat is older than
  ``run_lease_seconds``;
- a Celery run is owned by the workers (``celery``): a killed worker's task is delivered
  again (late acknowledgement), so the run is dead only when no task renewed it for longer
  than the broker's redelivery delay plus a task's time limit.

The next run of the week marks a dead run ``abandoned`` with the reason and proceeds
(:func:`recsys.db.repository.start_weekly_run`); a run that finds its lease lost stops at
its next step.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from recsys.db import repository
from recsys.db.models import WeeklyRun
from recsys.settings import Settings

log = logging.getLogger(__name__)

CELERY_OWNER = "celery"


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), which tells a
    reused pid from the original process; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"  # alive, but no /proc (not Linux): the pid alone must do
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":  # a zombie has exited; only its exit status is left
        return None
    return fields[19].decode()


def this_process() -> str:
    """The owner string of this process."""
    pid = os.getpid()
    return f"process {socket.gethostname()} {pid} {_process_start(pid) or '?'}"


@dataclass(frozen=True)
class Lease:
    """How long a silent owner is still presumed alive."""

    process_seconds: int
    celery_seconds: int

    @classmethod
    def of(cls, settings: Settings) -> Lease:
        return cls(
            process_seconds=settings.run_lease_seconds,
            celery_seconds=max(
                settings.run_lease_seconds,
                settings.broker_visibility_timeout + settings.task_time_limit,
            ),
        )

    def dead_reason(self, run: WeeklyRun, now: dt.datetime | None = None) -> str | None:
        """Why the run's owner is presumed dead, or None while it may be alive."""
        now = now or dt.datetime.now(dt.UTC)
        owner = run.owner or ""
        parts = owner.split(" ")
        if parts[0] == "process" and len(parts) == 4 and parts[1] == socket.gethostname():
            pid, start = int(parts[2]), parts[3]
            current = _process_start(pid)
            if current is None:
                return f"its process {pid} on {parts[1]} is gone"
            if start != "?" and current not in (start, "?"):
                return f"its process {pid} on {parts[1]} is gone (the pid was reused)"
            return None
        limit = self.celery_seconds if owner == CELERY_OWNER else self.process_seconds
        beat = run.heartbeat_at or run.started_at
        beat = beat if beat.tzinfo else beat.replace(tzinfo=dt.UTC)
        silent = (now - beat).total_seconds()
        if silent > limit:
            who = owner or "an owner that never renewed it"
            return f"no heartbeat from {who} for {silent:.0f} s (lease {limit} s)"
        return None


@contextmanager
def holding(db: Any, run_id: int, owner: str, every: float) -> Iterator[threading.Event]:
    """Renew the run's lease every ``every`` seconds (``run_heartbeat_seconds``) while the
    body runs, in the database ``db`` (a session factory).

    Yields an event that is set when a renewal finds the run no longer held by ``owner``
    (it was abandoned or cancelled by force): the steps then stop at their next check.
    A renewal that fails because the database is away is retried at the next beat.
    """
    lost = threading.Event()
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(every):
            try:
                with db.begin() as session:
                    held = repository.renew_lease(session, run_id, owner)
            except SQLAlchemyError as exc:
                log.warning("could not renew the lease of weekly run #%d: %s", run_id, exc)
                continue
            if not held:
                log.error("weekly run #%d is no longer held by this process", run_id)
                lost.set()
                return

    beat = threading.Thread(target=renew, name=f"lease-run-{run_id}", daemon=True)
    beat.start()
    try:
        yield lost
    finally:
        stop.set()
        beat.join(timeout=5)

"""Thumbs that listeners give on the pages and through the API."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from recsys.db import changes
from recsys.db.models import Feedback, Track

UP = 1
DOWN = -1
SOURCES = ("web", "api")


def record_thumb(
    session: Session,
    user_id: str,
    track_id: str,
    value: int,
    *,
    source: str,
    rated_at: dt.datetime | None = None,
) -> Feedback:
    """Store one thumb. The caller commits.

    Raises
    ------
    ValueError
        If ``value`` is not +1 or -1, ``source`` is unknown or the track is not in the catalog.
    """
    if value not in (UP, DOWN):
        raise ValueError(f"value must be +1 or -1, got {value!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if session.get(Track, track_id) is None:
        raise ValueError(f"no track {track_id!r} in the catalog")
    row = Feedback(
        user_id=user_id,
        track_id=track_id,
        value=value,
        rated_at=rated_at or dt.datetime.now(dt.UTC),
        source=source,
    )
    session.add(row)
    session.flush()
    changes.announce(session, changes.USER, user_id)
    return row


def withdraw_thumbs(session: Session, user_id: str, track_id: str) -> int:
    """Take back the listener's thumbs on the track (undo): the track is theirs to be
    offered again, and the next weekly export no longer carries those thumbs. Returns how
    many thumbs were taken back (0: there was none). The caller commits."""
    removed = session.execute(
        delete(Feedback).where(Feedback.user_id == user_id, Feedback.track_id == track_id)
    ).rowcount  # type: ignore[attr-defined]
    if removed:
        changes.announce(session, changes.USER, user_id)
    return int(removed or 0)


def list_feedback(
    session: Session, user_id: str, *, limit: int, offset: int = 0
) -> tuple[list[Feedback], int]:
    """The listener's thumbs, newest first, and how many there are in all."""
    total = session.scalar(select(func.count()).where(Feedback.user_id == user_id)) or 0
    rows = session.scalars(
        select(Feedback)
        .where(Feedback.user_id == user_id)
        .order_by(Feedback.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total)


def feedback_before(
    session: Session, cutoff: dt.datetime, *, batch_size: int = 10_000
) -> Iterator[list[tuple[str, str, dt.datetime, int]]]:
    """Every thumb given before ``cutoff`` as (user_id, track_id, rated_at, value) batches,
    in id order, for the weekly export."""
    statement = (
        select(Feedback.user_id, Feedback.track_id, Feedback.rated_at, Feedback.value)
        .where(Feedback.rated_at < cutoff)
        .order_by(Feedback.id)
        .execution_options(yield_per=batch_size)
    )
    batch: list[tuple[str, str, dt.datetime, int]] = []
    for row in session.execute(statement):
        batch.append((row[0], row[1], row[2], int(row[3])))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch

"""Reads and writes of the service's tables. Views and tasks call these; they hold no SQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from recsys.db.models import Artist, Base, ModelVersion, Playlist, PlaylistTrack, Track, User

# SQLite limits bound parameters per statement (32766); keep batches well under it.
_BATCH_ROWS = 2000


@dataclass(frozen=True)
class PlaylistEntry:
    track_id: str
    score: float
    reason: str | None = None


@dataclass(frozen=True)
class NewPlaylist:
    user_id: str
    entries: Sequence[PlaylistEntry]
    kind: str = "personal"


def _batches(rows: Sequence[Mapping[str, Any]], size: int = _BATCH_ROWS) -> Iterator[list[Any]]:
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])


def _upsert(
    session: Session, model: type[Base], rows: Iterable[Mapping[str, Any]], key: str
) -> int:
    """Insert rows, updating every other column where ``key`` already exists."""
    rows = list(rows)
    if not rows:
        return 0
    table = model.__table__
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise ValueError(f"upsert is not implemented for the {dialect!r} database")
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for batch in _batches(rows):
        statement = insert_fn(table)  # type: ignore[arg-type]
        columns = [name for name in batch[0] if name != key]
        statement = statement.on_conflict_do_update(
            index_elements=[key], set_={name: statement.excluded[name] for name in columns}
        )
        session.execute(statement, batch)
    return len(rows)


def upsert_artists(session: Session, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert or update artists given as mappings with ``artist_id`` and ``name``."""
    return _upsert(session, Artist, rows, "artist_id")


def upsert_tracks(session: Session, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert or update tracks (``track_id``, ``title``, ``artist_id``, ``duration_ms``, ...)."""
    return _upsert(session, Track, rows, "track_id")


def upsert_users(session: Session, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert listeners (``user_id``, optional ``display_name``), updating display names."""
    return _upsert(session, User, rows, "user_id")


def ensure_users(session: Session, user_ids: Iterable[str]) -> int:
    """Insert listeners that are not there yet, leaving existing rows untouched."""
    wanted = set(user_ids)
    existing: set[str] = set()
    ids = sorted(wanted)
    for start in range(0, len(ids), _BATCH_ROWS):
        chunk = ids[start : start + _BATCH_ROWS]
        existing.update(session.scalars(select(User.user_id).where(User.user_id.in_(chunk))))
    missing = [{"user_id": user_id} for user_id in sorted(wanted - existing)]
    for batch in _batches(missing):
        session.execute(insert(User), batch)
    return len(missing)


def save_model_version(session: Session, version: ModelVersion) -> ModelVersion:
    """Record a model version; saving the same version again updates it."""
    return session.merge(version)


def replace_week_playlists(
    session: Session, week_start: dt.date, model_version: str, playlists: Sequence[NewPlaylist]
) -> int:
    """Write the week's playlists of these listeners, replacing any they already had that week.

    Runs in the caller's transaction, so a re-run of the same week either replaces the
    listener's playlist entirely or leaves the old one; the unique constraint on
    (user_id, week_start) makes a duplicate impossible.

    Returns
    -------
    int
        The number of playlist tracks written.
    """
    user_ids = [playlist.user_id for playlist in playlists]
    for start in range(0, len(user_ids), _BATCH_ROWS):
        chunk = user_ids[start : start + _BATCH_ROWS]
        old_ids = select(Playlist.id).where(
            Playlist.week_start == week_start, Playlist.user_id.in_(chunk)
        )
        session.execute(delete(PlaylistTrack).where(PlaylistTrack.playlist_id.in_(old_ids)))
        session.execute(
            delete(Playlist).where(Playlist.week_start == week_start, Playlist.user_id.in_(chunk))
        )
    now = dt.datetime.now(dt.UTC)
    header_rows = [
        {
            "user_id": playlist.user_id,
            "week_start": week_start,
            "model_version": model_version,
            "kind": playlist.kind,
            "created_at": now,
        }
        for playlist in playlists
    ]
    playlist_ids: dict[str, int] = {}
    for batch in _batches(header_rows):
        result = session.execute(
            insert(Playlist).returning(Playlist.id, Playlist.user_id, sort_by_parameter_order=True),
            batch,
        )
        playlist_ids.update({user_id: playlist_id for playlist_id, user_id in result})
    track_rows = [
        {
            "playlist_id": playlist_ids[playlist.user_id],
            "position": position,
            "track_id": entry.track_id,
            "score": float(entry.score),
            "reason": entry.reason,
        }
        for playlist in playlists
        for position, entry in enumerate(playlist.entries, start=1)
    ]
    for batch in _batches(track_rows):
        session.execute(insert(PlaylistTrack), batch)
    return len(track_rows)


def get_user(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def latest_playlist(session: Session, user_id: str) -> Playlist | None:
    """The listener's most recent playlist with its tracks and their artists, or None."""
    statement = (
        select(Playlist)
        .where(Playlist.user_id == user_id)
        .order_by(Playlist.week_start.desc())
        .limit(1)
        .options(selectinload(Playlist.tracks))
    )
    return session.scalars(statement).first()


def list_listeners(session: Session, *, limit: int, offset: int = 0) -> list[tuple[User, int]]:
    """Listeners ordered by id with how many weekly playlists each has."""
    counts = (
        select(Playlist.user_id, func.count(Playlist.id).label("playlists"))
        .group_by(Playlist.user_id)
        .subquery()
    )
    statement = (
        select(User, func.coalesce(counts.c.playlists, 0))
        .outerjoin(counts, counts.c.user_id == User.user_id)
        .order_by(User.user_id)
        .limit(limit)
        .offset(offset)
    )
    return [(user, int(count)) for user, count in session.execute(statement)]


def count_listeners(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(User)) or 0)


def playlists_of_week(session: Session, week_start: dt.date) -> int:
    statement = select(func.count()).select_from(Playlist).where(Playlist.week_start == week_start)
    return int(session.scalar(statement) or 0)


def newest_model_version(session: Session, week_start: dt.date) -> ModelVersion | None:
    statement = (
        select(ModelVersion)
        .where(ModelVersion.week_start == week_start)
        .order_by(ModelVersion.created_at.desc())
        .limit(1)
    )
    return session.scalars(statement).first()

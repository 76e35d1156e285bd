"""Reads and writes of the service's tables. Views and tasks call these; they hold no SQL."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    String,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from recsys.contract import TRACK_DISPLAY_COLUMNS
from recsys.db import changes
from recsys.db.models import (
    Artist,
    Base,
    Feedback,
    JobRun,
    ModelVersion,
    Playlist,
    PlaylistExport,
    PlaylistTrack,
    Track,
    TuningRun,
    TuningTrial,
    User,
    WeeklyRun,
    WeekPublication,
)

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


def _batches(rows: Sequence[Any], size: int = _BATCH_ROWS) -> Iterator[list[Any]]:
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
    _rendered.clear()
    return _upsert(session, Track, rows, "track_id")


def upsert_users(session: Session, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert listeners (``user_id``, optional ``display_name``), updating display names."""
    return _upsert(session, User, rows, "user_id")


def save_model_version(session: Session, version: ModelVersion) -> ModelVersion:
    """Record a model version; saving the same version again updates it."""
    return session.merge(version)


def replace_week_playlists(
    session: Session,
    week_start: dt.date,
    model_version: str,
    playlists: Sequence[NewPlaylist],
    weekly_run_id: int,
) -> int:
    """Write these listeners' playlists of the week for one weekly run, replacing any the
    same run already wrote for them (a retried chunk), in the caller's transaction.

    The unique constraint on (user_id, week_start, weekly_run_id) makes a duplicate
    impossible; readers see only the run the week is published with. On PostgreSQL the
    listeners and tracks go to the server as one array parameter each (no lists of bound
    parameters) and every row is written with ``COPY``.

    Returns
    -------
    int
        The number of playlist tracks written.
    """
    user_ids = [playlist.user_id for playlist in playlists]
    for listeners in _id_groups(session, user_ids):
        mine = (
            (Playlist.week_start == week_start)
            & (Playlist.weekly_run_id == weekly_run_id)
            & _among(Playlist.user_id, listeners)
        )
        session.execute(
            delete(PlaylistTrack).where(
                PlaylistTrack.playlist_id.in_(select(Playlist.id).where(mine))
            )
        )
        session.execute(delete(Playlist).where(mine))
    rendered = _rendered_catalog(
        session,
        weekly_run_id,
        week_start,
        {entry.track_id for playlist in playlists for entry in playlist.entries},
    )
    fragments, durations, new = rendered.fragments, rendered.durations, rendered.new
    reasons: dict[Any, str] = {}
    now = dt.datetime.now(dt.UTC)
    header_rows = [
        {
            "user_id": playlist.user_id,
            "week_start": week_start,
            "weekly_run_id": weekly_run_id,
            "model_version": model_version,
            "kind": playlist.kind,
            "created_at": now,
            "tracks_json": _render(playlist.entries, fragments, reasons),
            "duration_ms": sum(durations[e.track_id] for e in playlist.entries),
            "new_releases": sum(new[e.track_id] for e in playlist.entries),
        }
        for playlist in playlists
    ]
    playlist_ids = _insert_headers(session, header_rows)
    track_rows = [
        (playlist_id, position, entry.track_id, float(entry.score), entry.reason)
        for playlist, playlist_id in zip(playlists, playlist_ids, strict=True)
        for position, entry in enumerate(playlist.entries, start=1)
    ]
    _bulk_insert(session, PlaylistTrack, _TRACK_COLUMNS, track_rows)
    publication = session.get(WeekPublication, week_start)
    if publication is not None and publication.weekly_run_id == weekly_run_id:
        # Rewritten after publication (`cratedigger regenerate`, a redelivered chunk):
        # readers that cache these listeners' answers must read them again.
        for user_id in user_ids:
            changes.announce(session, changes.USER, user_id)
    return len(track_rows)


@dataclass
class _RenderedCatalog:
    """Tracks of one weekly run as its playlists show them: each track's JSON
    :func:`_fragment`, length and whether it is a new release that week."""

    key: tuple[str, int]
    fragments: dict[str, str] = field(default_factory=dict)
    durations: dict[str, int] = field(default_factory=dict)
    new: dict[str, bool] = field(default_factory=dict)


#: The catalog a weekly run's chunks share, rendered once per process and run: the run
#: loads the catalog before it generates, and its chunks mostly hold the same tracks.
#: Forgotten when this process upserts tracks; bounded by :data:`RENDERED_TRACKS`.
_rendered: list[_RenderedCatalog] = []
RENDERED_TRACKS = 500_000


def _rendered_catalog(
    session: Session, run_id: int, week_start: dt.date, track_ids: set[str]
) -> _RenderedCatalog:
    key = (session.connection().engine.url.render_as_string(hide_password=True), run_id)
    if not _rendered or _rendered[0].key != key:
        _rendered[:] = [_RenderedCatalog(key)]
    rendered = _rendered[0]
    wanted = track_ids - rendered.fragments.keys()
    if len(rendered.fragments) + len(wanted) > RENDERED_TRACKS:
        rendered = _RenderedCatalog(key)  # this chunk only: the bound holds
        wanted = track_ids
    for track_id, fields in _catalog_rows(session, wanted).items():
        rendered.fragments[track_id] = _fragment(track_id, fields)
        rendered.durations[track_id] = fields["duration_ms"]
        rendered.new[track_id] = is_new_release(fields["released_at"], week_start)
    return rendered


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _id_groups(session: Session, ids: Sequence[str]) -> Iterator[Any]:
    """``ids`` for an ``IN``: on PostgreSQL one array parameter (compare with ``any_``),
    elsewhere lists of at most ``_BATCH_ROWS`` bound parameters."""
    if not ids:
        return
    if _is_postgresql(session):
        yield bindparam(None, list(ids), type_=postgresql.ARRAY(String))
        return
    for start in range(0, len(ids), _BATCH_ROWS):
        yield list(ids[start : start + _BATCH_ROWS])


def _among(column: Any, ids: Any) -> Any:
    """``column IN ids`` for a group of :func:`_id_groups`."""
    return column.in_(ids) if isinstance(ids, list) else column == any_(ids)


def _insert_headers(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert playlist headers; their ids, in order. PostgreSQL takes the ids from the
    sequence in one round trip and the rows with ``COPY``; elsewhere batched
    ``INSERT ... RETURNING``."""
    if not rows:
        return []
    if _is_postgresql(session):
        ids = list(
            session.scalars(
                text(
                    "SELECT nextval(pg_get_serial_sequence('playlists', 'id'))"
                    " FROM generate_series(1, :n)"
                ),
                {"n": len(rows)},
            )
        )
        columns = ("id", *rows[0])
        numbered = [(i, *row.values()) for i, row in zip(ids, rows, strict=True)]
        _bulk_insert(session, Playlist, columns, numbered)
        return [int(i) for i in ids]
    ids = []
    for batch in _batches(rows):
        result = session.execute(
            insert(Playlist).returning(Playlist.id, sort_by_parameter_order=True), batch
        )
        ids += [int(playlist_id) for (playlist_id,) in result]
    return ids


#: The catalog's fields each playlist track carries, after its title, artist and length.
SHOWN_FIELDS = TRACK_DISPLAY_COLUMNS
#: A track released at most this many days before its playlist's week is a new release.
NEW_RELEASE_DAYS = 28


def is_new_release(released_at: str | None, week_start: dt.date) -> bool:
    """Whether a track released on ``released_at`` (ISO date, or None: unknown) is new in
    the week starting ``week_start``."""
    if released_at is None:
        return False
    return released_at >= (week_start - dt.timedelta(days=NEW_RELEASE_DAYS)).isoformat()


def _catalog_rows(session: Session, track_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Each track's fields as a playlist shows them (title, artist, length, the catalog's
    optional fields), in one statement on PostgreSQL, in batches elsewhere."""
    rows: dict[str, dict[str, Any]] = {}
    shown = [getattr(Track, name) for name in SHOWN_FIELDS]
    keys = ("title", "artist_id", "artist", "duration_ms", *SHOWN_FIELDS)
    released = keys.index("released_at")
    for ids in _id_groups(session, sorted(track_ids)):
        statement = (
            select(Track.track_id, Track.title, Track.artist_id, Artist.name, Track.duration_ms)
            .add_columns(*shown)
            .join(Artist, Artist.artist_id == Track.artist_id)
            .where(_among(Track.track_id, ids))
        )
        for row in session.execute(statement):
            values = list(row[1:])
            if values[released] is not None:
                values[released] = values[released].isoformat()
            rows[row[0]] = dict(zip(keys, values, strict=True))
    missing = track_ids - rows.keys()
    if missing:
        example = min(missing)
        raise ValueError(f"{len(missing)} playlist track(s) not in the catalog, e.g. {example!r}")
    return rows


_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _fragment(track_id: str, fields: Mapping[str, Any]) -> str:
    """A track's id and catalog fields as the inside of a JSON object
    (``"track_id":...,"title":...,...``): the same in every playlist it is in, so rendered
    once per chunk."""
    return _dumps({"track_id": track_id, **fields})[1:-1]


def _render(
    entries: Sequence[PlaylistEntry], fragments: Mapping[str, str], reasons: dict[Any, str]
) -> str:
    """:func:`render_tracks` from each track's :func:`_fragment`: the same text, faster.
    ``reasons`` memoises the reasons' JSON across a chunk (many repeat)."""
    parts = []
    for position, entry in enumerate(entries, start=1):
        score = round(float(entry.score), 6)
        if not math.isfinite(score):
            raise ValueError(f"score of {entry.track_id!r} is {score}: not a JSON number")
        reason = reasons.get(entry.reason)
        if reason is None:
            reason = reasons[entry.reason] = _dumps(entry.reason)
        # float.__repr__ is how json writes a float.
        parts.append(
            f'{{"position":{position},{fragments[entry.track_id]},'
            f'"score":{score!r},"reason":{reason},"thumb":null}}'
        )
    return f"[{','.join(parts)}]"


def render_tracks(
    entries: Sequence[PlaylistEntry], catalog: Mapping[str, Mapping[str, Any]]
) -> str:
    """A playlist's tracks as the JSON array the API and the pages show (``thumb`` is filled
    in at read time from the listener's feedback)."""
    tracks = [
        {
            "position": position,
            "track_id": entry.track_id,
            **catalog[entry.track_id],
            "score": round(float(entry.score), 6),
            "reason": entry.reason,
            "thumb": None,
        }
        for position, entry in enumerate(entries, start=1)
    ]
    return json.dumps(tracks, separators=(",", ":"), allow_nan=False)


_TRACK_COLUMNS = ("playlist_id", "position", "track_id", "score", "reason")


def _bulk_insert(
    session: Session, model: type[Base], columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Insert many rows (tuples of ``columns``): PostgreSQL's COPY (several times faster
    than multi-row INSERTs for a chunk's 25,000 playlist tracks), SQLite's executemany.
    Same transaction either way. On SQLite the values go to the driver as they are: numbers,
    text and None only (no dates: the sqlite3 module's date adapters are deprecated)."""
    if not rows:
        return
    if _is_postgresql(session):
        table = model.__table__.name  # type: ignore[attr-defined]
        raw = session.connection().connection.driver_connection
        assert raw is not None
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        return
    if session.get_bind().dialect.name == "sqlite":
        # The driver's own executemany: SQLAlchemy's per-row parameter handling costs more
        # than SQLite's insert.
        table = model.__table__.name  # type: ignore[attr-defined]
        marks = ", ".join("?" * len(columns))
        raw = session.connection().connection.driver_connection
        assert raw is not None
        raw.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        return
    for batch in _batches(rows):
        session.execute(insert(model), [dict(zip(columns, row, strict=True)) for row in batch])


def _published() -> Any:
    """Join condition: the playlist belongs to the run its week is published with."""
    return (WeekPublication.week_start == Playlist.week_start) & (
        WeekPublication.weekly_run_id == Playlist.weekly_run_id
    )


def get_user(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


@dataclass(frozen=True)
class PublishedPlaylist:
    """A listener's published playlist of one week: its tracks as stored at publication and
    the listener's current thumbs on them (track id -> +1 or -1)."""

    id: int
    user_id: str
    week_start: dt.date
    kind: str
    model_version: str
    tracks_json: str
    thumbs: Mapping[str, int]
    #: the listener's display name (None: none given)
    display_name: str | None = None
    #: the stored tracks' total length and new releases (None: published before 0008)
    duration_ms: int | None = None
    new_releases: int | None = None

    def tracks(self) -> list[dict[str, Any]]:
        tracks: list[dict[str, Any]] = json.loads(self.tracks_json)
        return tracks


_playlists = Playlist.__table__
_publications = WeekPublication.__table__
_playlist_tracks = PlaylistTrack.__table__
_feedback = Feedback.__table__
_users = User.__table__
# The listener's thumbs on the playlist's tracks, as "id value track_id" items joined by
# commas (identifiers hold neither), so that the playlist and its thumbs are one round trip.
_THUMBS = (
    select(
        func.aggregate_strings(
            cast(_feedback.c.id, String)
            + " "
            + cast(_feedback.c.value, String)
            + " "
            + _feedback.c.track_id,
            ",",
        )
    )
    .select_from(
        _feedback.join(
            _playlist_tracks,
            (_playlist_tracks.c.playlist_id == _playlists.c.id)
            & (_playlist_tracks.c.track_id == _feedback.c.track_id),
        )
    )
    .where(_feedback.c.user_id == _playlists.c.user_id)
    .scalar_subquery()
)
# Built once: the API reads a playlist on nearly every request.
_PUBLISHED_ROWS = (
    select(
        _playlists.c.id,
        _playlists.c.user_id,
        _playlists.c.week_start,
        _playlists.c.kind,
        _playlists.c.model_version,
        _playlists.c.tracks_json,
        _THUMBS,
        _users.c.display_name,
        _playlists.c.duration_ms,
        _playlists.c.new_releases,
    )
    .join(
        _publications,
        (_publications.c.week_start == _playlists.c.week_start)
        & (_publications.c.weekly_run_id == _playlists.c.weekly_run_id),
    )
    .join(_users, _users.c.user_id == _playlists.c.user_id)
)
_PUBLISHED = _PUBLISHED_ROWS.where(_playlists.c.user_id == bindparam("user_id"))
#: The listener's newest published playlist (parameter ``user_id``); read its row with
#: :func:`published_playlist`.
LATEST_PLAYLIST = _PUBLISHED.order_by(_playlists.c.week_start.desc()).limit(1)
#: The listener's published playlist of one week (``user_id``, ``week_start``).
PLAYLIST_OF_WEEK = _PUBLISHED.where(_playlists.c.week_start == bindparam("week_start"))


def latest_playlist(session: Session, user_id: str) -> PublishedPlaylist | None:
    """The listener's most recent published playlist with their thumbs on it, or None.
    One indexed row, one round trip."""
    return published_playlist(session.execute(LATEST_PLAYLIST, {"user_id": user_id}).first())


def playlist_of_week(
    session: Session, user_id: str, week_start: dt.date
) -> PublishedPlaylist | None:
    """The listener's published playlist of one week with their thumbs on it, or None."""
    params = {"user_id": user_id, "week_start": week_start}
    row = session.execute(PLAYLIST_OF_WEEK, params).first()
    return published_playlist(row)


def listeners_with_playlists(session: Session, after: str, limit: int) -> list[str]:
    """Up to ``limit`` listeners with a published playlist, in id order after ``after``."""
    return list(
        session.scalars(
            select(Playlist.user_id)
            .join(WeekPublication, _published())
            .where(Playlist.user_id > after)
            .group_by(Playlist.user_id)
            .order_by(Playlist.user_id)
            .limit(limit)
        )
    )


def latest_rows(session: Session, user_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """The :data:`LATEST_PLAYLIST` row of each of these listeners that has one, in one
    query (the serving store's publication, :mod:`recsys.db.published`)."""
    rows: dict[str, tuple[Any, ...]] = {}
    for listeners in _id_groups(session, user_ids):
        statement = _PUBLISHED_ROWS.where(_among(_playlists.c.user_id, listeners)).order_by(
            _playlists.c.user_id, _playlists.c.week_start.desc()
        )
        for row in session.execute(statement):
            rows.setdefault(row[1], tuple(row))
    return list(rows.values())


def published_playlist(row: Sequence[Any] | None) -> PublishedPlaylist | None:
    """A row of :data:`LATEST_PLAYLIST` or :data:`PLAYLIST_OF_WEEK` as a playlist."""
    if row is None:
        return None
    playlist_id, user_id, week_start, kind, model_version, tracks_json, thumbs, *rest = row
    display_name, duration_ms, new_releases = rest
    return PublishedPlaylist(
        playlist_id,
        user_id,
        week_start,
        kind,
        model_version,
        tracks_json,
        thumbs=_newest_thumbs(thumbs),
        display_name=display_name,
        duration_ms=duration_ms,
        new_releases=new_releases,
    )


def _newest_thumbs(thumbs: str | None) -> dict[str, int]:
    """The :data:`_THUMBS` text as track id -> the newest thumb's value."""
    newest: dict[str, int] = {}
    if thumbs:
        items = [item.split(" ", 2) for item in thumbs.split(",")]
        # In id order, so that a newer thumb on a track replaces an older one.
        for _id, value, track_id in sorted(items, key=lambda item: int(item[0])):
            newest[track_id] = int(value)
    return newest


@dataclass(frozen=True)
class Cover:
    """What a cover of a playlist track shows: the catalog's image (or None) and the artist
    a placeholder is drawn for."""

    image_url: str | None
    artist_id: str
    title: str


@dataclass(frozen=True)
class PlaylistSummary:
    week_start: dt.date
    kind: str
    model_version: str
    #: the tracks left after the listener's thumbs-down, and how many those removed
    tracks: int
    removed: int = 0
    #: the first few remaining tracks' covers
    covers: tuple[Cover, ...] = ()


#: Covers a summary carries.
SUMMARY_COVERS = 4


def list_playlists(
    session: Session, user_id: str, *, limit: int, offset: int = 0
) -> tuple[list[PlaylistSummary], int]:
    """The listener's published playlists, newest week first, and how many there are.

    Each summary counts the tracks the listener has not thumbed down since, as the playlist
    pages show them.
    """
    published = (
        select(_playlists.c.id)
        .join(_publications, _published_table())
        .where(_playlists.c.user_id == user_id)
        .subquery()
    )
    total = session.scalar(select(func.count()).select_from(published)) or 0
    statement = (
        select(
            _playlists.c.week_start,
            _playlists.c.kind,
            _playlists.c.model_version,
            _playlists.c.tracks_json,
            _THUMBS,
        )
        .join(_publications, _published_table())
        .where(_playlists.c.user_id == user_id)
        .order_by(_playlists.c.week_start.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = []
    for week, kind, model, tracks_json, thumbs in session.execute(statement):
        newest = _newest_thumbs(thumbs)
        stored: list[dict[str, Any]] = json.loads(tracks_json)
        kept = [track for track in stored if newest.get(track["track_id"], 0) >= 0]
        covers = tuple(
            Cover(track.get("image_url"), track["artist_id"], track["title"])
            for track in kept[:SUMMARY_COVERS]
        )
        rows.append(PlaylistSummary(week, kind, model, len(kept), len(stored) - len(kept), covers))
    return rows, int(total)


def _published_table() -> Any:
    """:func:`_published` on the tables (Core) rather than the models."""
    return (_publications.c.week_start == _playlists.c.week_start) & (
        _publications.c.weekly_run_id == _playlists.c.weekly_run_id
    )


def get_track(session: Session, track_id: str) -> Track | None:
    return session.get(Track, track_id)


def tracks_by_id(session: Session, track_ids: Sequence[str]) -> dict[str, Track]:
    if not track_ids:
        return {}
    rows = session.scalars(select(Track).where(Track.track_id.in_(list(track_ids))))
    return {track.track_id: track for track in rows}


def latest_published_model(session: Session) -> ModelVersion | None:
    """The model of the newest published week."""
    statement = (
        select(ModelVersion)
        .join(WeekPublication, WeekPublication.model_version == ModelVersion.version)
        .order_by(WeekPublication.week_start.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def recent_model_versions(session: Session, limit: int = 52) -> list[ModelVersion]:
    """Model versions, newest first."""
    statement = (
        select(ModelVersion)
        .order_by(ModelVersion.week_start.desc(), ModelVersion.created_at.desc())
        .limit(limit)
    )
    return list(session.scalars(statement))


@dataclass(frozen=True)
class QuarantineCounts:
    weekly_run_id: int
    week_start: dt.date
    #: kind (plays, thumbs, tracks, ...) -> reason -> rows
    counts: dict[str, dict[str, int]]
    events_read: dict[str, int]

    @property
    def total(self) -> int:
        return sum(sum(by_reason.values()) for by_reason in self.counts.values())


def quarantine_counts(session: Session, limit: int = 20) -> list[QuarantineCounts]:
    """Rows set aside by the aggregation of recent runs, by kind and reason."""
    statement = (
        select(JobRun, WeeklyRun.week_start)
        .join(WeeklyRun, WeeklyRun.id == JobRun.weekly_run_id)
        .where(JobRun.step == "aggregate", JobRun.status == "succeeded")
        .order_by(WeeklyRun.started_at.desc(), WeeklyRun.id.desc())
        .limit(limit)
    )
    result = []
    for job, week_start in session.execute(statement):
        counts = job.counts or {}
        quarantined = counts.get("quarantined") or {}
        result.append(
            QuarantineCounts(
                weekly_run_id=job.weekly_run_id,
                week_start=week_start,
                counts={
                    str(kind): {str(reason): int(n) for reason, n in by_reason.items()}
                    for kind, by_reason in quarantined.items()
                },
                events_read={str(k): int(v) for k, v in (counts.get("events_read") or {}).items()},
            )
        )
    return result


def list_listeners(session: Session, *, limit: int, offset: int = 0) -> list[tuple[User, int]]:
    """Listeners ordered by id with how many published weekly playlists each has."""
    counts = (
        select(Playlist.user_id, func.count(Playlist.id).label("playlists"))
        .join(WeekPublication, _published())
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
    """How many playlists readers see for the week (those of its published run)."""
    statement = (
        select(func.count())
        .select_from(Playlist)
        .join(WeekPublication, _published())
        .where(Playlist.week_start == week_start)
    )
    return int(session.scalar(statement) or 0)


def newest_model_version(session: Session, week_start: dt.date) -> ModelVersion | None:
    statement = (
        select(ModelVersion)
        .where(ModelVersion.week_start == week_start)
        .order_by(ModelVersion.created_at.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


# ------------------------------------------------------------------------------ weekly runs


class RunAlreadyActive(RuntimeError):
    """Another run of the same week is in progress."""


ACTIVE = ("running", "cancelling")


def _active_run(session: Session, week_start: dt.date) -> WeeklyRun | None:
    return session.scalars(
        select(WeeklyRun).where(WeeklyRun.week_start == week_start, WeeklyRun.status.in_(ACTIVE))
    ).first()


def start_weekly_run(
    session: Session,
    week_start: dt.date,
    trigger: str,
    data_dir: str,
    *,
    owner: str | None = None,
    dead_reason: Callable[[WeeklyRun], str | None] | None = None,
) -> WeeklyRun:
    """Insert a running run for the week held by ``owner``, or raise
    :class:`RunAlreadyActive` saying which run holds the week.

    The partial unique index on active runs decides between two runs started at once. An
    active run whose owner is gone (``dead_reason`` says why) is marked ``abandoned`` with
    the reason, and the new run takes the week.
    """
    from sqlalchemy.exc import IntegrityError

    for _ in range(2):
        now = dt.datetime.now(dt.UTC)
        run = WeeklyRun(
            week_start=week_start,
            status="running",
            trigger=trigger,
            data_dir=data_dir,
            owner=owner,
            heartbeat_at=now,
        )
        try:
            with session.begin_nested():
                session.add(run)
                session.flush()
            return run
        except IntegrityError:
            active = _active_run(session, week_start)
            if active is None:  # it ended between our insert and this read: try again
                continue
            reason = dead_reason(active) if dead_reason is not None else None
            if reason is None:
                raise RunAlreadyActive(
                    f"the week of {week_start} is already being built by run #{active.id} "
                    f"({active.trigger}, started {active.started_at:%Y-%m-%d %H:%M} UTC, "
                    f"held by {active.owner or 'an unknown owner'}); not starting another"
                ) from None
            abandon_run(session, active.id, f"abandoned: {reason}")
    raise RunAlreadyActive(f"the week of {week_start} is contended; not starting another")


def abandon_run(session: Session, run_id: int, reason: str) -> bool:
    """Mark an active run ``abandoned`` (its owner died) and its unfinished steps with it.
    Returns False if the run was no longer active."""
    now = dt.datetime.now(dt.UTC)
    ended = session.execute(
        update(WeeklyRun)
        .where(WeeklyRun.id == run_id, WeeklyRun.status.in_(ACTIVE))
        .values(status="abandoned", error=reason, finished_at=now)
    )
    session.execute(
        update(JobRun)
        .where(JobRun.weekly_run_id == run_id, JobRun.status == "running")
        .values(status="abandoned", error=reason, finished_at=now)
    )
    return bool(ended.rowcount)  # type: ignore[attr-defined]


def renew_lease(session: Session, run_id: int, owner: str) -> bool:
    """Renew the run's heartbeat if ``owner`` still holds it; False if it does not (the run
    was abandoned, cancelled or has ended, or another owner took it)."""
    renewed = session.execute(
        update(WeeklyRun)
        .where(WeeklyRun.id == run_id, WeeklyRun.owner == owner, WeeklyRun.status.in_(ACTIVE))
        .values(heartbeat_at=dt.datetime.now(dt.UTC))
    )
    return bool(renewed.rowcount)  # type: ignore[attr-defined]


def get_weekly_run(session: Session, run_id: int, *, lock: bool = False) -> WeeklyRun | None:
    """The run; with ``lock``, its row locked until the transaction ends (PostgreSQL's
    ``FOR UPDATE``): a step starting while another ends the run waits for it, then sees it
    ended."""
    return session.get(WeeklyRun, run_id, with_for_update=lock or None)


def recent_weekly_runs(session: Session, limit: int = 10) -> list[WeeklyRun]:
    statement = (
        select(WeeklyRun)
        .order_by(WeeklyRun.started_at.desc(), WeeklyRun.id.desc())
        .limit(limit)
        .options(selectinload(WeeklyRun.steps))
    )
    return list(session.scalars(statement))


def begin_step(session: Session, run_id: int, step: str, chunk: int = -1) -> JobRun:
    """Mark a step (or chunk) running; a retry of the same step counts one more attempt."""
    job = session.scalars(
        select(JobRun).where(
            JobRun.weekly_run_id == run_id, JobRun.step == step, JobRun.chunk == chunk
        )
    ).first()
    now = dt.datetime.now(dt.UTC)
    if job is None:
        job = JobRun(
            weekly_run_id=run_id,
            step=step,
            chunk=chunk,
            status="running",
            attempts=1,
            started_at=now,
        )
        session.add(job)
    else:
        job.status, job.attempts, job.started_at, job.error = "running", job.attempts + 1, now, None
        job.finished_at = None
    session.flush()
    return job


def finish_step(
    session: Session,
    run_id: int,
    step: str,
    *,
    chunk: int = -1,
    status: str = "succeeded",
    counts: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    job = session.scalars(
        select(JobRun).where(
            JobRun.weekly_run_id == run_id, JobRun.step == step, JobRun.chunk == chunk
        )
    ).one()
    job.status = status
    job.finished_at = dt.datetime.now(dt.UTC)
    started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=dt.UTC)
    job.seconds = round((job.finished_at - started).total_seconds(), 3)
    job.counts = counts
    job.error = error


def chunk_statuses(session: Session, run_id: int, step: str = "generate") -> dict[int, str]:
    rows = session.execute(
        select(JobRun.chunk, JobRun.status).where(
            JobRun.weekly_run_id == run_id, JobRun.step == step
        )
    )
    return {int(chunk): str(status) for chunk, status in rows}


def chunks_succeeded(session: Session, run_id: int, step: str = "generate") -> int:
    """How many chunks of the run's step have succeeded: one COUNT, cheap after every chunk."""
    return int(
        session.scalar(
            select(func.count()).where(
                JobRun.weekly_run_id == run_id, JobRun.step == step, JobRun.status == "succeeded"
            )
        )
        or 0
    )


def end_weekly_run(session: Session, run_id: int, status: str, *, error: str | None = None) -> None:
    run = session.get(WeeklyRun, run_id)
    if run is None:
        raise ValueError(f"no weekly run #{run_id}")
    run.status = status
    run.error = error
    run.finished_at = dt.datetime.now(dt.UTC)


class RunNotActive(RuntimeError):
    """The run was cancelled, abandoned or has ended; its remaining steps do nothing."""


def claim_publication(session: Session, run_id: int) -> None:
    """End the run as succeeded in the caller's (publishing) transaction, only if it is
    still running: a run abandoned or cancelled by force meanwhile must not publish.
    On PostgreSQL the row stays locked until the transaction ends, so a concurrent
    abandonment waits and then finds the run ended."""
    claimed = session.execute(
        update(WeeklyRun)
        .where(WeeklyRun.id == run_id, WeeklyRun.status == "running")
        .values(status="succeeded", error=None, finished_at=dt.datetime.now(dt.UTC))
    )
    if not claimed.rowcount:  # type: ignore[attr-defined]
        status = session.scalar(select(WeeklyRun.status).where(WeeklyRun.id == run_id))
        raise RunNotActive(f"weekly run #{run_id} is {status}; not publishing it")


def publish_week(session: Session, run_id: int) -> int:
    """Make the run's playlists the ones readers see for its week, in the caller's
    transaction, and drop the playlists of the week's other runs.

    Returns
    -------
    int
        The number of playlists now visible for the week.
    """
    run = session.get(WeeklyRun, run_id)
    if run is None or run.model_version is None:
        raise ValueError(f"weekly run #{run_id} has no model to publish")
    publication = session.get(WeekPublication, run.week_start)
    if publication is None:
        session.add(
            WeekPublication(
                week_start=run.week_start, weekly_run_id=run.id, model_version=run.model_version
            )
        )
    else:
        publication.weekly_run_id = run.id
        publication.model_version = run.model_version
        publication.published_at = dt.datetime.now(dt.UTC)
    model = session.get(ModelVersion, run.model_version)
    if model is not None:
        model.status = "published"
    session.flush()
    stale = select(Playlist.id).where(
        Playlist.week_start == run.week_start, Playlist.weekly_run_id != run.id
    )
    session.execute(delete(PlaylistTrack).where(PlaylistTrack.playlist_id.in_(stale)))
    session.execute(
        delete(Playlist).where(
            Playlist.week_start == run.week_start, Playlist.weekly_run_id != run.id
        )
    )
    changes.announce(session, changes.ALL)
    if _is_postgresql(session):
        # A week's rows arrive in bulk; the planner's statistics must know of them before
        # the first reader does (autovacuum would come later).
        session.execute(text("ANALYZE playlists, playlist_tracks"))
    return playlists_of_week(session, run.week_start)


def published_model_before(session: Session, week_start: dt.date) -> ModelVersion | None:
    """The model of the newest week published before ``week_start``."""
    statement = (
        select(ModelVersion)
        .join(WeekPublication, WeekPublication.model_version == ModelVersion.version)
        .where(WeekPublication.week_start < week_start)
        .order_by(WeekPublication.week_start.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def request_cancel(
    session: Session,
    run_id: int,
    *,
    force: bool = False,
    dead_reason: Callable[[WeeklyRun], str | None] | None = None,
) -> WeeklyRun:
    """Ask a running run to stop at its next step (``cancelling``).

    With ``force``, or when ``dead_reason`` finds its owner gone, the run is ended at once
    (``cancelled``, or ``abandoned`` with the reason) so that the week is free again; a
    step its owner may still be running then finds the run ended and does nothing more.
    """
    run = session.get(WeeklyRun, run_id)
    if run is None:
        raise ValueError(f"no weekly run #{run_id}")
    if run.status not in ACTIVE:
        raise ValueError(
            f"weekly run #{run_id} is {run.status}; only a running run can be cancelled"
        )
    reason = dead_reason(run) if dead_reason is not None else None
    if reason is not None:
        abandon_run(session, run_id, f"abandoned: {reason}")
    elif force:
        end_weekly_run(session, run_id, "cancelled", error="cancelled by an operator (--force)")
        session.execute(
            update(JobRun)
            .where(JobRun.weekly_run_id == run_id, JobRun.status == "running")
            .values(status="cancelled", finished_at=dt.datetime.now(dt.UTC))
        )
    else:
        run.status = "cancelling"
    session.flush()
    session.refresh(run)
    return run


# ------------------------------------------------------------------------- self-tuning


def start_tuning(session: Session, weekly_run_id: int, week_start: dt.date) -> TuningRun:
    """Record a new running search; searches still running (their process died) become
    ``abandoned``, and an earlier search of the same weekly run (a retried step) is
    replaced."""
    session.execute(delete(TuningRun).where(TuningRun.weekly_run_id == weekly_run_id))
    session.execute(
        update(TuningRun)
        .where(TuningRun.status == "running")
        .values(status="abandoned", finished_at=dt.datetime.now(dt.UTC))
    )
    tuning = TuningRun(weekly_run_id=weekly_run_id, week_start=week_start, adopted=False)
    session.add(tuning)
    session.flush()
    return tuning


def add_tuning_trial(
    session: Session, tuning_run_id: int, number: int, trial: Mapping[str, Any]
) -> None:
    """Store one trial (``recsys.tuning.Trial.to_dict()``) of a search."""
    score = trial["score"]
    session.add(
        TuningTrial(
            tuning_run_id=tuning_run_id,
            number=number,
            params=dict(trial["params"]),
            score=None if score != score else float(score),  # NaN: the trial failed
            seconds=float(trial["seconds"]),
            stage=str(trial["stage"]),
            state=str(trial["state"]),
        )
    )


def finish_tuning(session: Session, tuning_run_id: int, status: str, **result: Any) -> None:
    """End a search with ``status`` and its result (columns of :class:`TuningRun`)."""
    session.execute(
        update(TuningRun)
        .where(TuningRun.id == tuning_run_id)
        .values(status=status, finished_at=dt.datetime.now(dt.UTC), **result)
    )


def last_tuning(session: Session) -> TuningRun | None:
    """The newest search that finished."""
    statement = (
        select(TuningRun)
        .where(TuningRun.status == "succeeded")
        .order_by(TuningRun.week_start.desc(), TuningRun.id.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def recent_tunings(session: Session, limit: int = 10) -> list[TuningRun]:
    """Searches with their trials, newest first."""
    statement = (
        select(TuningRun)
        .options(selectinload(TuningRun.trials))
        .order_by(TuningRun.id.desc())
        .limit(limit)
    )
    return list(session.scalars(statement))


# Exports of published weeks (jobs.bigquery).


def published_rows(
    session: Session, week_start: dt.date
) -> tuple[int, list[tuple[Any, ...]]] | None:
    """The week's visible playlists, one row per track: (user_id, position, track_id,
    score, reason, kind, model_version), ordered; with the publishing run's id. None if
    the week is not published."""
    publication = session.get(WeekPublication, week_start)
    if publication is None:
        return None
    rows = session.execute(
        select(
            Playlist.user_id,
            PlaylistTrack.position,
            PlaylistTrack.track_id,
            PlaylistTrack.score,
            PlaylistTrack.reason,
            Playlist.kind,
            Playlist.model_version,
        )
        .join(PlaylistTrack, PlaylistTrack.playlist_id == Playlist.id)
        .where(
            Playlist.week_start == week_start,
            Playlist.weekly_run_id == publication.weekly_run_id,
        )
        .order_by(Playlist.user_id, PlaylistTrack.position)
    )
    return publication.weekly_run_id, [tuple(row) for row in rows]


def begin_export(session: Session, week_start: dt.date, destination: str, run_id: int) -> int:
    """Mark the week's export running (one more attempt); returns the attempt's number."""
    export = session.get(PlaylistExport, (week_start, destination))
    if export is None:
        export = PlaylistExport(
            week_start=week_start, destination=destination, status="running", attempts=0
        )
        session.add(export)
    export.weekly_run_id = run_id
    export.status = "running"
    export.attempts = (export.attempts or 0) + 1
    export.error = None
    export.updated_at = dt.datetime.now(dt.UTC)
    session.flush()
    return export.attempts


def end_export(
    session: Session,
    week_start: dt.date,
    destination: str,
    *,
    rows: int | None = None,
    error: str | None = None,
) -> None:
    export = session.get(PlaylistExport, (week_start, destination))
    if export is None:
        raise ValueError(f"no export of {week_start} to {destination}")
    export.status = "failed" if error else "succeeded"
    export.error = error
    if rows is not None:
        export.rows = rows
    export.updated_at = dt.datetime.now(dt.UTC)


def exports_of(session: Session, run_ids: Iterable[int]) -> dict[int, PlaylistExport]:
    """The export of each run that published, by run id."""
    ids = list(run_ids)
    if not ids:
        return {}
    rows = session.scalars(select(PlaylistExport).where(PlaylistExport.weekly_run_id.in_(ids)))
    return {int(e.weekly_run_id): e for e in rows if e.weekly_run_id is not None}

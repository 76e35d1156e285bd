"""Read-only figures for the operator pages, derived from the tables the weekly run and the
web app already write: which run each week is published with, the catalog's size, and per
published week its playlists, coverage, artist diversity, cold-start share and thumbs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recsys.db.models import (
    Feedback,
    JobRun,
    Playlist,
    PlaylistTrack,
    Track,
    User,
    WeeklyRun,
    WeekPublication,
)

#: The weekly runs' step order, as the run takes them (``jobs.weekly``).
PIPELINE_STEPS = ("aggregate", "tune", "train", "gate", "generate", "publish", "export")


def live_runs(session: Session, weeks: Iterable[dt.date]) -> dict[dt.date, int]:
    """week_start -> the id of the run the week is published with, for those of ``weeks``
    that are published."""
    wanted = sorted(set(weeks))
    if not wanted:
        return {}
    rows = session.execute(
        select(WeekPublication.week_start, WeekPublication.weekly_run_id).where(
            WeekPublication.week_start.in_(wanted)
        )
    )
    return {week: int(run_id) for week, run_id in rows}


@dataclass(frozen=True)
class CatalogSize:
    listeners: int
    tracks: int


def catalog_size(session: Session) -> CatalogSize:
    """How many listeners and tracks the database knows."""
    listeners = session.scalar(select(func.count()).select_from(User)) or 0
    tracks = session.scalar(select(func.count()).select_from(Track)) or 0
    return CatalogSize(listeners=int(listeners), tracks=int(tracks))


@dataclass(frozen=True)
class Aggregation:
    """The newest succeeded aggregate step: what the last aggregation read."""

    weekly_run_id: int
    week_start: dt.date
    #: the step's counts (``jobs.weekly.step_aggregate``): events_read, interactions, ...
    counts: dict[str, Any]

    @property
    def events_read(self) -> int:
        """Events (plays and thumbs) read from the sources, before validation."""
        read = self.counts.get("events_read") or {}
        return sum(int(n) for n in read.values()) if isinstance(read, dict) else 0


def last_aggregation(session: Session) -> Aggregation | None:
    """The aggregate step of the newest run that aggregated successfully."""
    row = session.execute(
        select(JobRun.weekly_run_id, WeeklyRun.week_start, JobRun.counts)
        .join(WeeklyRun, WeeklyRun.id == JobRun.weekly_run_id)
        .where(JobRun.step == "aggregate", JobRun.status == "succeeded")
        .order_by(WeeklyRun.started_at.desc(), WeeklyRun.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return Aggregation(weekly_run_id=int(row[0]), week_start=row[1], counts=dict(row[2] or {}))


@dataclass(frozen=True)
class WeekFigures:
    """What listeners got in one published week, and what they said about it."""

    week_start: dt.date
    weekly_run_id: int
    playlists: int
    #: playlist rows (one per listener and position)
    playlist_tracks: int
    #: different tracks in the week's playlists
    distinct_tracks: int
    #: the mean over the week's playlists of their different artists
    artists_per_playlist: float | None
    #: thumbs given during the week (Monday 00:00 UTC to the next), every row counted
    thumbs_up: int
    thumbs_down: int
    #: cold-start tracks placed by the published run's generate chunks, and the tracks
    #: they placed in all; None when the run recorded no generate counts
    cold_tracks: int | None
    generated_tracks: int | None

    def coverage(self, catalog_tracks: int) -> float | None:
        """Share of the catalog recommended to someone this week."""
        return self.distinct_tracks / catalog_tracks if catalog_tracks else None

    @property
    def thumbs(self) -> int:
        return self.thumbs_up + self.thumbs_down

    @property
    def thumbs_up_share(self) -> float | None:
        return self.thumbs_up / self.thumbs if self.thumbs else None

    @property
    def thumbs_per_100_tracks(self) -> float | None:
        """Thumbs given during the week per 100 playlist tracks published for it."""
        return 100 * self.thumbs / self.playlist_tracks if self.playlist_tracks else None

    @property
    def cold_share(self) -> float | None:
        """Share of the placed tracks that came from content (cold start)."""
        if self.cold_tracks is None or not self.generated_tracks:
            return None
        return self.cold_tracks / self.generated_tracks


@dataclass(frozen=True)
class PlaylistFigures:
    """What one publication holds; fixed once the week is published with the run."""

    playlists: int
    playlist_tracks: int
    distinct_tracks: int
    artists_per_playlist: float | None
    cold_tracks: int | None
    generated_tracks: int | None


def playlist_figures(session: Session, week_start: dt.date, weekly_run_id: int) -> PlaylistFigures:
    """The playlists the run wrote for the week: how many, their tracks, the different
    tracks, the mean of each playlist's different artists, and the cold-start tracks its
    generate chunks counted. Reads every playlist row of the run (an index range)."""
    of_run = (Playlist.week_start == week_start) & (Playlist.weekly_run_id == weekly_run_id)
    playlists = session.scalar(select(func.count()).select_from(Playlist).where(of_run)) or 0
    per_playlist = (
        select(
            func.count().label("tracks"),
            func.count(func.distinct(Track.artist_id)).label("artists"),
        )
        .select_from(Playlist)
        .join(PlaylistTrack, PlaylistTrack.playlist_id == Playlist.id)
        .join(Track, Track.track_id == PlaylistTrack.track_id)
        .where(of_run)
        .group_by(Playlist.id)
        .subquery()
    )
    tracks, artists = session.execute(
        select(func.sum(per_playlist.c.tracks), func.avg(per_playlist.c.artists))
    ).one()
    distinct = session.scalar(
        select(func.count(func.distinct(PlaylistTrack.track_id)))
        .select_from(Playlist)
        .join(PlaylistTrack, PlaylistTrack.playlist_id == Playlist.id)
        .where(of_run)
    )
    cold: list[int] | None = None
    for counts in session.scalars(
        select(JobRun.counts).where(
            JobRun.weekly_run_id == weekly_run_id,
            JobRun.step == "generate",
            JobRun.status == "succeeded",
        )
    ):
        if isinstance(counts, dict) and "cold_tracks" in counts:
            cold = cold or [0, 0]
            cold[0] += int(counts.get("cold_tracks") or 0)
            cold[1] += int(counts.get("playlist_tracks") or 0)
    return PlaylistFigures(
        playlists=int(playlists),
        playlist_tracks=int(tracks or 0),
        distinct_tracks=int(distinct or 0),
        artists_per_playlist=float(artists) if artists is not None else None,
        cold_tracks=cold[0] if cold else None,
        generated_tracks=cold[1] if cold else None,
    )


def thumbs_of_week(session: Session, week_start: dt.date) -> tuple[int, int]:
    """(up, down): the thumbs given from the week's Monday 00:00 UTC to the next."""
    start = dt.datetime.combine(week_start, dt.time(), tzinfo=dt.UTC)
    counts: dict[int, int] = dict(
        session.execute(
            select(Feedback.value, func.count())
            .where(Feedback.rated_at >= start, Feedback.rated_at < start + dt.timedelta(days=7))
            .group_by(Feedback.value)
        ).all()
    )
    return int(counts.get(1, 0)), int(counts.get(-1, 0))


def week_figures(
    session: Session,
    weeks: int = 12,
    known: MutableMapping[tuple[dt.date, int], PlaylistFigures] | None = None,
) -> list[WeekFigures]:
    """The figures of the newest ``weeks`` published weeks, oldest first.

    ``known`` keeps each publication's :class:`PlaylistFigures` across calls (they do not
    change once published; a republished week has another run id): pass the same mapping
    to read each publication's playlists once. The thumbs are counted afresh every time.
    """
    publications = session.execute(
        select(WeekPublication.week_start, WeekPublication.weekly_run_id)
        .order_by(WeekPublication.week_start.desc())
        .limit(weeks)
    ).all()
    known = {} if known is None else known
    result = []
    for week, run_id in sorted((week, int(run_id)) for week, run_id in publications):
        figures = known.get((week, run_id))
        if figures is None:
            figures = known[(week, run_id)] = playlist_figures(session, week, run_id)
        up, down = thumbs_of_week(session, week)
        result.append(
            WeekFigures(
                week_start=week,
                weekly_run_id=run_id,
                playlists=figures.playlists,
                playlist_tracks=figures.playlist_tracks,
                distinct_tracks=figures.distinct_tracks,
                artists_per_playlist=figures.artists_per_playlist,
                thumbs_up=up,
                thumbs_down=down,
                cold_tracks=figures.cold_tracks,
                generated_tracks=figures.generated_tracks,
            )
        )
    return result

"""SQLAlchemy 2 typed models. The schema itself is created only by Alembic (``migrations/``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ID = String(128)

# Stable constraint names so that migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class Artist(Base):
    __tablename__ = "artists"

    artist_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(512))


class Track(Base):
    __tablename__ = "tracks"

    track_id: Mapped[str] = mapped_column(ID, primary_key=True)
    title: Mapped[str] = mapped_column(String(512))
    artist_id: Mapped[str] = mapped_column(ForeignKey("artists.artist_id"), index=True)
    duration_ms: Mapped[int] = mapped_column(BigInteger)
    released_at: Mapped[dt.date | None] = mapped_column(Date)
    # Optional catalog fields (recsys.contract.TRACKS): shown, never used by the models.
    album: Mapped[str | None] = mapped_column(String(512))
    image_url: Mapped[str | None] = mapped_column(String(2048))
    preview_url: Mapped[str | None] = mapped_column(String(2048))
    external_url: Mapped[str | None] = mapped_column(String(2048))
    musicbrainz_recording_id: Mapped[str | None] = mapped_column(String(36))
    isrc: Mapped[str | None] = mapped_column(String(12))

    artist: Mapped[Artist] = relationship(lazy="joined")


class ModelVersion(Base):
    """A trained model artifact; ``status`` is ``trained``, ``published`` or ``rejected``."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    week_start: Mapped[dt.date] = mapped_column(Date, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    fingerprint: Mapped[str] = mapped_column(String(64))
    artifact_path: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_users: Mapped[int] = mapped_column(Integer)
    n_tracks: Mapped[int] = mapped_column(Integer)
    n_interactions: Mapped[int] = mapped_column(BigInteger)
    train_seconds: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="trained")
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: why the validation gate rejected (or passed) the model
    gate_reason: Mapped[str | None] = mapped_column(Text)


class WeeklyRun(Base):
    """One attempt at a week's playlists. At most one run per week is active at a time
    (a partial unique index), so two runs started together cannot both proceed."""

    __tablename__ = "weekly_runs"
    __table_args__ = (
        Index(
            "uq_weekly_runs_active_week",
            "week_start",
            unique=True,
            postgresql_where=text("status IN ('running', 'cancelling')"),
            sqlite_where=text("status IN ('running', 'cancelling')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    week_start: Mapped[dt.date] = mapped_column(Date, index=True)
    #: running, cancelling, succeeded, failed, cancelled, abandoned (its owner died)
    status: Mapped[str] = mapped_column(String(16), default="running")
    trigger: Mapped[str] = mapped_column(String(32))
    data_dir: Mapped[str] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    model_version: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    #: Who holds the run's lease (``jobs.lease``): ``process <host> <pid> <start>`` for an
    #: in-process run, ``celery`` for a run on the workers; renewed at ``heartbeat_at``.
    owner: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: The folder of the week's aggregates this run reads (``run-<id>`` when it aggregated
    #: itself); the published run's is the week's current aggregation. NULL: the layout
    #: before per-run aggregations (``aggregates/week=W/`` itself).
    aggregation: Mapped[str | None] = mapped_column(String(64))

    steps: Mapped[list[JobRun]] = relationship(order_by="JobRun.id", viewonly=True)


class PlaylistExport(Base):
    """The export of a published week to the warehouse (``jobs.bigquery``): one row per
    week and destination. ``status``: running, succeeded, failed (retried; the week stays
    published whatever happens here)."""

    __tablename__ = "playlist_exports"

    week_start: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    destination: Mapped[str] = mapped_column(String(3100), primary_key=True)
    weekly_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("weekly_runs.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class TuningRun(Base):
    """One self-tuning search of a weekly run (``jobs.quality.self_tune``): its result and
    whether its best configuration was adopted. ``status``: running, succeeded, failed,
    abandoned (a later search found it still running)."""

    __tablename__ = "tuning_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    weekly_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("weekly_runs.id", ondelete="SET NULL"), index=True
    )
    week_start: Mapped[dt.date] = mapped_column(Date, index=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: The validation split searched on, and its evaluated listeners.
    split: Mapped[str | None] = mapped_column(Text)
    listeners: Mapped[int | None] = mapped_column(Integer)
    #: Validation scores of the configuration the run had and of the search's best.
    current_score: Mapped[float | None] = mapped_column(Float)
    best_score: Mapped[float | None] = mapped_column(Float)
    #: The two configurations' NDCG on the gate's holdout, which decides the adoption.
    holdout_current: Mapped[float | None] = mapped_column(Float)
    holdout_best: Mapped[float | None] = mapped_column(Float)
    best_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    adopted: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)

    trials: Mapped[list[TuningTrial]] = relationship(
        order_by="TuningTrial.number", cascade="all, delete-orphan"
    )


class TuningTrial(Base):
    """One configuration a search tried (``recsys.tuning.Trial``)."""

    __tablename__ = "tuning_trials"

    tuning_run_id: Mapped[int] = mapped_column(
        ForeignKey("tuning_runs.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: NDCG on the validation split; a pruned trial's at half training; NULL if it failed.
    score: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    #: ``start`` (the configuration the run had) or ``search``
    stage: Mapped[str] = mapped_column(String(16))
    #: ``complete``, ``pruned`` or ``failed``
    state: Mapped[str] = mapped_column(String(16))


class JobRun(Base):
    """Progress of one step (or one generate chunk) of a weekly run."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("weekly_run_id", "step", "chunk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    weekly_run_id: Mapped[int] = mapped_column(ForeignKey("weekly_runs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(32))
    #: -1 for steps that are not split into chunks
    chunk: Mapped[int] = mapped_column(Integer, default=-1)
    #: running, succeeded, failed, cancelled
    status: Mapped[str] = mapped_column(String(16), default="running")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float | None] = mapped_column(Float)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)


class WeekPublication(Base):
    """Which run's playlists readers see for a week; switching it publishes a week at once."""

    __tablename__ = "week_publications"

    week_start: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    weekly_run_id: Mapped[int] = mapped_column(ForeignKey("weekly_runs.id"))
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    published_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class Playlist(Base):
    """One listener's playlist for one week (weeks start Monday 00:00 UTC), written by one
    weekly run. Readers see only the week's published run, so each listener has exactly
    one visible playlist per week."""

    __tablename__ = "playlists"
    __table_args__ = (UniqueConstraint("user_id", "week_start", "weekly_run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"))
    week_start: Mapped[dt.date] = mapped_column(Date)
    weekly_run_id: Mapped[int] = mapped_column(
        ForeignKey("weekly_runs.id", ondelete="CASCADE"), index=True
    )
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="personal")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    #: The tracks as published, rendered once as the JSON array the API and pages show
    #: (``repository.render_tracks``): a read is one row, not a join of 50 tracks and
    #: artists. ``playlist_tracks`` keeps the same tracks as rows for queries.
    tracks_json: Mapped[str] = mapped_column(Text, default="[]")
    #: The tracks' total length and how many were released in the NEW_RELEASE_DAYS before
    #: the week (null for playlists published before revision 0008).
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    new_releases: Mapped[int | None] = mapped_column(Integer)

    tracks: Mapped[list[PlaylistTrack]] = relationship(
        order_by="PlaylistTrack.position", cascade="all, delete-orphan", passive_deletes=True
    )


class PlaylistTrack(Base):
    __tablename__ = "playlist_tracks"

    playlist_id: Mapped[int] = mapped_column(
        ForeignKey("playlists.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_id: Mapped[str] = mapped_column(ForeignKey("tracks.track_id"))
    score: Mapped[float] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)

    track: Mapped[Track] = relationship(lazy="joined")


Index("ix_playlists_week_start", Playlist.week_start)


class ApiToken(Base):
    """An access token: a listener's (``user_id`` set) or an operator's (``role='operator'``).

    Only the SHA-256 of the token is stored; the token itself is shown once, when created.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: the token's first characters, to recognise it in listings
    prefix: Mapped[str] = mapped_column(String(16))
    #: listener or operator
    role: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Feedback(Base):
    """A thumb a listener gave on the web page or through the API.

    The weekly run exports these rows as thumb events (``jobs/feedback.py``), so they reach
    the model exactly like thumbs from the event files. The newest row per (listener, track)
    is the listener's current opinion.
    """

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_user_track", "user_id", "track_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    track_id: Mapped[str] = mapped_column(ForeignKey("tracks.track_id"))
    #: +1 thumbs up, -1 thumbs down
    value: Mapped[int] = mapped_column(Integer)
    rated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    #: web or api
    source: Mapped[str] = mapped_column(String(16))

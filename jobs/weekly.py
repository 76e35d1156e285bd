"""The weekly run: aggregate -> train -> validation gate -> generate (in chunks) -> publish.

Each step is a plain function of the settings and a weekly run id that records its progress
in ``job_runs``. Celery tasks (``jobs/tasks.py``) are thin wrappers around these functions,
and :func:`run_in_process` calls the same functions one after another for the embedded
default. Only events strictly before the week's Monday 00:00 UTC are used.

Exactly one visible playlist per listener and week: chunks write their playlists under the
run's id together with the chunk's ``job_runs`` row in one transaction (a retried chunk
replaces its own rows), and :func:`step_publish` switches the week to the run in one
transaction. Until then readers keep seeing the previously published run.

Chunks cut one fixed list of listeners (:func:`listener_plan`): first every listener with a
personal playlist (model rows, in order), then the listeners of the users table without
usable history, who get a popular playlist (sorted by id). The list depends only on the
week's aggregates and settings, so a retried chunk rebuilds exactly its own listeners.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
from sqlalchemy import Engine

from recsys.als import ALSModel, ALSParams, train_als, with_cold_start
from recsys.coldstart import content_matrix
from recsys.contract import week_cutoff
from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.migrate import upgrade
from recsys.db.models import ModelVersion, WeekPublication
from recsys.explain import explain_block
from recsys.matrix import InteractionMatrix, build_interaction_matrix
from recsys.playlist import (
    POPULAR_REASON,
    PlaylistBlock,
    PlaylistRules,
    generate_playlists,
    popular_playlists,
)
from recsys.settings import Settings
from recsys.tuning import resolve_als_params

log = logging.getLogger(__name__)

ProgressFactory = Callable[[int, str], Any]


class GateRejected(RuntimeError):
    """The validation gate refused to publish the run's model."""


class RunNotActive(RuntimeError):
    """The run was cancelled or has ended; its remaining steps do nothing."""


@dataclass
class WeekReport:
    """What a weekly run did: counts and seconds per stage."""

    week_start: str
    data_dir: str
    run_id: int = 0
    status: str = "running"
    stages: dict[str, float] = field(default_factory=dict)
    aggregation: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    model_version: str | None = None
    listeners: int = 0
    playlists: int = 0
    playlist_tracks: int = 0
    short_playlists: int = 0
    cold_tracks: int = 0
    popular_playlists: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)


def week_paths(settings: Settings, week_start: dt.date) -> tuple[Path, Path]:
    """(aggregates folder, quarantine dataset) of a week under the data directory."""
    key = f"week={week_start.isoformat()}"
    return settings.aggregates_dir / key, settings.quarantine_dir / key


@functools.lru_cache(maxsize=4)
def _engine(database_url: str) -> Engine:
    """One engine (connection pool) per database and process."""
    return make_engine(database_url)


def sessions(settings: Settings) -> Any:
    return make_session_factory(_engine(settings.database_url))


def aggregate_week(settings: Settings, data_dir: Path, week_start: dt.date) -> dict[str, Any]:
    """Run the Spark aggregation for the week on ``settings.spark_master``."""
    from jobs.aggregate import AggregationParams, AggregationPaths, run_aggregation
    from jobs.feedback import export_feedback
    from jobs.spark import get_spark

    root, quarantine = week_paths(settings, week_start)
    root.mkdir(parents=True, exist_ok=True)
    spark = get_spark(settings.spark_master, shuffle_partitions=settings.spark_shuffle_partitions)
    params = AggregationParams(
        cutoff=week_cutoff(week_start),
        skip_weight=settings.skip_weight,
        thumb_up_boost=settings.thumb_up_boost,
        thumb_down_confidence=settings.thumb_down_confidence,
    )
    feedback, thumbs = export_feedback(settings, week_start)
    summary = run_aggregation(
        spark, data_dir, AggregationPaths(root, quarantine), params, extra_thumbs=feedback
    )
    return asdict(summary) | {
        "quarantined_total": summary.quarantined_total,
        "web_thumbs_exported": thumbs,
    }


def _read(path: Path, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    table = pq.read_table(path, columns=columns)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def load_catalog(settings: Settings, week_start: dt.date) -> dict[str, int]:
    """Upsert the week's validated artists, tracks and listeners into the database."""
    root, _ = week_paths(settings, week_start)
    artists = pq.read_table(root / "artists").to_pylist()
    tracks = pq.read_table(
        root / "tracks", columns=["track_id", "title", "artist_id", "duration_ms", "released_at"]
    ).to_pylist()
    users = pq.read_table(root / "users").to_pylist()
    with sessions(settings).begin() as session:
        counts = {
            "artists": repository.upsert_artists(session, artists),
            "tracks": repository.upsert_tracks(session, tracks),
            "users": repository.upsert_users(session, users),
        }
    return counts


@dataclass(frozen=True)
class TrainingData:
    """The week's aggregates as arrays, in the model's row and column order.

    Attributes
    ----------
    matrix : InteractionMatrix
        Confidence of (listener, track) pairs with a non-zero confidence.
    known : scipy.sparse.csr_matrix
        (n_users, n_tracks): every track each listener played or thumbed, whatever its
        confidence; never in their playlist.
    played : scipy.sparse.csr_matrix
        (n_users, n_tracks): the confidence of the pairs the listener actually played (a
        thumb without a play is not here), what "Because you played ..." may name.
    track_artist : numpy.ndarray
        int64 (n_tracks,): dense artist number.
    eligible : numpy.ndarray
        bool (n_tracks,): tracks with at least one listener with a positive confidence.
    track_listeners : numpy.ndarray
        int64 (n_tracks,): listeners with a positive confidence per track.
    track_titles : numpy.ndarray
        str (n_tracks,): "Title — Artist", for explanations.
    outsider_ids : numpy.ndarray
        str: listeners of the users table who are not in the matrix (no events, or only
        events of confidence 0), sorted.
    outsider_known : scipy.sparse.csr_matrix
        (len(outsider_ids), n_tracks): what those listeners played or thumbed.
    """

    matrix: InteractionMatrix
    known: sp.csr_matrix
    track_artist: np.ndarray
    eligible: np.ndarray
    played: sp.csr_matrix
    track_listeners: np.ndarray
    track_titles: np.ndarray
    outsider_ids: np.ndarray
    outsider_known: sp.csr_matrix


def load_training_data(settings: Settings, week_start: dt.date) -> TrainingData:
    """The confidence matrix, what each listener already knows, and track -> artist numbers."""
    root, _ = week_paths(settings, week_start)
    tracks = _read(root / "tracks", ["track_id", "title", "artist_id"])
    artists = _read(root / "artists", ["artist_id", "name"])
    rows = _read(root / "interactions", ["user_id", "track_id", "confidence", "plays"])
    all_users, all_tracks = rows["user_id"].astype(str), rows["track_id"].astype(str)
    confidence = rows["confidence"].astype(np.float32)
    signal = confidence != 0
    matrix = build_interaction_matrix(
        all_users[signal], all_tracks[signal], confidence[signal], tracks["track_id"]
    )
    # Tracks played or thumbed in any way are excluded, whatever their confidence.
    user_rows = matrix.user_index(all_users)
    track_columns = matrix.track_index(all_tracks)
    present = user_rows >= 0
    known = sp.csr_matrix(
        (
            np.ones(int(present.sum()), dtype=np.float32),
            (user_rows[present], track_columns[present]),
        ),
        shape=matrix.shape,
    )
    played_pairs = present & signal & (rows["plays"].astype(np.int64) > 0)
    played = sp.csr_matrix(
        (
            confidence[played_pairs],
            (user_rows[played_pairs], track_columns[played_pairs]),
        ),
        shape=matrix.shape,
    )
    order = np.argsort(tracks["track_id"].astype(str))
    artist_of_sorted = tracks["artist_id"].astype(str)[order]
    _, track_artist = np.unique(artist_of_sorted, return_inverse=True)
    listeners = np.asarray((matrix.user_items > 0).sum(axis=0), dtype=np.int64).ravel()
    artist_names = dict(
        zip(artists["artist_id"].astype(str), artists["name"].astype(str), strict=True)
    )
    titles = np.asarray(
        [
            f"{title} — {artist_names.get(artist, artist)}"
            for title, artist in zip(
                tracks["title"].astype(str)[order], artist_of_sorted, strict=True
            )
        ],
        dtype=str,
    )
    table_users = (
        np.unique(_read(root / "users", ["user_id"])["user_id"].astype(str))
        if (root / "users").exists()
        else np.empty(0, dtype=str)
    )
    outsiders = np.setdiff1d(np.union1d(table_users, all_users), matrix.user_ids)
    outsider_rows = np.searchsorted(outsiders, all_users)
    is_outsider = ~present
    outsider_known = sp.csr_matrix(
        (
            np.ones(int(is_outsider.sum()), dtype=np.float32),
            (outsider_rows[is_outsider], track_columns[is_outsider]),
        ),
        shape=(len(outsiders), matrix.shape[1]),
    )
    return TrainingData(
        matrix=matrix,
        known=known.tocsr(),
        track_artist=track_artist.astype(np.int64),
        eligible=listeners > 0,
        played=played.tocsr(),
        track_listeners=listeners,
        track_titles=titles,
        outsider_ids=outsiders,
        outsider_known=outsider_known.tocsr(),
    )


def load_track_content(
    settings: Settings, week_start: dt.date, track_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Content features of the week's tracks in the order of ``track_ids`` (sorted):
    :func:`recsys.coldstart.content_matrix` of the staged ``embedding`` and ``tags``.

    Returns
    -------
    (content, has_content)
        float32 (n_tracks, d) and bool (n_tracks,); all False when the catalog has neither
        column (a CSV catalog).
    """
    root, _ = week_paths(settings, week_start)
    table = pq.read_table(root / "tracks")
    ids = table.column("track_id").to_numpy(zero_copy_only=False).astype(str)
    order = np.argsort(ids)
    if not np.array_equal(ids[order], np.asarray(track_ids, dtype=str)):
        raise ValueError("the staged tracks do not match the model's tracks")
    names = set(table.column_names)
    embeddings = _embedding_rows(table.column("embedding")) if "embedding" in names else None
    tags = None
    if "tags" in names and table.column("tags").null_count < len(table):
        tags = table.column("tags").to_pylist()
    if embeddings is None and tags is None:
        return np.zeros((len(ids), 1), dtype=np.float32), np.zeros(len(ids), dtype=bool)
    content, has_content = content_matrix(
        embeddings[order] if embeddings is not None else None,
        [tags[i] for i in order] if tags is not None else None,
    )
    return content, has_content


def _embedding_rows(column: pa.ChunkedArray) -> np.ndarray | None:
    """float64 (n, e) with NaN rows where a track has no usable embedding; None when no
    track has one. Rows whose length differs from the most common one, or that hold an
    infinite value, count as missing (logged): one bad catalog row must not stop training."""
    values = column.combine_chunks()
    n = len(values)
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    if n == 0 or lengths.max(initial=0) == 0:
        return None
    width = int(np.argmax(np.bincount(lengths[lengths > 0])))
    good = values.is_valid().to_numpy(zero_copy_only=False) & (lengths == width)
    odd = int(((lengths > 0) & (lengths != width)).sum())
    if odd:
        log.warning("%d tracks have an embedding of another length than %d; ignored", odd, width)
    flat = pc.list_flatten(values.filter(pa.array(good))).to_numpy(zero_copy_only=False)
    result = np.full((n, width), np.nan, dtype=np.float64)
    result[good] = np.asarray(flat, dtype=np.float64).reshape(-1, width)
    infinite = np.isinf(result).any(axis=1)
    if infinite.any():
        log.warning("%d tracks have an infinite value in their embedding; ignored", infinite.sum())
        result[infinite] = np.nan
    return result


def _params(settings: Settings) -> ALSParams:
    """The run's ALS parameters: CRATEDIGGER_ALS_* variables, then DATA_DIR/tuned_params.json,
    then the defaults (:func:`recsys.tuning.resolve_als_params`)."""
    return resolve_als_params(settings).params


def train_week(
    settings: Settings, week_start: dt.date, data: TrainingData, *, show_progress: bool = False
) -> ALSModel:
    """Train ALS, save the artifact under ``models/`` and record it in ``model_versions``.

    The version is the week plus a fingerprint of the input and parameters, so training the
    same week on the same data again yields the same version.
    """
    resolved = resolve_als_params(settings)
    params = resolved.params
    if resolved.tuned_file is not None:
        log.info("training with tuned parameters from %s: %s", resolved.tuned_file, params)
    model = train_als(data.matrix, params, show_progress=show_progress)
    model = attach_cold_start(settings, week_start, model, data.track_listeners)
    model.metadata["params_sources"] = resolved.to_dict()
    version = f"{week_start.isoformat()}-{model.fingerprint[:12]}"
    model.metadata["version"] = version
    model.metadata["week_start"] = week_start.isoformat()
    artifact = model.save(settings.models_dir / version)
    with sessions(settings).begin() as session:
        existing = session.get(ModelVersion, version)
        repository.save_model_version(
            session,
            ModelVersion(
                version=version,
                week_start=week_start,
                fingerprint=model.fingerprint,
                artifact_path=str(artifact),
                params=asdict(params),
                n_users=int(data.matrix.shape[0]),
                n_tracks=int(data.matrix.shape[1]),
                n_interactions=int(data.matrix.user_items.nnz),
                train_seconds=float(model.metadata["train_seconds"]),
                status=existing.status if existing is not None else "trained",
            ),
        )
    return model


def attach_cold_start(
    settings: Settings, week_start: dt.date, model: ALSModel, track_listeners: np.ndarray
) -> ALSModel:
    """The model with content-projected factors for its cold tracks (content, no listener;
    the projection is fitted on tracks with at least ``cold_min_plays`` listeners); unchanged
    when cold start is off (``cold_slots = 0``) or no track is cold."""
    if settings.cold_slots == 0:
        return model
    content, has_content = load_track_content(settings, week_start, model.track_ids)
    return with_cold_start(
        model, content, has_content, track_listeners.astype(np.int64), settings.cold_min_plays
    )


def _cached_training_data(settings: Settings, week_start: dt.date) -> TrainingData:
    """The week's training data, read once per process and aggregation (workers run many
    chunks of the same week; a new aggregation of the week changes the summary's mtime)."""
    root, _ = week_paths(settings, week_start)
    summary = root / "summary.json"
    stamp = summary.stat().st_mtime_ns if summary.exists() else 0
    return _training_data_at(settings, week_start, stamp)


@functools.lru_cache(maxsize=2)
def _training_data_at(settings: Settings, week_start: dt.date, stamp: int) -> TrainingData:
    return load_training_data(settings, week_start)


@functools.lru_cache(maxsize=2)
def _cached_model(artifact_path: str) -> ALSModel:
    return ALSModel.load(Path(artifact_path))


def eligible_listener_rows(settings: Settings, data: TrainingData) -> np.ndarray:
    """Model rows of the listeners who get a personal playlist, in a fixed order."""
    history = np.diff(data.known.indptr)
    return np.flatnonzero(history >= settings.min_user_interactions).astype(np.int64)


def newcomer_ids(settings: Settings, data: TrainingData) -> np.ndarray:
    """Listeners of the users table without usable history (no events the model learnt
    from, or fewer than ``min_user_interactions``), sorted; they get a popular playlist.
    Empty when ``popular_for_new_listeners`` is off."""
    if not settings.popular_for_new_listeners:
        return np.empty(0, dtype=str)
    history = np.diff(data.known.indptr)
    too_short = data.matrix.user_ids[history < settings.min_user_interactions]
    return np.union1d(data.outsider_ids, too_short).astype(str)


def listener_plan(settings: Settings, data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """(personal model rows, newcomer ids): the fixed list of listeners that chunks cut,
    personal ones first."""
    return eligible_listener_rows(settings, data), newcomer_ids(settings, data)


def playlist_rules(settings: Settings) -> PlaylistRules:
    return PlaylistRules(
        length=settings.playlist_length,
        max_tracks_per_artist=settings.max_tracks_per_artist,
        diversity=settings.mmr_diversity,
        popularity_penalty=settings.popularity_penalty,
        pool_factor=settings.rerank_pool_factor,
        cold_slots=settings.cold_slots,
        cold_min_score_ratio=settings.cold_min_score_ratio,
        artist_thumbs_down_limit=settings.artist_thumbs_down_limit,
    )


def uses_cold_start(settings: Settings, model: ALSModel) -> bool:
    return settings.cold_slots > 0 and model.cold_start is not None


def playlist_blocks(
    settings: Settings,
    model: ALSModel,
    known: sp.csr_matrix,
    track_artist: np.ndarray,
    user_rows: np.ndarray,
    *,
    eligible: np.ndarray,
    track_listeners: np.ndarray,
    thumbs_down: sp.csr_matrix | None = None,
) -> Iterator[PlaylistBlock]:
    """The personal playlists of ``user_rows`` block by block, as the product builds them
    (the gate evaluates its holdout model through this too). ``thumbs_down`` (n_users,
    n_tracks) marks thumbed-down tracks, for ``artist_thumbs_down_limit``."""
    cold = uses_cold_start(settings, model)
    scorer = model.scorer(cold_start=cold)
    return generate_playlists(
        scorer,
        known,
        track_artist,
        playlist_rules(settings),
        user_rows=user_rows,
        eligible=eligible,
        block_size=settings.generate_block_size,
        cold_mask=model.cold_start.cold_mask if cold and model.cold_start is not None else None,
        item_factors=scorer.item_factors,
        popularity=track_listeners.astype(np.float64),
        thumbs_down=thumbs_down,
    )


@dataclass
class BuiltPlaylists:
    """Playlists of a chunk of listeners and what they hold."""

    playlists: list[repository.NewPlaylist] = field(default_factory=list)
    short: int = 0
    cold_tracks: int = 0
    popular: int = 0


def build_playlists(
    settings: Settings,
    model: ALSModel,
    data: TrainingData,
    user_rows: np.ndarray,
    newcomers: np.ndarray | None = None,
) -> BuiltPlaylists:
    """Personal playlists (with a reason per track) of the listeners at ``user_rows``, and
    popular playlists of the ``newcomers`` (ids of listeners without usable history)."""
    built = BuiltPlaylists()
    length = settings.playlist_length
    cold = uses_cold_start(settings, model)
    item_factors = model.scorer(cold_start=cold).item_factors
    cold_mask = (
        model.cold_start.cold_mask
        if cold and model.cold_start is not None
        else np.zeros(len(model.track_ids), dtype=bool)
    )
    content = model.cold_start.content if cold and model.cold_start is not None else None
    blocks: Iterator[PlaylistBlock] = playlist_blocks(
        settings,
        model,
        data.known,
        data.track_artist,
        np.asarray(user_rows, dtype=np.int64),
        eligible=data.eligible,
        track_listeners=data.track_listeners,
        # A thumbs-down is the only negative confidence (jobs/aggregate.py).
        thumbs_down=data.matrix.user_items < 0,
    )
    for block in blocks:
        reasons = explain_block(
            data.played[block.user_rows],
            item_factors,
            block.track_columns,
            data.track_titles,
            cold_mask,
            content=content,
        )
        built.cold_tracks += int(block.is_cold.sum())
        for row, columns, scores, row_reasons in zip(
            block.user_rows, block.track_columns, block.scores, reasons, strict=True
        ):
            chosen = columns >= 0
            built.short += int(chosen.sum() < length)
            entries = [
                repository.PlaylistEntry(str(model.track_ids[column]), float(score), reason)
                for column, score, reason in zip(columns, scores, row_reasons, strict=True)
                if column >= 0
            ]
            built.playlists.append(repository.NewPlaylist(str(model.user_ids[row]), entries))
    if newcomers is not None and len(newcomers):
        columns, scores = popular_playlists(
            data.track_listeners.astype(np.float64),
            data.track_artist,
            _known_of(data, newcomers),
            playlist_rules(settings),
            item_factors=model.item_factors,
        )
        for user_id, row_columns, row_scores in zip(newcomers, columns, scores, strict=True):
            chosen = row_columns >= 0
            built.short += int(chosen.sum() < length)
            entries = [
                repository.PlaylistEntry(str(model.track_ids[column]), float(score), POPULAR_REASON)
                for column, score in zip(row_columns[chosen], row_scores[chosen], strict=True)
            ]
            built.playlists.append(repository.NewPlaylist(str(user_id), entries, kind="popular"))
            built.popular += 1
    return built


def _known_of(data: TrainingData, user_ids: np.ndarray) -> sp.csr_matrix:
    """(len(user_ids), n_tracks): what each listener played or thumbed, for listeners in
    the matrix or among the outsiders."""
    ids = np.asarray(user_ids, dtype=str)
    rows = data.matrix.user_index(ids)
    outsider_rows = np.searchsorted(data.outsider_ids, ids)
    parts = []
    for user_id, row, outsider_row in zip(ids, rows, outsider_rows, strict=True):
        if row >= 0:
            parts.append(data.known[row])
        elif outsider_row < len(data.outsider_ids) and data.outsider_ids[outsider_row] == user_id:
            parts.append(data.outsider_known[outsider_row])
        else:
            parts.append(sp.csr_matrix((1, data.known.shape[1]), dtype=np.float32))
    if not parts:
        return sp.csr_matrix((0, data.known.shape[1]), dtype=np.float32)
    return sp.vstack(parts, format="csr")


# ----------------------------------------------------------------------------- run steps


def start_run(settings: Settings, data_dir: Path, week_start: dt.date, trigger: str) -> int:
    """Record a new running run for the week; raises ``RunAlreadyActive`` if one is active."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    with sessions(settings).begin() as session:
        run = repository.start_weekly_run(session, week_start, trigger, str(data_dir))
        run_id = run.id
    log.info("weekly run #%d for the week of %s started (%s)", run_id, week_start, trigger)
    return run_id


@contextmanager
def _step(settings: Settings, run_id: int, name: str, chunk: int = -1) -> Iterator[Any]:
    """Record a step: running, then succeeded (the body may finish it inside its own
    transaction) or failed with the error. A cancelled or ended run does nothing."""
    with sessions(settings).begin() as session:
        run = repository.get_weekly_run(session, run_id)
        if run is None:
            raise ValueError(f"no weekly run #{run_id}")
        if run.status == "cancelling":
            repository.end_weekly_run(
                session, run_id, "cancelled", error=f"cancelled before {name}"
            )
        if run.status not in repository.ACTIVE:
            raise RunNotActive(f"weekly run #{run_id} is {run.status}; skipping {name}")
        repository.begin_step(session, run_id, name, chunk)
        context: dict[str, Any] = {
            "week_start": run.week_start,
            "data_dir": Path(run.data_dir),
            "model_version": run.model_version,
            "finished": False,
        }
    try:
        yield context
    except Exception as exc:
        with sessions(settings).begin() as session:
            repository.finish_step(
                session, run_id, name, chunk=chunk, status="failed", error=_describe(exc)
            )
        raise
    if not context["finished"]:
        with sessions(settings).begin() as session:
            repository.finish_step(session, run_id, name, chunk=chunk, counts=context.get("counts"))


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[:4000]


def step_aggregate(settings: Settings, run_id: int) -> dict[str, Any]:
    """Spark aggregation of the run's data directory, then the catalog into the database."""
    with _step(settings, run_id, "aggregate") as step:
        summary = aggregate_week(settings, step["data_dir"], step["week_start"])
        catalog = load_catalog(settings, step["week_start"])
        step["counts"] = {
            "events_read": summary["events_read"],
            "duplicates_dropped": summary["duplicates_dropped"],
            "quarantined": summary["quarantined"],
            "quarantined_total": summary["quarantined_total"],
            "web_thumbs_exported": summary["web_thumbs_exported"],
            "interactions": summary["interactions"],
            **{f"catalog_{k}": v for k, v in catalog.items()},
        }
    return summary


def step_train(settings: Settings, run_id: int, *, show_progress: bool = False) -> str:
    """Train and record the week's model; returns its version."""
    with _step(settings, run_id, "train") as step:
        data = load_training_data(settings, step["week_start"])
        model = train_week(settings, step["week_start"], data, show_progress=show_progress)
        version = str(model.metadata["version"])
        with sessions(settings).begin() as session:
            run = repository.get_weekly_run(session, run_id)
            assert run is not None
            run.model_version = version
        step["counts"] = {
            "model_version": version,
            "listeners": int(data.matrix.shape[0]),
            "interactions": int(data.matrix.user_items.nnz),
        }
    return version


def step_gate(settings: Settings, run_id: int) -> dict[str, Any]:
    """Compare the run's model with the previous published model and with popularity on a
    recent holdout; a model that falls below either is not published (GateRejected)."""
    from jobs.gate import evaluate_for_gate

    with _step(settings, run_id, "gate") as step:
        decision, metrics = evaluate_for_gate(settings, step["week_start"], step["model_version"])
        with sessions(settings).begin() as session:
            model = session.get(ModelVersion, step["model_version"])
            assert model is not None
            model.metrics = metrics
            model.gate_reason = decision.reason
            if not decision.passed:
                model.status = "rejected"
        step["counts"] = {"passed": decision.passed, "reason": decision.reason, **metrics}
        if not decision.passed:
            raise GateRejected(f"model {step['model_version']} rejected: {decision.reason}")
    return {"passed": decision.passed, "reason": decision.reason, **metrics}


def run_is_active(settings: Settings, run_id: int) -> bool:
    with sessions(settings)() as session:
        run = repository.get_weekly_run(session, run_id)
        return run is not None and run.status == "running"


def plan_chunks(settings: Settings, run_id: int) -> int:
    """How many generate chunks the run has (listeners / generate_chunk_size, rounded up)."""
    with sessions(settings)() as session:
        run = repository.get_weekly_run(session, run_id)
        if run is None:
            raise ValueError(f"no weekly run #{run_id}")
        week_start = run.week_start
    data = _cached_training_data(settings, week_start)
    personal, newcomers = listener_plan(settings, data)
    return max(1, -(-(len(personal) + len(newcomers)) // settings.generate_chunk_size))


def step_generate_chunk(settings: Settings, run_id: int, chunk: int) -> dict[str, int]:
    """Write the playlists of one chunk of listeners, idempotently."""
    with _step(settings, run_id, "generate", chunk) as step:
        data = _cached_training_data(settings, step["week_start"])
        with sessions(settings)() as session:
            model_row = session.get(ModelVersion, step["model_version"])
            assert model_row is not None
            artifact = model_row.artifact_path
        model = _cached_model(artifact)
        personal, newcomers = listener_plan(settings, data)
        size = settings.generate_chunk_size
        first, stop = chunk * size, (chunk + 1) * size
        chunk_rows = personal[first:stop]
        chunk_newcomers = newcomers[max(0, first - len(personal)) : max(0, stop - len(personal))]
        built = build_playlists(settings, model, data, chunk_rows, chunk_newcomers)
        counts = {
            "playlists": len(built.playlists),
            "short": built.short,
            "cold_tracks": built.cold_tracks,
            "popular": built.popular,
        }
        with sessions(settings).begin() as session:
            counts["playlist_tracks"] = repository.replace_week_playlists(
                session, step["week_start"], step["model_version"], built.playlists, run_id
            )
            # Finishing the chunk in the same transaction as its rows: a chunk is either
            # written and marked done, or neither.
            repository.finish_step(session, run_id, "generate", chunk=chunk, counts=counts)
        step["finished"] = True
    return counts


def step_publish(settings: Settings, run_id: int, n_chunks: int) -> dict[str, Any]:
    """Publish the week if every chunk succeeded; in one transaction."""
    with _step(settings, run_id, "publish") as step, sessions(settings).begin() as session:
        statuses = repository.chunk_statuses(session, run_id)
        missing = [c for c in range(n_chunks) if statuses.get(c) != "succeeded"]
        if missing:
            raise RuntimeError(f"chunks not finished: {missing[:20]}")
        visible = repository.publish_week(session, run_id)
        repository.finish_step(session, run_id, "publish", counts={"playlists": visible})
        repository.end_weekly_run(session, run_id, "succeeded")
        step["finished"] = True
    log.info("weekly run #%d published %d playlists for %s", run_id, visible, step["week_start"])
    return {"playlists": visible}


def fail_run(settings: Settings, run_id: int, error: BaseException | str) -> None:
    """Mark the run failed (or cancelled, if that was asked) with the reason."""
    reason = error if isinstance(error, str) else _describe(error)
    with sessions(settings).begin() as session:
        run = repository.get_weekly_run(session, run_id)
        if run is None or run.status not in repository.ACTIVE:
            return
        status = "cancelled" if run.status == "cancelling" else "failed"
        repository.end_weekly_run(session, run_id, status, error=reason)
    log.error("weekly run #%d %s: %s", run_id, status, reason)


# ------------------------------------------------------------------------- in-process run


@contextmanager
def _timed(report: WeekReport, name: str) -> Iterator[None]:
    started = time.perf_counter()
    log.info("stage %s started", name)
    yield
    report.stages[name] = round(time.perf_counter() - started, 3)
    log.info("stage %s finished in %.2f s", name, report.stages[name])


def _generate_all_chunks(
    settings: Settings, report: WeekReport, progress: ProgressFactory | None
) -> int:
    """Every generate chunk of the run, one after another, counted into ``report``."""
    n_chunks = plan_chunks(settings, report.run_id)
    bar = progress(n_chunks, "generate chunks") if progress else None
    for chunk in range(n_chunks):
        counts = step_generate_chunk(settings, report.run_id, chunk)
        report.playlist_tracks += counts["playlist_tracks"]
        report.short_playlists += counts["short"]
        report.listeners += counts["playlists"]
        report.cold_tracks += counts["cold_tracks"]
        report.popular_playlists += counts["popular"]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return n_chunks


def run_in_process(
    settings: Settings,
    data_dir: Path,
    week_start: dt.date,
    *,
    trigger: str = "cli",
    progress: ProgressFactory | None = None,
) -> WeekReport:
    """All steps of the week in this process (the embedded default): the same step
    functions the Celery tasks run. Raises GateRejected if the gate refuses the model."""
    report = WeekReport(week_start=week_start.isoformat(), data_dir=str(data_dir))
    report.run_id = start_run(settings, data_dir, week_start, trigger)
    try:
        with _timed(report, "aggregate"):
            summary = step_aggregate(settings, report.run_id)
        report.aggregation = summary
        with _timed(report, "train"):
            report.model_version = step_train(
                settings, report.run_id, show_progress=progress is not None
            )
        with _timed(report, "gate"):
            report.gate = step_gate(settings, report.run_id)
        with _timed(report, "generate"):
            n_chunks = _generate_all_chunks(settings, report, progress)
            log.info(
                "%d cold-start tracks entered playlists; %d popular playlists for listeners "
                "without history",
                report.cold_tracks,
                report.popular_playlists,
            )
        with _timed(report, "publish"):
            report.playlists = step_publish(settings, report.run_id, n_chunks)["playlists"]
        report.status = "succeeded"
    except BaseException as exc:
        fail_run(settings, report.run_id, exc)
        raise
    finally:
        settings.runs_dir.mkdir(parents=True, exist_ok=True)
        (settings.runs_dir / f"run-{report.run_id}.json").write_text(report.to_json())
    return report


def generate_and_publish(
    settings: Settings, week_start: dt.date, *, progress: ProgressFactory | None = None
) -> WeekReport:
    """Build and publish the week's playlists with the week's newest trained model, without
    aggregating, training or gating again (an operator's explicit choice)."""
    with sessions(settings)() as session:
        model_row = repository.newest_model_version(session, week_start)
    if model_row is None:
        raise ValueError(f"no model trained for the week of {week_start}; run `cratedigger train`")
    report = WeekReport(week_start=week_start.isoformat(), data_dir="")
    report.run_id = start_run(settings, settings.events_source, week_start, "cli-generate")
    report.model_version = model_row.version
    try:
        with sessions(settings).begin() as session:
            run = repository.get_weekly_run(session, report.run_id)
            assert run is not None
            run.model_version = model_row.version
        n_chunks = _generate_all_chunks(settings, report, progress)
        report.playlists = step_publish(settings, report.run_id, n_chunks)["playlists"]
        report.status = "succeeded"
    except BaseException as exc:
        fail_run(settings, report.run_id, exc)
        raise
    return report


def regenerate_listener(settings: Settings, user_id: str, week_start: dt.date) -> int:
    """Rebuild one listener's playlist of a published week with that week's model.

    Returns the number of tracks written. Raises ValueError if the week is not published or
    the listener gets no playlist in it (no history, and no popular playlist either).
    """
    with sessions(settings)() as session:
        publication = session.get(WeekPublication, week_start)
        if publication is None:
            raise ValueError(f"the week of {week_start} has not been published")
        run_id, version = publication.weekly_run_id, publication.model_version
        model_row = session.get(ModelVersion, version)
        assert model_row is not None
        artifact = model_row.artifact_path
    data = _cached_training_data(settings, week_start)
    model = _cached_model(artifact)
    personal, newcomers = listener_plan(settings, data)
    rows = data.matrix.user_index([user_id])
    if rows[0] >= 0 and np.isin(rows[0], personal):
        built = build_playlists(settings, model, data, rows)
    elif np.isin(user_id, newcomers):
        built = build_playlists(settings, model, data, rows[:0], np.asarray([user_id]))
    else:
        raise ValueError(f"listener {user_id!r} has no history before the week of {week_start}")
    with sessions(settings).begin() as session:
        return repository.replace_week_playlists(
            session, week_start, version, built.playlists, run_id
        )

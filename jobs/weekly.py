"""The weekly run's steps: aggregate -> load catalog -> train -> generate playlists.

Each step is a function over the settings and the week, so that the CLI runs them
in-process (the embedded default) and Celery tasks can run the same functions later.
Only events strictly before the week's Monday 00:00 UTC are used.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys.als import ALSModel, ALSParams, train_als
from recsys.contract import week_cutoff
from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.migrate import upgrade
from recsys.db.models import ModelVersion
from recsys.matrix import InteractionMatrix, build_interaction_matrix
from recsys.playlist import PlaylistRules, generate_playlists
from recsys.settings import Settings

log = logging.getLogger(__name__)

ProgressFactory = Callable[[int, str], Any]


@dataclass
class WeekReport:
    """What a weekly run did: counts and seconds per stage."""

    week_start: str
    data_dir: str
    stages: dict[str, float] = field(default_factory=dict)
    aggregation: dict[str, Any] = field(default_factory=dict)
    model_version: str | None = None
    listeners: int = 0
    playlists: int = 0
    playlist_tracks: int = 0
    short_playlists: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)


def week_paths(settings: Settings, week_start: dt.date) -> tuple[Path, Path]:
    """(aggregates folder, quarantine dataset) of a week under the data directory."""
    key = f"week={week_start.isoformat()}"
    return settings.aggregates_dir / key, settings.quarantine_dir / key


@contextmanager
def _stage(report: WeekReport, name: str) -> Iterator[None]:
    started = time.perf_counter()
    log.info("stage %s started", name)
    yield
    report.stages[name] = round(time.perf_counter() - started, 3)
    log.info("stage %s finished in %.2f s", name, report.stages[name])


def aggregate_week(settings: Settings, data_dir: Path, week_start: dt.date) -> dict[str, Any]:
    """Run the Spark aggregation for the week on ``settings.spark_master``."""
    from jobs.aggregate import AggregationParams, AggregationPaths, run_aggregation
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
    summary = run_aggregation(spark, data_dir, AggregationPaths(root, quarantine), params)
    return asdict(summary) | {"quarantined_total": summary.quarantined_total}


def _read(path: Path, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    table = pq.read_table(path, columns=columns)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def load_catalog(settings: Settings, week_start: dt.date) -> dict[str, int]:
    """Upsert the week's validated artists, tracks and listeners into the database."""
    root, _ = week_paths(settings, week_start)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    artists = pq.read_table(root / "artists").to_pylist()
    tracks = pq.read_table(
        root / "tracks", columns=["track_id", "title", "artist_id", "duration_ms", "released_at"]
    ).to_pylist()
    users = pq.read_table(root / "users").to_pylist()
    with sessions.begin() as session:
        counts = {
            "artists": repository.upsert_artists(session, artists),
            "tracks": repository.upsert_tracks(session, tracks),
            "users": repository.upsert_users(session, users),
        }
    engine.dispose()
    return counts


@dataclass(frozen=True)
class TrainingData:
    matrix: InteractionMatrix
    known: sp.csr_matrix
    track_artist: np.ndarray
    eligible: np.ndarray


def load_training_data(settings: Settings, week_start: dt.date) -> TrainingData:
    """The confidence matrix, what each listener already knows, and track -> artist numbers."""
    root, _ = week_paths(settings, week_start)
    tracks = _read(root / "tracks", ["track_id", "artist_id"])
    rows = _read(root / "interactions", ["user_id", "track_id", "confidence"])
    all_users, all_tracks = rows["user_id"].astype(str), rows["track_id"].astype(str)
    confidence = rows["confidence"].astype(np.float32)
    signal = confidence != 0
    matrix = build_interaction_matrix(
        all_users[signal], all_tracks[signal], confidence[signal], tracks["track_id"]
    )
    # Tracks played or thumbed in any way are excluded, whatever their confidence.
    user_rows = matrix.user_index(all_users)
    present = user_rows >= 0
    known = sp.csr_matrix(
        (
            np.ones(int(present.sum()), dtype=np.float32),
            (user_rows[present], matrix.track_index(all_tracks[present])),
        ),
        shape=matrix.shape,
    )
    order = np.argsort(tracks["track_id"].astype(str))
    artist_of_sorted = tracks["artist_id"].astype(str)[order]
    _, track_artist = np.unique(artist_of_sorted, return_inverse=True)
    positive = matrix.user_items.copy()
    positive.data = (positive.data > 0).astype(np.float32)
    eligible = np.asarray(positive.sum(axis=0)).ravel() > 0
    return TrainingData(matrix, known.tocsr(), track_artist.astype(np.int64), eligible)


def train_week(
    settings: Settings, week_start: dt.date, data: TrainingData, *, show_progress: bool = False
) -> ALSModel:
    """Train ALS, save the artifact under ``models/`` and record it in ``model_versions``."""
    params = ALSParams(
        factors=settings.als_factors,
        regularization=settings.als_regularization,
        alpha=settings.als_alpha,
        iterations=settings.als_iterations,
        random_seed=settings.als_random_seed,
    )
    model = train_als(data.matrix, params, show_progress=show_progress)
    version = f"{week_start.isoformat()}-{model.fingerprint[:12]}"
    model.metadata["version"] = version
    model.metadata["week_start"] = week_start.isoformat()
    artifact = model.save(settings.models_dir / version)
    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
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
                status="trained",
            ),
        )
    engine.dispose()
    return model


def generate_week(
    settings: Settings,
    week_start: dt.date,
    model: ALSModel,
    data: TrainingData,
    *,
    progress: ProgressFactory | None = None,
) -> dict[str, int]:
    """Write every eligible listener's playlist for the week, one transaction per block."""
    rules = PlaylistRules(settings.playlist_length, settings.max_tracks_per_artist)
    history = np.diff(data.known.indptr)
    user_rows = np.flatnonzero(history >= settings.min_user_interactions)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    version = str(model.metadata["version"])
    counts = {"listeners": len(user_rows), "playlists": 0, "playlist_tracks": 0, "short": 0}
    bar = progress(len(user_rows), "generate") if progress else None
    blocks = generate_playlists(
        model,
        data.known,
        data.track_artist,
        rules,
        user_rows=user_rows,
        eligible=data.eligible,
        block_size=settings.generate_block_size,
    )
    for block in blocks:
        playlists = []
        for row, columns, scores in zip(
            block.user_rows, block.track_columns, block.scores, strict=True
        ):
            chosen = columns >= 0
            if chosen.sum() < rules.length:
                counts["short"] += 1
            entries = [
                repository.PlaylistEntry(str(track), float(score))
                for track, score in zip(
                    model.track_ids[columns[chosen]], scores[chosen], strict=True
                )
            ]
            playlists.append(repository.NewPlaylist(str(model.user_ids[row]), entries))
        with sessions.begin() as session:
            counts["playlist_tracks"] += repository.replace_week_playlists(
                session, week_start, version, playlists
            )
        counts["playlists"] += len(playlists)
        if bar is not None:
            bar.update(len(block.user_rows))
    if bar is not None:
        bar.close()
    if counts["short"]:
        log.warning("%d listeners got fewer than %d tracks", counts["short"], rules.length)
    engine.dispose()
    return counts


def run_week(
    settings: Settings,
    data_dir: Path,
    week_start: dt.date,
    *,
    progress: ProgressFactory | None = None,
) -> WeekReport:
    """All steps for one week, in-process. Running a week again replaces its playlists."""
    report = WeekReport(week_start=week_start.isoformat(), data_dir=str(data_dir))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _stage(report, "migrate"):
        upgrade(settings.database_url)
    with _stage(report, "aggregate"):
        report.aggregation = aggregate_week(settings, data_dir, week_start)
    with _stage(report, "load_catalog"):
        load_catalog(settings, week_start)
    with _stage(report, "build_matrix"):
        data = load_training_data(settings, week_start)
    with _stage(report, "train"):
        model = train_week(settings, week_start, data, show_progress=progress is not None)
    report.model_version = str(model.metadata["version"])
    with _stage(report, "generate"):
        counts = generate_week(settings, week_start, model, data, progress=progress)
    report.listeners = counts["listeners"]
    report.playlists = counts["playlists"]
    report.playlist_tracks = counts["playlist_tracks"]
    report.short_playlists = counts["short"]
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    (settings.runs_dir / f"week={week_start.isoformat()}.json").write_text(report.to_json())
    return report


def load_model_for_week(settings: Settings, week_start: dt.date) -> ALSModel:
    """The newest model trained for the week.

    Raises
    ------
    ValueError
        If no model has been trained for that week.
    """
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        version = repository.newest_model_version(session, week_start)
    engine.dispose()
    if version is None:
        raise ValueError(f"no model trained for the week of {week_start}; run `cratedigger train`")
    return ALSModel.load(Path(version.artifact_path))

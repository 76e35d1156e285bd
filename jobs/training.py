"""A week's aggregates as model input: paths, catalog, training data, track content,
training (with the cold-start projection) and the per-process caches of a week's data and
model that generation chunks share."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from jobs.db import sessions
from recsys.als import ALSModel, ALSParams, train_als, with_cold_start
from recsys.coldstart import content_matrix
from recsys.contract import week_cutoff
from recsys.db import repository
from recsys.db.models import ModelVersion
from recsys.matrix import InteractionMatrix, build_interaction_matrix
from recsys.settings import Settings
from recsys.tuning import TUNED_FIELDS, TUNED_PARAMS_FILE, load_tuned_params

if TYPE_CHECKING:
    from jobs.aggregate import AggregationPaths

log = logging.getLogger(__name__)


#: The aggregation folder of a week's layout before per-run aggregations: the week's
#: folder itself (``aggregates/week=W/``).
LEGACY_AGGREGATION = ""
#: Aggregation folders: ``run-<id>`` (a weekly run's), ``cli-<time>`` (`cratedigger aggregate`).
_PREFIXES = ("run-", "cli-")


def _week_folders(settings: Settings, week_start: dt.date) -> tuple[Path, Path, Path]:
    """The week's folders of aggregates, quarantine and exported web thumbs."""
    key = f"week={week_start.isoformat()}"
    return (
        settings.aggregates_dir / key,
        settings.quarantine_dir / key,
        settings.data_dir / "feedback" / key,
    )


def week_aggregations(settings: Settings, week_start: dt.date) -> list[str]:
    """The week's complete aggregations (their summary is written last), oldest first."""
    root = _week_folders(settings, week_start)[0]
    done = [p.parent for p in root.glob("*/summary.json")] if root.is_dir() else []
    done.sort(key=lambda p: (p.joinpath("summary.json").stat().st_mtime_ns, p.name))
    return [p.name for p in done]


def resolve_aggregation(
    settings: Settings, week_start: dt.date, aggregation: str | None = None
) -> str:
    """``aggregation``, checked; None: the week's newest complete aggregation, else the
    legacy layout."""
    if aggregation is None:
        done = week_aggregations(settings, week_start)
        return done[-1] if done else LEGACY_AGGREGATION
    if aggregation != LEGACY_AGGREGATION and (
        "/" in aggregation or "\\" in aggregation or aggregation.startswith(".")
    ):
        raise ValueError(f"{aggregation!r} is not an aggregation folder name")
    return aggregation


def week_paths(
    settings: Settings, week_start: dt.date, aggregation: str | None = None
) -> AggregationPaths:
    """Where an aggregation of the week lives: ``aggregates/week=W/<aggregation>/`` and
    ``quarantine/week=W/<aggregation>/``.

    Each weekly run aggregates into a folder of its own (``run-<id>``), so a run killed
    half-way never touches the aggregates of the week's published run; the published run
    names the week's current one. Without ``aggregation``: the week's newest complete
    aggregation, else the week's folder itself (the layout before per-run aggregations).
    """
    from jobs.aggregate import AggregationPaths

    root, quarantine, _ = _week_folders(settings, week_start)
    key = resolve_aggregation(settings, week_start, aggregation)
    return AggregationPaths(root / key, quarantine / key)


def feedback_folder(settings: Settings, week_start: dt.date, aggregation: str) -> Path:
    """Where the aggregation ``aggregation`` of the week reads the web app's thumbs from."""
    return _week_folders(settings, week_start)[2] / resolve_aggregation(
        settings, week_start, aggregation
    )


def remove_aggregations(
    settings: Settings, week_start: dt.date, keep: set[str], *, prefix: str | None = None
) -> None:
    """Delete the week's aggregations (with their quarantine and exported thumbs) other
    than ``keep``, and the legacy layout's files unless ``keep`` holds it; with ``prefix``
    only the aggregations whose name starts with it. Best effort, logged."""
    import shutil

    candidates = (prefix,) if prefix is not None else _PREFIXES
    for base in _week_folders(settings, week_start):
        if not base.is_dir():
            continue
        for entry in base.iterdir():
            if entry.name in keep:
                continue
            if not entry.name.startswith(candidates) and (
                prefix is not None or LEGACY_AGGREGATION in keep
            ):
                continue
            try:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError as exc:
                log.warning("could not remove the old aggregation %s: %s", entry, exc)


def aggregate_week(
    settings: Settings, data_dir: Path, week_start: dt.date, aggregation: str | None = None
) -> dict[str, Any]:
    """Run the Spark aggregation for the week on ``settings.spark_master`` into the
    week's folder ``aggregation`` (replaced whole if it exists).

    Without ``aggregation`` (the ``aggregate``, ``evaluate`` and ``tune`` commands), into
    a new ``cli-<time>`` folder, which then replaces the week's earlier ``cli-`` ones; the
    folders of weekly runs are left alone.
    """
    manual = aggregation is None
    if aggregation is None:
        aggregation = f"cli-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}"
    import shutil

    from jobs.aggregate import AggregationParams, run_aggregation
    from jobs.feedback import export_feedback
    from jobs.spark import get_spark

    paths = week_paths(settings, week_start, aggregation)
    for folder in (paths.root, paths.quarantine):
        if folder.exists():  # a retried step starts again from nothing
            shutil.rmtree(folder)
    paths.root.mkdir(parents=True, exist_ok=True)
    spark = get_spark(settings.spark_master, shuffle_partitions=settings.spark_shuffle_partitions)
    params = AggregationParams.from_settings(settings, week_cutoff(week_start))
    feedback, thumbs = export_feedback(settings, week_start, aggregation)
    summary = run_aggregation(spark, data_dir, paths, params, extra_thumbs=feedback)
    if manual:
        remove_aggregations(settings, week_start, {aggregation}, prefix="cli-")
    return asdict(summary) | {
        "quarantined_total": summary.quarantined_total,
        "web_thumbs_exported": thumbs,
        "aggregation": aggregation,
    }


def _read(path: Path, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    table = pq.read_table(path, columns=columns)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def load_catalog(
    settings: Settings, week_start: dt.date, aggregation: str | None = None
) -> dict[str, int]:
    """Upsert the week's validated artists, tracks and listeners into the database."""
    root = week_paths(settings, week_start, aggregation).root
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


def load_training_data(
    settings: Settings, week_start: dt.date, aggregation: str | None = None
) -> TrainingData:
    """The confidence matrix, what each listener already knows, and track -> artist numbers."""
    root = week_paths(settings, week_start, aggregation).root
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
    settings: Settings, week_start: dt.date, track_ids: np.ndarray, aggregation: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Content features of the week's tracks in the order of ``track_ids`` (sorted):
    :func:`recsys.coldstart.content_matrix` of the staged ``embedding`` and ``tags``.

    Returns
    -------
    (content, has_content)
        float32 (n_tracks, d) and bool (n_tracks,); all False when the catalog has neither
        column (a CSV catalog).
    """
    root = week_paths(settings, week_start, aggregation).root
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


def als_params(settings: Settings) -> ALSParams:
    """The run's ALS parameters: CRATEDIGGER_ALS_* variables, then DATA_DIR/tuned_params.json,
    then the defaults (:func:`resolve_als_params`)."""
    return resolve_als_params(settings).params


def train_week(
    settings: Settings,
    week_start: dt.date,
    data: TrainingData,
    *,
    aggregation: str | None = None,
    show_progress: bool = False,
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
    model = attach_cold_start(settings, week_start, model, data.track_listeners, aggregation)
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
    settings: Settings,
    week_start: dt.date,
    model: ALSModel,
    track_listeners: np.ndarray,
    aggregation: str | None = None,
) -> ALSModel:
    """The model with content-projected factors for its cold tracks (content, no listener;
    the projection is fitted on tracks with at least ``cold_min_plays`` listeners); unchanged
    when cold start is off (``cold_slots = 0``) or no track is cold."""
    if settings.cold_slots == 0:
        return model
    content, has_content = load_track_content(settings, week_start, model.track_ids, aggregation)
    return with_cold_start(
        model, content, has_content, track_listeners.astype(np.int64), settings.cold_min_plays
    )


def cached_training_data(
    settings: Settings, week_start: dt.date, aggregation: str | None = None
) -> TrainingData:
    """The week's training data, read once per process and aggregation (workers run many
    chunks of the same week; a new aggregation into the same folder changes the summary's
    mtime)."""
    key = resolve_aggregation(settings, week_start, aggregation)
    summary = week_paths(settings, week_start, key).summary
    stamp = summary.stat().st_mtime_ns if summary.exists() else 0
    return _training_data_at(settings, week_start, key, stamp)


@functools.lru_cache(maxsize=2)
def _training_data_at(
    settings: Settings, week_start: dt.date, aggregation: str, stamp: int
) -> TrainingData:
    return load_training_data(settings, week_start, aggregation)


@functools.lru_cache(maxsize=2)
def cached_model(artifact_path: str) -> ALSModel:
    return ALSModel.load(Path(artifact_path))


# ------------------------------------------------------------------ which ALS parameters

_SETTING_OF = {name: f"als_{name}" for name in (*TUNED_FIELDS, "random_seed")}


def tuned_params_path(settings: Settings) -> Path:
    """Where ``cratedigger tune`` saves, and the weekly run reads, the tuned parameters."""
    return settings.data_dir / TUNED_PARAMS_FILE


@dataclass(frozen=True)
class ResolvedParams:
    """The ALS parameters of a run and where each one came from.

    Attributes
    ----------
    params : ALSParams
    sources : dict
        Field name -> ``"environment"``, ``"tuned"`` or ``"default"``.
    tuned_file : str or None
        The tuned parameters' file when it supplied at least one parameter.
    """

    params: ALSParams
    sources: dict[str, str]
    tuned_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sources": self.sources, "tuned_file": self.tuned_file}


def resolve_als_params(settings: Settings) -> ResolvedParams:
    """The ALS parameters of the weekly run, by the precedence of this module's docstring.

    Raises
    ------
    ValueError
        If the tuned parameters' file exists, is to be used, and cannot be read.
    """
    explicit = settings.model_fields_set
    values = {name: getattr(settings, setting) for name, setting in _SETTING_OF.items()}
    sources = {
        name: "environment" if setting in explicit else "default"
        for name, setting in _SETTING_OF.items()
    }
    path = tuned_params_path(settings)
    used_file: str | None = None
    if settings.use_tuned_params and path.is_file():
        tuned = load_tuned_params(path)
        for name in TUNED_FIELDS:
            if sources[name] == "default":
                values[name] = getattr(tuned.params, name)
                sources[name] = "tuned"
                used_file = str(path)
    params = ALSParams(**values)
    if used_file is not None:
        log.info("ALS parameters %s (tuned ones from %s)", sources, used_file)
    return ResolvedParams(params, sources, used_file)

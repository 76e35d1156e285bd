"""A week of the weekly run, built once: where its aggregation lives, its training data as
arrays, the shipped playlist policy and the fixed list of listeners that chunks cut.

The step entry points of :mod:`jobs.weekly` read the settings once into the typed objects
of this module (:meth:`Storage.of`, :meth:`PlaylistPolicy.of`) and open the week with
:func:`open_week`; everything below them takes those objects, never the settings. A process
opens each aggregation once (the generate chunks of a Celery worker share it).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys.coldstart import content_matrix
from recsys.contract import TRACK_COLUMNS, TRACK_DISPLAY_COLUMNS, age_in_days, week_cutoff
from recsys.db import repository
from recsys.matrix import InteractionMatrix, PairCounts, build_interaction_matrix
from recsys.pipeline import PlaylistPipeline
from recsys.playlist import PlaylistRules
from recsys.recommender import Recommender
from recsys.settings import Settings
from recsys.tuning import TUNED_PARAMS_FILE, RerankKnobs, TunedParams, load_tuned_params

if TYPE_CHECKING:
    from jobs.aggregate import AggregationPaths  # the Spark job's module: imported lazily

log = logging.getLogger(__name__)

#: The aggregation folder of a week's layout before per-run aggregations: the week's
#: folder itself (``aggregates/week=W/``).
LEGACY_AGGREGATION = ""
#: Aggregation folders: ``run-<id>`` (a weekly run's), ``cli-<time>`` (`cratedigger aggregate`).
_PREFIXES = ("run-", "cli-")


@dataclass(frozen=True)
class Storage:
    """Where a deployment keeps its files (all under ``CRATEDIGGER_DATA_DIR``).

    Each weekly run aggregates into a folder of its own, ``aggregates/week=W/run-<id>/``
    (with ``quarantine/`` and ``feedback/`` beside it), so a run killed half-way never
    touches the aggregates of the week's published run; the published run names the
    week's current one.
    """

    data_dir: Path

    @classmethod
    def of(cls, settings: Settings) -> Storage:
        return cls(settings.data_dir)

    @property
    def tuned_params(self) -> Path:
        """Where ``cratedigger tune`` saves, and the weekly run reads, the tuned parameters."""
        return self.data_dir / TUNED_PARAMS_FILE

    def tuned(self, use: bool = True) -> TunedParams | None:
        """The weekly search's saved result (:attr:`tuned_params`) when it exists and ``use``
        (``CRATEDIGGER_USE_TUNED_PARAMS``).

        Raises
        ------
        ValueError
            If the file exists, is to be used, and cannot be read.
        """
        path = self.tuned_params
        return load_tuned_params(path) if use and path.is_file() else None

    def _folders(self, week_start: dt.date) -> tuple[Path, Path, Path]:
        """The week's folders of aggregates, quarantine and exported web thumbs."""
        key = f"week={week_start.isoformat()}"
        aggregates, quarantine, feedback = (
            self.data_dir / kind / key for kind in ("aggregates", "quarantine", "feedback")
        )
        return aggregates, quarantine, feedback

    def aggregations(self, week_start: dt.date) -> list[str]:
        """The week's complete aggregations (their summary is written last), oldest first."""
        root = self._folders(week_start)[0]
        done = [p.parent for p in root.glob("*/summary.json")] if root.is_dir() else []
        done.sort(key=lambda p: (p.joinpath("summary.json").stat().st_mtime_ns, p.name))
        return [p.name for p in done]

    def resolve(self, week_start: dt.date, aggregation: str | None = None) -> str:
        """``aggregation``, checked; None: the week's newest complete aggregation, else the
        legacy layout."""
        if aggregation is None:
            done = self.aggregations(week_start)
            return done[-1] if done else LEGACY_AGGREGATION
        if aggregation != LEGACY_AGGREGATION and (
            "/" in aggregation or "\\" in aggregation or aggregation.startswith(".")
        ):
            raise ValueError(f"{aggregation!r} is not an aggregation folder name")
        return aggregation

    def paths(self, week_start: dt.date, aggregation: str | None = None) -> AggregationPaths:
        """Where an aggregation of the week lives (default: :meth:`resolve`)."""
        from jobs.aggregate import AggregationPaths

        root, quarantine, _ = self._folders(week_start)
        key = self.resolve(week_start, aggregation)
        return AggregationPaths(root / key, quarantine / key)

    def feedback(self, week_start: dt.date, aggregation: str) -> Path:
        """Where the aggregation ``aggregation`` of the week reads the web app's thumbs from."""
        return self._folders(week_start)[2] / self.resolve(week_start, aggregation)

    def remove(self, week_start: dt.date, keep: set[str], *, prefix: str | None = None) -> None:
        """Delete the week's aggregations (with their quarantine and exported thumbs) other
        than ``keep``, and the legacy layout's files unless ``keep`` holds it; with ``prefix``
        only the aggregations whose name starts with it. Best effort, logged."""
        candidates = (prefix,) if prefix is not None else _PREFIXES
        for base in self._folders(week_start):
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
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                except OSError as exc:
                    log.warning("could not remove the old aggregation %s: %s", entry, exc)


#: Fields of :class:`PlaylistPolicy` and its rules whose setting has another name.
_SETTING_OF = {
    "length": "playlist_length",
    "diversity": "mmr_diversity",
    "pool_factor": "rerank_pool_factor",
    "block_size": "generate_block_size",
    "memory_mb": "generate_memory_mb",
    "chunk_size": "generate_chunk_size",
}


@dataclass(frozen=True)
class PlaylistPolicy:
    """The shipped playlists: the rules, who gets which kind of playlist, and how the
    work is cut (``CRATEDIGGER_*`` settings of the same names).

    The re-ranking knobs (``CRATEDIGGER_MMR_DIVERSITY``, ``CRATEDIGGER_POPULARITY_PENALTY``)
    come from their variable when it is set, else from ``tuned_params.json`` when the weekly
    search chose them there (and ``CRATEDIGGER_USE_TUNED_PARAMS`` is true), else from the
    defaults: the precedence of the model's parameters (:mod:`jobs.training`).
    """

    rules: PlaylistRules
    min_user_interactions: int = 1
    popular_for_new_listeners: bool = True
    cold_min_plays: int = 5
    block_size: int = 2048
    memory_mb: float = 1024
    chunk_size: int = 5000
    #: The knobs the weekly search's re-ranking stage must stay as diverse and novel as:
    #: the configured ones (never earlier tuned ones); None when either is set in the
    #: environment (then they are fixed, not searched).
    rerank_bound: RerankKnobs | None = None

    @classmethod
    def of(cls, settings: Settings) -> PlaylistPolicy:
        def read(kind: type) -> dict[str, Any]:
            names = [f.name for f in fields(kind) if f.name not in ("rules", "rerank_bound")]
            return {name: getattr(settings, _SETTING_OF.get(name, name)) for name in names}

        rules = PlaylistRules(**read(PlaylistRules))
        bound = (
            None
            if settings.model_fields_set & {"mmr_diversity", "popularity_penalty"}
            else RerankKnobs(rules.diversity, rules.popularity_penalty)
        )
        tuned = Storage.of(settings).tuned(settings.use_tuned_params)
        knobs = None if tuned is None else tuned.rerank
        if knobs is not None:
            explicit = settings.model_fields_set
            if "mmr_diversity" not in explicit:
                rules = replace(rules, diversity=knobs.diversity)
            if "popularity_penalty" not in explicit:
                rules = replace(rules, popularity_penalty=knobs.popularity_penalty)
        return cls(rules, **read(cls), rerank_bound=bound)

    def with_rerank(self, knobs: RerankKnobs) -> PlaylistPolicy:
        """The same policy with other re-ranking knobs."""
        rules = replace(
            self.rules, diversity=knobs.diversity, popularity_penalty=knobs.popularity_penalty
        )
        return replace(self, rules=rules)

    @property
    def rerank(self) -> RerankKnobs:
        return RerankKnobs(self.rules.diversity, self.rules.popularity_penalty)

    def pipeline(
        self, model: Recommender, track_artist: np.ndarray, track_listeners: np.ndarray
    ) -> PlaylistPipeline:
        """The shipped pipeline over ``model`` and a week's catalog arrays: what the weekly
        run publishes and what the gate and ``evaluate`` measure."""
        return PlaylistPipeline(
            self.rules,
            model,
            np.asarray(track_artist, dtype=np.int64),
            np.asarray(track_listeners, dtype=np.int64),
            block_size=self.block_size,
            memory_bytes=int(self.memory_mb * 2**20),
        )

    def plan(self, data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
        """(personal model rows, newcomer ids): the fixed list of listeners that chunks
        cut, personal ones first. Newcomers are the listeners of the users table without
        usable history (no events the model learnt from, or fewer than
        ``min_user_interactions``), sorted; they get a popular playlist, unless
        ``popular_for_new_listeners`` is off."""
        history = np.diff(data.known.indptr)
        personal = np.flatnonzero(history >= self.min_user_interactions).astype(np.int64)
        if not self.popular_for_new_listeners:
            return personal, np.empty(0, dtype=str)
        too_short = data.matrix.user_ids[history < self.min_user_interactions]
        return personal, np.union1d(data.outsider_ids, too_short).astype(str)


@dataclass(frozen=True)
class TrainingData:
    """The week's aggregates as arrays, in the model's row and column order.

    Attributes
    ----------
    matrix : InteractionMatrix
        Confidence of (listener, track) pairs with a non-zero confidence, as aggregated.
    pairs : PairCounts
        The counts of the same pairs, over the same rows and columns: the matrix under
        other confidence weights (what the week's model trains on, ``jobs.training``).
    known : scipy.sparse.csr_matrix
        (n_users, n_tracks): every track each listener played or thumbed, whatever its
        confidence; never in their playlist.
    played : scipy.sparse.csr_matrix
        (n_users, n_tracks): the confidence of the pairs the listener actually played (a
        thumb without a play is not here), what "Because you played ..." may name.
    track_artist : numpy.ndarray
        int64 (n_tracks,): dense artist number.
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
    pairs: PairCounts
    known: sp.csr_matrix
    track_artist: np.ndarray
    played: sp.csr_matrix
    track_listeners: np.ndarray
    track_titles: np.ndarray
    outsider_ids: np.ndarray
    outsider_known: sp.csr_matrix


@dataclass(frozen=True, eq=False)
class Week:
    """One aggregation of a week, opened once: its paths, training data and listener plan.

    Attributes
    ----------
    start : datetime.date
        The week's Monday.
    aggregation : str
        The aggregation folder's name (:meth:`Storage.resolve`).
    paths : AggregationPaths
    policy : PlaylistPolicy
    data : TrainingData
    personal : numpy.ndarray
        int64: model rows of the listeners with a personal playlist, in order.
    newcomers : numpy.ndarray
        str: sorted ids of the listeners who get a popular playlist.
    """

    start: dt.date
    aggregation: str
    paths: AggregationPaths
    policy: PlaylistPolicy
    data: TrainingData
    personal: np.ndarray
    newcomers: np.ndarray

    @classmethod
    def of(cls, settings: Settings, start: dt.date, aggregation: str | None = None) -> Week:
        """:func:`open_week` with the settings' storage and policy."""
        return open_week(Storage.of(settings), PlaylistPolicy.of(settings), start, aggregation)

    @property
    def n_chunks(self) -> int:
        """Generate chunks of the week (listeners / ``chunk_size``, rounded up; at least 1)."""
        listeners = len(self.personal) + len(self.newcomers)
        return max(1, -(-listeners // self.policy.chunk_size))

    def chunk(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(personal model rows, newcomer ids) of chunk ``index`` of the fixed list."""
        size, n = self.policy.chunk_size, len(self.personal)
        first, stop = index * size, (index + 1) * size
        return self.personal[first:stop], self.newcomers[max(0, first - n) : max(0, stop - n)]


def open_week(
    storage: Storage, policy: PlaylistPolicy, start: dt.date, aggregation: str | None = None
) -> Week:
    """The week's aggregation ``aggregation`` (default: its newest), read once per process
    (a new aggregation into the same folder changes its summary's mtime).

    Raises
    ------
    ValueError
        If the aggregation has no aggregates (the message says how to make them).
    """
    key = storage.resolve(start, aggregation)
    paths = storage.paths(start, key)
    stamp = paths.summary.stat().st_mtime_ns if paths.summary.exists() else 0
    return _week_at(paths, policy, start, key, stamp)


def read_week(
    paths: AggregationPaths, policy: PlaylistPolicy, start: dt.date, aggregation: str
) -> Week:
    """The aggregation ``aggregation`` of the week at ``paths``, read now (uncached)."""
    if not paths.interactions.exists():
        raise ValueError(
            f"no aggregates for the week of {start} in {paths.root}; pass --data DIR, or run "
            "`cratedigger aggregate --data DIR --week W` first"
        )
    data = load_training_data(paths, week_cutoff(start))
    return Week(start, aggregation, paths, policy, data, *policy.plan(data))


@functools.lru_cache(maxsize=2)
def _week_at(
    paths: AggregationPaths, policy: PlaylistPolicy, start: dt.date, key: str, stamp: int
) -> Week:
    return read_week(paths, policy, start, key)


def _read(path: Path, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    table = pq.read_table(path, columns=columns)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def load_catalog(db: Any, paths: AggregationPaths) -> dict[str, int]:
    """Upsert the aggregation's validated artists, tracks and listeners into the database
    (``db``: a session factory)."""
    artists = pq.read_table(paths.artists).to_pylist()
    stored = pq.ParquetDataset(paths.tracks).schema.names  # an older aggregation lacks some
    columns = [name for name in (*TRACK_COLUMNS, *TRACK_DISPLAY_COLUMNS) if name in stored]
    tracks = pq.read_table(paths.tracks, columns=columns).to_pylist()
    users = pq.read_table(paths.users).to_pylist()
    with db.begin() as session:
        return {
            "artists": repository.upsert_artists(session, artists),
            "tracks": repository.upsert_tracks(session, tracks),
            "users": repository.upsert_users(session, users),
        }


#: The interactions' columns a confidence is computed from (:func:`pair_counts`).
COUNT_COLUMNS = ["completed", "skips", "thumb", "last_event_at"]


def pair_counts(
    table: pa.Table,
    cutoff: dt.datetime,
    user_ids: np.ndarray,
    track_ids: np.ndarray,
    rows: np.ndarray,
    columns: np.ndarray,
) -> PairCounts:
    """The :class:`recsys.matrix.PairCounts` of the interactions ``table`` (its
    :data:`COUNT_COLUMNS`), whose pairs sit at ``rows`` and ``columns`` of ``user_ids`` x
    ``track_ids``, ages to ``cutoff``."""
    last = pc.cast(table.column("last_event_at"), pa.int64()).to_numpy(zero_copy_only=False)
    return PairCounts(
        user_ids=user_ids,
        track_ids=track_ids,
        rows=np.asarray(rows, dtype=np.int64),
        columns=np.asarray(columns, dtype=np.int64),
        completed=table.column("completed").to_numpy().astype(np.float64),
        skips=table.column("skips").to_numpy().astype(np.float64),
        thumb=table.column("thumb").to_numpy().astype(np.int8),
        age_days=age_in_days(last, cutoff),
    )


def load_training_data(paths: AggregationPaths, cutoff: dt.datetime) -> TrainingData:
    """The confidence matrix, what each listener already knows, and track -> artist numbers
    (pair ages run to ``cutoff``, the week's)."""
    tracks = _read(paths.tracks, ["track_id", "title", "artist_id"])
    artists = _read(paths.artists, ["artist_id", "name"])
    table = pq.read_table(
        paths.interactions, columns=["user_id", "track_id", "confidence", "plays", *COUNT_COLUMNS]
    )
    rows = {
        name: table.column(name).to_numpy(zero_copy_only=False)
        for name in ("user_id", "track_id", "confidence", "plays")
    }
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
        np.unique(_read(paths.users, ["user_id"])["user_id"].astype(str))
        if paths.users.exists()
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
    pairs = pair_counts(
        table.filter(pa.array(signal)),
        cutoff,
        matrix.user_ids,
        matrix.track_ids,
        user_rows[signal],
        track_columns[signal],
    )
    return TrainingData(
        matrix=matrix,
        pairs=pairs,
        known=known.tocsr(),
        track_artist=track_artist.astype(np.int64),
        played=played.tocsr(),
        track_listeners=listeners,
        track_titles=titles,
        outsider_ids=outsiders,
        outsider_known=outsider_known.tocsr(),
    )


def load_track_content(
    paths: AggregationPaths, track_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Content features of the aggregation's tracks in the order of ``track_ids`` (sorted):
    :func:`recsys.coldstart.content_matrix` of the staged ``embedding`` and ``tags``.

    Returns
    -------
    (content, has_content)
        float32 (n_tracks, d) and bool (n_tracks,); all False when the catalog has neither
        column (a CSV catalog).
    """
    table = pq.read_table(paths.tracks)
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

"""A learned final ranker over the union of the candidate generators (issue 13), measured
against the linear blend that ships by ``benchmarks/ranker.py``.

It does not ship: on the five data sets of the benchmark it beat the tuned linear blend on
two (HetRec +1.0 %, AMBAR +4.1 %, both significant) and trailed it on three (Last.fm 1K
-2.3 %, CM100k -3.7 %, the simulator -0.8 %, none significant), at 5 to 15 times the
scoring time, and a holdout gate would have adopted it on all five (its held-out
validation score beat the blend's everywhere), so a weekly run could not tell when it
helps (``benchmarks/results/ranker.md``). It stays here, behind the same interface as the
week's models, for the experiments of the roadmap (a final ranker as a pipeline variant).

The week's model (:mod:`recsys.blend`) ranks every track by one linear blend: standardised
ALS plus weighted, standardised partner scores. This module learns the final ranking
instead, as Pandora's ensemble does: each generator (the blend's ALS base and every
partner) proposes its ``C`` best unheard tracks, the union of the proposals are a
listener's *candidates*, and a LightGBM lambdarank model (:class:`FinalRanker`) orders
them from per-(listener, candidate) features (:func:`feature_names`). By default boosting
starts from the blend's score (``RankerParams.start_from``) and learns corrections to it,
kept only as far as held-out listeners confirm them (early stopping). The features:

* ``{g}_score`` and ``{g}_rank`` for every generator ``g`` (``als`` and each partner): its
  score standardised over the catalog per listener (as the blend reads it), and its rank
  among the listener's eligible unheard tracks (0 = its best; ties share the best rank);
* ``blend_score`` and ``blend_rank``: the blend's own score and rank (what ships today);
* ``log_popularity``: ln(1 + training listeners of the track);
* ``artist_share``: the listener's share of their positive training confidence on the
  candidate's artist; ``knows_artist``: 1 when they have any track of that artist;
  ``artist_tracks``: ln(1 + their tracks of that artist);
* ``log_activity``: ln(1 + the listener's positive training pairs).

Left out, on purpose: the recency of the listener's plays of the artist (the week's
confidence matrix carries no times), content similarity (content exists only for the
cold-start projection) and a cold flag (the pipeline never lets a cold-start track into
the personal ranking, so among the candidates the flag would always be 0).

:class:`Ranked` is the ranker over a blend as a :class:`recsys.recommender.Recommender`:
the candidates get the ranker's scores, every other track the blend's score, in its order,
in a narrow band below the row's lowest candidate (:func:`below_candidates`; cold-start
tracks keep the blend's own score, for the cold slots), so exclusion, MMR, the artist
cap, the cold slots and the explanations of
:class:`recsys.pipeline.PlaylistPipeline` run unchanged. It *is* a :class:`Blend` (same
``base`` and ``partners``), because the pipeline reads the diversity vectors, the cold
slots and the co-listening explanations from a blend's base and partners.

:func:`fit_final_ranker` trains the ranker on a validation split: features from the model
trained on the split's training part, labels 1 for the candidates the listener played in
the held-out part. LightGBM is imported only when a ranker is fitted or loaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys.als import ALSModel
from recsys.blend import Blend, WeekModel, standardise

if TYPE_CHECKING:
    import lightgbm

log = logging.getLogger(__name__)

RANKER_DIR = "ranker"
MODEL_FILE = "ranker.txt"
META_FILE = "ranker.json"
INPUTS_FILE = "inputs.npz"
CONFIDENCE_FILE = "confidence.npz"
KNOWN_FILE = "known.npz"
RANKER_FORMAT = 1
#: Candidates each generator proposes per listener.
DEFAULT_CANDIDATES = 200
#: Listeners whose features are computed together (bounds memory: a few dense
#: (block, n_tracks) arrays per generator).
DEFAULT_BLOCK = 256
#: Features that do not depend on which generators the blend holds, in column order after
#: the generators' own.
COMMON_FEATURES = (
    "blend_score",
    "blend_rank",
    "log_popularity",
    "artist_share",
    "knows_artist",
    "artist_tracks",
    "log_activity",
)


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class RankerInputs:
    """What the features read besides the models' scores, in the model's row and column
    order.

    Attributes
    ----------
    confidence : scipy.sparse.csr_matrix
        (n_users, n_tracks): the training confidences the model learnt from; the positive
        part gives the artist familiarity and the listener activity.
    known : scipy.sparse.csr_matrix
        (n_users, n_tracks): every track each listener played or thumbed (stored entries);
        never a candidate.
    track_artist : numpy.ndarray
        int64 (n_tracks,): dense, non-negative artist number per track.
    track_listeners : numpy.ndarray
        int64 (n_tracks,): training listeners per track; a track without any is never a
        candidate (as it never enters the pipeline's personal ranking).
    """

    confidence: sp.csr_matrix
    known: sp.csr_matrix
    track_artist: npt.NDArray[np.int64]
    track_listeners: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if not sp.issparse(self.confidence) or not sp.issparse(self.known):
            raise ValueError("confidence and known must be scipy sparse matrices")
        shape = self.confidence.shape
        if self.known.shape != shape:
            raise ValueError(f"known has shape {self.known.shape}, confidence {shape}")
        n_tracks = shape[1]
        for name in ("track_artist", "track_listeners"):
            value = np.asarray(getattr(self, name))
            if value.shape != (n_tracks,):
                raise ValueError(f"{name} has shape {value.shape}, expected ({n_tracks},)")
            if not np.issubdtype(value.dtype, np.integer):
                raise ValueError(f"{name} must hold integers, got {value.dtype}")
            if value.size and value.min() < 0:
                raise ValueError(f"{name} must be non-negative")
            object.__setattr__(self, name, value.astype(np.int64))
        object.__setattr__(self, "confidence", sp.csr_matrix(self.confidence))
        object.__setattr__(self, "known", sp.csr_matrix(self.known))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.confidence.shape[0]), int(self.confidence.shape[1]))

    @functools.cached_property
    def positive(self) -> sp.csr_matrix:
        """float64 CSR: the positive training confidences, sorted indices."""
        positive = sp.csr_matrix(self.confidence.multiply(self.confidence > 0), dtype=np.float64)
        positive.eliminate_zeros()
        positive.sort_indices()
        return positive

    @functools.cached_property
    def artist_onehot(self) -> sp.csr_matrix:
        """float64 CSR (n_tracks, n_artists): 1 at each track's artist."""
        n_tracks = self.shape[1]
        n_artists = int(self.track_artist.max()) + 1 if n_tracks else 0
        return sp.csr_matrix(
            (np.ones(n_tracks), (np.arange(n_tracks), self.track_artist)),
            shape=(n_tracks, n_artists),
        )

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        sp.save_npz(directory / CONFIDENCE_FILE, self.confidence, compressed=False)
        sp.save_npz(directory / KNOWN_FILE, self.known, compressed=False)
        np.savez(
            directory / INPUTS_FILE,
            allow_pickle=False,
            track_artist=self.track_artist,
            track_listeners=self.track_listeners,
        )
        return directory

    @classmethod
    def load(cls, directory: Path) -> RankerInputs:
        with np.load(directory / INPUTS_FILE, allow_pickle=False) as arrays:
            track_artist, track_listeners = arrays["track_artist"], arrays["track_listeners"]
        return cls(
            sp.csr_matrix(sp.load_npz(directory / CONFIDENCE_FILE)),
            sp.csr_matrix(sp.load_npz(directory / KNOWN_FILE)),
            track_artist,
            track_listeners,
        )


# --------------------------------------------------------------------------- features


def _as_blend(model: WeekModel) -> Blend:
    """``model`` as a blend: a :class:`Ranked`'s own blend, ALS alone as a blend without
    partners (which ranks as ALS does)."""
    if isinstance(model, Ranked):
        return model.blend
    if isinstance(model, Blend):
        return model
    if isinstance(model, ALSModel):
        return Blend(model, {})
    raise ValueError(f"expected an ALS model or a Blend, got {type(model).__name__}")


def feature_names(model: WeekModel) -> tuple[str, ...]:
    """The features' names, in column order, for the generators of ``model``."""
    generators = ["als", *_as_blend(model).partners]
    per_generator = [f"{g}_{kind}" for g in generators for kind in ("score", "rank")]
    return (*per_generator, *COMMON_FEATURES)


@dataclass(frozen=True)
class Candidates:
    """Candidates of a group of listeners and their features, one row per pair, grouped
    by listener (in the order of the listeners asked for) and by column within one.

    Attributes
    ----------
    rows : numpy.ndarray
        int64 (N,): the position of the pair's listener in the ``user_rows`` asked for.
    columns : numpy.ndarray
        int64 (N,): the candidate track's column.
    features : numpy.ndarray
        float32 (N, len(names)).
    names : tuple of str
        :func:`feature_names` of the model.
    n_listeners : int
        How many listeners were asked for (some may have no candidate).
    """

    rows: npt.NDArray[np.int64]
    columns: npt.NDArray[np.int64]
    features: npt.NDArray[np.float32]
    names: tuple[str, ...]
    n_listeners: int

    @property
    def groups(self) -> npt.NDArray[np.int64]:
        """int64 (n_listeners,): candidates per listener (LightGBM's query sizes)."""
        return np.bincount(self.rows, minlength=self.n_listeners).astype(np.int64)


def _blend_parts(
    blend: Blend, rows: npt.NDArray[np.int64]
) -> tuple[list[npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
    """(each generator's standardised scores, the blend's scores) of ``rows``: the same
    operations as :meth:`Blend.score`, so ``blend_score`` is exactly what the blend ships
    (``tests/test_ranker.py`` checks it)."""
    base = standardise(np.asarray(blend.base.score(rows), dtype=np.float32))
    total = base.copy()
    cold = None if blend.base.cold_start is None else blend.base.cold_start.cold_mask
    cold_scores = None if cold is None else total[:, cold] * np.float32(1.0 + blend.weight_sum)
    parts = [base]
    for model, weight in blend.partners.values():
        part = standardise(model.score(rows))
        parts.append(part)
        total += part * np.float32(weight)
    if cold is not None:
        total[:, cold] = cold_scores
    return parts, total


def _float_keys(values: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """int64 keys in the order of the float32 ``values`` (-inf lowest; -0 and +0 equal)."""
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    keys = np.where(negative, ~bits, bits | np.uint32(0x80000000))
    return keys.astype(np.int64)


def rank_among(
    scores: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], columns: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """How many finite entries of row ``rows[i]`` of ``scores`` (B, n) are strictly above
    ``scores[rows[i], columns[i]]``: its rank among the row's finite scores, 0 for the
    best, tied scores sharing the best rank. O(B n log n), no loop over rows."""
    n_rows, width = scores.shape
    keys = _float_keys(scores) | (np.arange(n_rows, dtype=np.int64)[:, None] << 32)
    ordered = np.sort(keys, axis=1).ravel()
    wanted = keys[rows, columns]
    after = np.searchsorted(ordered, wanted, side="right")
    ranks: npt.NDArray[np.int64] = (rows + 1) * width - after
    return ranks


def _sparse_lookup(
    matrix: sp.csr_matrix, rows: npt.NDArray[np.int64], columns: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """float64 (N,): ``matrix[rows[i], columns[i]]`` (0 where nothing is stored)."""
    matrix = sp.csr_matrix(matrix)
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    n_columns = np.int64(max(matrix.shape[1], 1))
    stored_rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    stored = stored_rows * n_columns + matrix.indices.astype(np.int64)
    wanted = rows.astype(np.int64) * n_columns + columns.astype(np.int64)
    values = np.zeros(len(wanted), dtype=np.float64)
    if len(stored) == 0:
        return values
    position = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
    found = stored[position] == wanted
    values[found] = matrix.data[position[found]]
    return values


def _proposals(
    masked: npt.NDArray[np.float32], floor: npt.NDArray[np.float32], n_candidates: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(rows, columns) of each row's ``n_candidates`` best finite entries of ``masked`` that
    are above the row's ``floor`` (a generator proposes no track it scores at its lowest,
    e.g. the zeros of an item-to-item model for tracks it cannot reach)."""
    n_rows, width = masked.shape
    take = min(n_candidates, width)
    if take == 0 or n_rows == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    if take < width:
        best = np.argpartition(-masked, take - 1, axis=1)[:, :take]
    else:
        best = np.tile(np.arange(width), (n_rows, 1))
    values = np.take_along_axis(masked, best, axis=1)
    keep = np.isfinite(values) & (values > floor[:, None])
    rows = np.broadcast_to(np.arange(n_rows)[:, None], best.shape)[keep]
    return rows.astype(np.int64), best[keep].astype(np.int64)


def _block_features(
    blend: Blend,
    inputs: RankerInputs,
    user_rows: npt.NDArray[np.int64],
    n_candidates: int,
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32]
]:
    """(rows, columns, features, blend scores (B, n_tracks)) of one block of listeners."""
    parts, total = _blend_parts(blend, user_rows)
    n_rows, n_tracks = total.shape
    excluded = np.zeros((n_rows, n_tracks), dtype=bool)
    known = inputs.known[user_rows]
    excluded[np.repeat(np.arange(n_rows), np.diff(known.indptr)), known.indices] = True
    ineligible = inputs.track_listeners == 0
    if blend.base.cold_start is not None:
        ineligible |= blend.base.cold_start.cold_mask
    excluded[:, ineligible] = True

    masked_parts = []
    chosen = np.zeros((n_rows, n_tracks), dtype=bool)
    for part in parts:
        masked = np.where(excluded, np.float32(-np.inf), part)
        proposed_rows, proposed_columns = _proposals(masked, part.min(axis=1), n_candidates)
        chosen[proposed_rows, proposed_columns] = True
        masked_parts.append(masked)
    rows, columns = np.nonzero(chosen)
    rows, columns = rows.astype(np.int64), columns.astype(np.int64)

    names = feature_names(blend)
    features = np.empty((len(rows), len(names)), dtype=np.float32)
    column = 0
    for part, masked in zip(parts, masked_parts, strict=True):
        features[:, column] = part[rows, columns]
        features[:, column + 1] = rank_among(masked, rows, columns)
        column += 2
    masked_total = np.where(excluded, np.float32(-np.inf), total)
    features[:, column] = total[rows, columns]
    features[:, column + 1] = rank_among(masked_total, rows, columns)
    del masked_parts, masked_total, excluded

    track_artist = inputs.track_artist[columns]
    positive = inputs.positive[user_rows]
    per_artist = positive @ inputs.artist_onehot
    binary = positive.copy()
    binary.data[:] = 1.0
    artist_tracks = _sparse_lookup(binary @ inputs.artist_onehot, rows, track_artist)
    listener_total = np.asarray(positive.sum(axis=1), dtype=np.float64).ravel()[rows]
    share = _sparse_lookup(per_artist, rows, track_artist) / np.maximum(listener_total, 1e-30)
    activity = np.diff(positive.indptr)[rows]
    features[:, column + 2] = np.log1p(inputs.track_listeners[columns])
    features[:, column + 3] = np.where(listener_total > 0, share, 0.0)
    features[:, column + 4] = artist_tracks > 0
    features[:, column + 5] = np.log1p(artist_tracks)
    features[:, column + 6] = np.log1p(activity)
    return rows, columns, features, total


def _check_rows(user_rows: npt.ArrayLike, n_users: int) -> npt.NDArray[np.int64]:
    rows = np.asarray(user_rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError("user_rows must be a 1-D array of row numbers")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n_users):
        raise ValueError(f"user_rows must be in [0, {n_users}), got {rows.min()}..{rows.max()}")
    return rows


def _check_inputs(blend: Blend, inputs: RankerInputs) -> None:
    expected = (len(blend.user_ids), len(blend.track_ids))
    if inputs.shape != expected:
        raise ValueError(
            f"the ranker's inputs have shape {inputs.shape}, the model {expected} "
            "(listeners, tracks)"
        )


def _blocks(
    blend: Blend,
    inputs: RankerInputs,
    user_rows: npt.NDArray[np.int64],
    n_candidates: int,
    block_size: int,
) -> Iterator[
    tuple[
        int,
        npt.NDArray[np.int64],
        npt.NDArray[np.int64],
        npt.NDArray[np.float32],
        npt.NDArray[np.float32],
    ]
]:
    for start in range(0, len(user_rows), block_size):
        yield (
            start,
            *_block_features(blend, inputs, user_rows[start : start + block_size], n_candidates),
        )


def candidate_features(
    model: WeekModel,
    inputs: RankerInputs,
    user_rows: npt.ArrayLike,
    *,
    n_candidates: int = DEFAULT_CANDIDATES,
    block_size: int = DEFAULT_BLOCK,
) -> Candidates:
    """The candidates of ``user_rows`` and their features (see the module docstring):
    the union of each generator's ``n_candidates`` best tracks among the listener's
    eligible tracks (not known, with a training listener, not cold), computed
    ``block_size`` listeners at a time.

    Raises
    ------
    ValueError
        If ``inputs`` does not match the model's listeners and tracks, a row is out of
        range, or ``n_candidates`` or ``block_size`` is below 1.
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be at least 1, got {n_candidates}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    blend = _as_blend(model)
    _check_inputs(blend, inputs)
    rows = _check_rows(user_rows, len(blend.user_ids))
    names = feature_names(blend)
    all_rows, all_columns, all_features = [], [], []
    for start, block_rows, columns, features, _ in _blocks(
        blend, inputs, rows, n_candidates, block_size
    ):
        all_rows.append(block_rows + start)
        all_columns.append(columns)
        all_features.append(features)
    if not all_rows:
        return Candidates(
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int64),
            np.empty((0, len(names)), dtype=np.float32),
            names,
            0,
        )
    return Candidates(
        np.concatenate(all_rows),
        np.concatenate(all_columns),
        np.concatenate(all_features),
        names,
        len(rows),
    )


# ----------------------------------------------------------------------------- ranker


@dataclass(frozen=True)
class RankerParams:
    """LightGBM lambdarank settings; one fixed set for every catalog (no per-data-set
    tuning).

    Attributes
    ----------
    candidates : int
        Tracks each generator proposes per listener.
    start_from : str or None
        The feature whose value is every row's initial score (LightGBM's ``init_score``):
        boosting then learns corrections to that ranking (by default the blend's, what
        ships), and early stopping keeps only the corrections that help held-out
        listeners. None: boosting starts from zero.
    rounds : int
        Most boosting rounds.
    early_stopping : int
        Rounds without a better NDCG@``eval_at`` on the held-out listeners before stopping.
    holdout_share : float
        Share of the training listeners held out for early stopping (seeded); with fewer
        than :data:`MIN_HOLDOUT_LISTENERS` of them every round is kept.
    eval_at : int
        The cut-off of the early-stopping NDCG (the playlist length).
    learning_rate, num_leaves, min_data_in_leaf, feature_fraction, lambda_l2
        LightGBM's parameters of the same names.
    truncation_level : int
        ``lambdarank_truncation_level``: pairs whose better item ranks below this are not
        weighed.
    num_threads : int
        LightGBM's threads (fit and predict).
    seed : int
    """

    candidates: int = DEFAULT_CANDIDATES
    start_from: str | None = "blend_score"
    rounds: int = 600
    early_stopping: int = 50
    holdout_share: float = 0.2
    eval_at: int = 50
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.9
    lambda_l2: float = 1.0
    truncation_level: int = 100
    num_threads: int = 2
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("candidates", "rounds", "eval_at", "truncation_level"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_leaves < 2:
            raise ValueError(f"num_leaves must be at least 2, got {self.num_leaves}")
        if self.early_stopping < 1 or self.min_data_in_leaf < 1 or self.num_threads < 1:
            raise ValueError("early_stopping, min_data_in_leaf and num_threads must be >= 1")
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError(f"holdout_share must be in [0, 1), got {self.holdout_share}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0.0 < self.feature_fraction <= 1.0:
            raise ValueError(f"feature_fraction must be in (0, 1], got {self.feature_fraction}")
        if self.lambda_l2 < 0:
            raise ValueError(f"lambda_l2 must be >= 0, got {self.lambda_l2}")

    def lightgbm(self) -> dict[str, Any]:
        """The parameters handed to ``lightgbm.train``."""
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [self.eval_at],
            "lambdarank_truncation_level": self.truncation_level,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "feature_fraction_seed": self.seed,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }


def _initial_scores(
    features: npt.NDArray[np.float32], names: tuple[str, ...], start_from: str | None
) -> npt.NDArray[np.float64] | None:
    """float64 (N,): the ``start_from`` column of ``features``; None without one."""
    if start_from is None:
        return None
    return features[:, names.index(start_from)].astype(np.float64)


def mean_ndcg(scores: npt.ArrayLike, labels: npt.ArrayLike, groups: npt.ArrayLike, k: int) -> float:
    """Mean over groups of NDCG@``k`` of rows ranked by ``scores`` within each group (rows
    grouped as ``groups`` counts them), binary gains, ideal over the group's positives
    (LightGBM's ``ndcg``; a group without a positive counts 1); ties: the earlier row."""
    values = np.asarray(scores, dtype=np.float64)
    gains = np.asarray(labels, dtype=np.float64)
    sizes = np.asarray(groups, dtype=np.int64)
    if len(sizes) == 0:
        return float("nan")
    group_of = np.repeat(np.arange(len(sizes)), sizes)
    order = np.lexsort((np.arange(len(values)), -values, group_of))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    position = np.arange(len(values)) - starts[group_of[order]]
    discount = np.where(position < k, 1.0 / np.log2(position + 2.0), 0.0)
    dcg = np.bincount(group_of[order], weights=gains[order] * discount, minlength=len(sizes))
    positives = np.bincount(group_of, weights=gains, minlength=len(sizes)).astype(np.int64)
    ideal_table = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))))
    ideal = ideal_table[np.minimum(positives, k)]
    ndcg = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 1.0)
    return float(ndcg.mean())


#: The feature a fit's held-out listeners are also ranked by, for comparison.
REFERENCE_FEATURE = "blend_score"
#: Fewer held-out listeners with a positive than this: no early stopping.
MIN_HOLDOUT_LISTENERS = 20


@dataclass
class FinalRanker:
    """A fitted LightGBM lambdarank model over the features :func:`feature_names` names.

    Attributes
    ----------
    booster : lightgbm.Booster
    names : tuple of str
        The features, in column order.
    params : RankerParams
    metadata : dict
        ``best_iteration``, the fit's listeners, rows, positives, ``fit_seconds`` and the
        early-stopping NDCG.
    """

    booster: lightgbm.Booster
    names: tuple[str, ...]
    params: RankerParams = field(default_factory=RankerParams)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        booster_names = tuple(self.booster.feature_name())
        if booster_names != tuple(self.names):
            raise ValueError(f"the booster's features {booster_names} are not {self.names}")
        self.names = tuple(self.names)
        if self.params.start_from is not None and self.params.start_from not in self.names:
            raise ValueError(
                f"start_from {self.params.start_from!r} is not one of the features {self.names}"
            )

    @classmethod
    def fit(
        cls,
        features: npt.ArrayLike,
        labels: npt.ArrayLike,
        groups: npt.ArrayLike,
        names: tuple[str, ...] | list[str],
        params: RankerParams | None = None,
    ) -> FinalRanker:
        """Fit lambdarank on ``features`` (N, F) with 0/1 ``labels`` (N,), rows grouped by
        listener (``groups``: rows per listener, summing to N).

        Listeners without a positive label teach lambdarank nothing and are left out. A
        seeded ``holdout_share`` of the others stops the boosting early (on NDCG@``eval_at``).

        Raises
        ------
        ValueError
            On shapes that do not agree, non-finite features, labels other than 0/1, or no
            positive label at all.
        """
        import lightgbm as lgb

        params = params or RankerParams()
        started = time.perf_counter()
        x = np.asarray(features, dtype=np.float32)
        y = np.asarray(labels)
        sizes = np.asarray(groups)
        names = tuple(names)
        if x.ndim != 2 or x.shape[1] != len(names):
            raise ValueError(
                f"features has shape {x.shape}, expected (N, {len(names)}) for {names}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"feature names repeat: {names}")
        if params.start_from is not None and params.start_from not in names:
            raise ValueError(f"start_from {params.start_from!r} is not one of the features {names}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels has shape {y.shape}, expected ({x.shape[0]},)")
        if sizes.ndim != 1 or (sizes.size and not np.issubdtype(sizes.dtype, np.integer)):
            raise ValueError("groups must be a 1-D array of row counts per listener")
        if np.any(sizes < 0) or int(sizes.sum()) != x.shape[0]:
            raise ValueError(
                f"groups must be non-negative and sum to the {x.shape[0]} rows, "
                f"they sum to {int(sizes.sum())}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("features must be finite")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("labels must be 0 or 1")
        y = y.astype(np.float32)
        sizes = sizes.astype(np.int64)
        group_of = np.repeat(np.arange(len(sizes)), sizes)
        positives = np.bincount(group_of, weights=y, minlength=len(sizes))
        useful = np.flatnonzero(positives > 0)
        if len(useful) == 0:
            raise ValueError(
                "no positive label: no listener has a held-out track among their "
                "candidates, so there is nothing to learn"
            )
        rng = np.random.default_rng(params.seed)
        n_holdout = round(params.holdout_share * len(useful))
        holdout = np.sort(rng.permutation(useful)[:n_holdout])
        if n_holdout < MIN_HOLDOUT_LISTENERS:
            holdout = np.empty(0, dtype=np.int64)
        train_groups = np.setdiff1d(useful, holdout)
        lgb_params = params.lightgbm()

        initial = _initial_scores(x, names, params.start_from)

        def dataset(chosen: npt.NDArray[np.int64], reference: Any = None) -> lgb.Dataset:
            mask = np.isin(group_of, chosen)
            return lgb.Dataset(
                x[mask],
                label=y[mask],
                group=sizes[chosen],
                init_score=None if initial is None else initial[mask],
                feature_name=list(names),
                reference=reference,
                params={"verbosity": -1, "max_bin": 255},
                free_raw_data=True,
            )

        train_set = dataset(train_groups)
        valid_sets: list[lgb.Dataset] = []
        callbacks: list[Callable[..., Any]] = []
        if len(holdout):
            valid_sets = [dataset(holdout, reference=train_set)]
            callbacks = [lgb.early_stopping(params.early_stopping, verbose=False)]
        booster = lgb.train(
            lgb_params,
            train_set,
            num_boost_round=params.rounds,
            valid_sets=valid_sets,
            callbacks=callbacks,
        )
        best = int(booster.best_iteration) if len(holdout) else params.rounds
        best = best if best > 0 else booster.current_iteration()
        # Keep only the rounds up to the best one: what is saved is what is scored.
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        metadata: dict[str, Any] = {
            "best_iteration": best,
            "listeners": len(sizes),
            "listeners_with_positive": len(useful),
            "holdout_listeners": len(holdout),
            "rows": int(x.shape[0]),
            "positives": int(y.sum()),
            "fit_seconds": round(time.perf_counter() - started, 3),
        }
        ranker = cls(booster, names, params, metadata)
        if len(holdout):
            # What a gate compares: the ranker and the blend alone on the same held-out
            # listeners (NDCG@eval_at of their candidates).
            mask = np.isin(group_of, holdout)
            held_sizes = sizes[holdout]
            metadata["holdout_ndcg"] = mean_ndcg(
                ranker.predict(x[mask]), y[mask], held_sizes, params.eval_at
            )
            if REFERENCE_FEATURE in names:
                reference = x[mask][:, names.index(REFERENCE_FEATURE)]
                metadata["holdout_ndcg_blend"] = mean_ndcg(
                    reference, y[mask], held_sizes, params.eval_at
                )
        log.info(
            "fitted the final ranker on %d listeners (%d rows, %d positives): %d rounds in %.1f s",
            len(train_groups),
            metadata["rows"],
            metadata["positives"],
            best,
            metadata["fit_seconds"],
        )
        return ranker

    def predict(self, features: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """float32 (N,): the ranker's score of each row of ``features`` (N, F)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError(
                f"features has shape {x.shape}, expected (N, {len(self.names)}) for {self.names}"
            )
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        scores = np.asarray(
            self.booster.predict(x, num_threads=self.params.num_threads), dtype=np.float64
        )
        initial = _initial_scores(x, self.names, self.params.start_from)
        if initial is not None:
            scores += initial
        return scores.astype(np.float32)

    def importance(self, kind: str = "gain") -> dict[str, float]:
        """Each feature's share of the total ``kind`` ("gain" or "split") importance."""
        if kind not in ("gain", "split"):
            raise ValueError(f"kind must be 'gain' or 'split', got {kind!r}")
        values = np.asarray(self.booster.feature_importance(importance_type=kind), dtype=float)
        total = values.sum()
        shares = values / total if total > 0 else values
        return {name: float(share) for name, share in zip(self.names, shares, strict=True)}

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.booster.model_to_string().encode()).hexdigest()

    def save(self, directory: Path) -> Path:
        """``ranker.txt`` (LightGBM's model text) and ``ranker.json`` (names, parameters,
        metadata) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / MODEL_FILE))
        meta = {
            "format": RANKER_FORMAT,
            "names": list(self.names),
            "params": asdict(self.params),
            "metadata": self.metadata,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Path) -> FinalRanker:
        """The ranker :meth:`save` wrote into ``directory``.

        Raises
        ------
        ValueError
            If the directory does not hold a ranker of a format this code reads.
        """
        import lightgbm as lgb

        meta_path, model_path = directory / META_FILE, directory / MODEL_FILE
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != RANKER_FORMAT:
                raise ValueError(f"ranker format {meta.get('format')!r} is not supported")
            names = tuple(str(name) for name in meta["names"])
            params = RankerParams(**meta["params"])
            metadata = dict(meta.get("metadata", {}))
            booster = lgb.Booster(model_file=str(model_path))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{directory} does not hold a final ranker: {exc}") from None
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"{model_path} is not a LightGBM model: {exc}") from None
        return cls(booster, names, params, metadata)


def labels_of(candidates: Candidates, test_rows: sp.csr_matrix) -> npt.NDArray[np.float32]:
    """float32 (N,): 1 where the candidate is one of its listener's held-out tracks
    (``test_rows``: one row per listener asked for, stored positive entries)."""
    if test_rows.shape[0] != candidates.n_listeners:
        raise ValueError(
            f"test_rows has {test_rows.shape[0]} rows for {candidates.n_listeners} listeners"
        )
    held_out = sp.csr_matrix(test_rows)
    return (_sparse_lookup(held_out, candidates.rows, candidates.columns) > 0).astype(np.float32)


def fit_final_ranker(
    model: WeekModel,
    known: sp.csr_matrix,
    user_rows: npt.ArrayLike,
    test_rows: sp.csr_matrix,
    track_artist: npt.ArrayLike,
    track_listeners: npt.ArrayLike,
    *,
    confidence: sp.csr_matrix | None = None,
    params: RankerParams | None = None,
    block_size: int = DEFAULT_BLOCK,
) -> FinalRanker:
    """Train the final ranker on a validation split.

    Parameters
    ----------
    model : ALSModel or Blend
        The week's model trained on the split's training part.
    known : scipy.sparse.csr_matrix
        (n_users, n_tracks): what each listener knew at the split (never a candidate).
    user_rows : array-like of int
        The evaluated listeners' rows.
    test_rows : scipy.sparse.csr_matrix
        (len(user_rows), n_tracks): their held-out tracks, the positive labels.
    track_artist, track_listeners : array-like of int
        (n_tracks,): artist number and training listeners per track.
    confidence : scipy.sparse.csr_matrix, optional
        (n_users, n_tracks): the confidences the model trained on, for the artist
        familiarity and activity features; ``known``'s values when not given.
    params : RankerParams, optional
    block_size : int
        Listeners whose features are computed together.

    Raises
    ------
    ValueError
        On shapes that do not match the model, or when no held-out track is a candidate.
    """
    params = params or RankerParams()
    started = time.perf_counter()
    blend = _as_blend(model)
    n_tracks = len(blend.track_ids)
    rows = _check_rows(user_rows, len(blend.user_ids))
    held_out = sp.csr_matrix(test_rows)
    if held_out.shape != (len(rows), n_tracks):
        raise ValueError(
            f"test_rows has shape {held_out.shape}, expected ({len(rows)}, {n_tracks}): one "
            "row per listener of user_rows"
        )
    inputs = RankerInputs(
        known if confidence is None else confidence,
        known,
        np.asarray(track_artist),
        np.asarray(track_listeners),
    )
    candidates = candidate_features(
        blend, inputs, rows, n_candidates=params.candidates, block_size=block_size
    )
    labels = labels_of(candidates, held_out)
    feature_seconds = time.perf_counter() - started
    ranker = FinalRanker.fit(
        candidates.features, labels, candidates.groups, candidates.names, params
    )
    held = int(held_out.nnz)
    ranker.metadata["feature_seconds"] = round(feature_seconds, 3)
    ranker.metadata["candidate_recall"] = float(labels.sum() / held) if held else float("nan")
    return ranker


# ----------------------------------------------------------------------------- Ranked


class Ranked(Blend):
    """The final ranker over a blend's candidates, as a recommender.

    ``score`` gives the candidates of each listener (:func:`candidate_features`) the
    ranker's scores and every other warm track the blend's score moved, in its order, into
    a narrow band below the row's lowest candidate (:func:`below_candidates`; -inf stays
    -inf): the pipeline still has a full ranking to exclude from, re-rank and cap.
    Cold-start tracks keep the blend's score for the cold slots (see :meth:`score`).
    ``base`` and ``partners`` are the blend's, so the pipeline's MMR vectors, cold slots and
    explanations read them as they read a blend's; :attr:`blend` is the blend itself.

    Parameters
    ----------
    model : ALSModel or Blend
        The week's model (ALS alone ranks as a blend without partners).
    ranker : FinalRanker
        Fitted on features of a model with the same generators.
    inputs : RankerInputs
        The training confidences, known tracks and catalog arrays of ``model``'s week.
    block_size : int
        Listeners whose features are computed together inside :meth:`score`.
    """

    def __init__(
        self,
        model: WeekModel,
        ranker: FinalRanker,
        inputs: RankerInputs,
        *,
        block_size: int = DEFAULT_BLOCK,
    ) -> None:
        blend = _as_blend(model)
        super().__init__(blend.base, dict(blend.partners))
        names = feature_names(blend)
        if tuple(ranker.names) != names:
            raise ValueError(
                f"the ranker was fitted on features {ranker.names}, this blend gives {names}"
            )
        _check_inputs(blend, inputs)
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.ranker = ranker
        self.inputs = inputs
        self.block_size = block_size

    @property
    def blend(self) -> Blend:
        """The blend the candidates and features come from (what ships without a ranker)."""
        return Blend(self.base, dict(self.partners))

    @property
    def fingerprint(self) -> str:
        text = f"{super().fingerprint}|ranker:{self.ranker.fingerprint}"
        return hashlib.sha256(text.encode()).hexdigest()

    def with_base(self, base: ALSModel) -> Ranked:
        return Ranked(
            Blend(base, dict(self.partners)), self.ranker, self.inputs, block_size=self.block_size
        )

    def candidates(self, user_rows: npt.ArrayLike) -> Candidates:
        """The candidates of ``user_rows`` and their features, as :meth:`score` sees them."""
        return candidate_features(
            self.blend,
            self.inputs,
            user_rows,
            n_candidates=self.ranker.params.candidates,
            block_size=self.block_size,
        )

    def score(self, user_rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """float32 (len(user_rows), n_tracks): the ranker's scores of each listener's
        candidates, the blend's in a band below them elsewhere; cold-start tracks keep
        the blend's own score.

        A cold-start track is never a candidate and never enters the pipeline's personal
        ranking; it only competes for the cold slots, whose threshold is a share of the
        listener's weakest personal pick. Keeping its blend score keeps that comparison on
        the blend's scale, which a ranker boosted from the blend's score
        (``RankerParams.start_from``) stays near; pushed below the candidates it would
        never pass the threshold.
        """
        rows = _check_rows(user_rows, len(self.user_ids))
        out = np.empty((len(rows), len(self.track_ids)), dtype=np.float32)
        blend = self.blend
        cold = None if blend.base.cold_start is None else blend.base.cold_start.cold_mask
        for start, block_rows, columns, features, total in _blocks(
            blend, self.inputs, rows, self.ranker.params.candidates, self.block_size
        ):
            cold_scores = None if cold is None else total[:, cold]  # a copy
            ranked = self.ranker.predict(features)
            block = below_candidates(total, block_rows, columns, ranked)
            if cold is not None:
                block[:, cold] = cold_scores
            out[start : start + total.shape[0]] = block
        return out

    def save(self, directory: Path) -> Path:
        """The ranker and its inputs under ``ranker/``, then the blend's files (its base's
        ``model.json`` last)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.ranker.save(directory / RANKER_DIR)
        self.inputs.save(directory / RANKER_DIR)
        return super().save(directory)

    @classmethod
    def load(cls, directory: Path) -> Ranked:
        """The model :meth:`save` wrote into ``directory``.

        Raises
        ------
        ValueError
            If the directory holds no blend or no ranker.
        """
        blend = Blend.load(directory)
        ranker = FinalRanker.load(directory / RANKER_DIR)
        try:
            inputs = RankerInputs.load(directory / RANKER_DIR)
        except (OSError, KeyError) as exc:
            raise ValueError(f"{directory / RANKER_DIR} holds no ranker inputs: {exc}") from None
        return cls(blend, ranker, inputs)


#: Where :func:`below_candidates` puts the other tracks of a row, in units of the spread of
#: the row's candidate scores below its lowest one: between 1 % and 11 % of it.
BAND_GAP, BAND_WIDTH = 0.01, 0.10


def below_candidates(
    scores: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    columns: npt.NDArray[np.int64],
    candidate_scores: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """``scores`` (B, n) with the entries (``rows``, ``columns``) set to
    ``candidate_scores`` and every other finite entry of a row with a candidate moved, in
    its own order, into a narrow band strictly below that row's lowest candidate score;
    -inf stays -inf. Modifies ``scores`` in place and returns it.

    The band (:data:`BAND_GAP`, :data:`BAND_WIDTH` of the candidates' spread, 1 when they
    all score the same) is narrow on purpose: MMR and the popularity penalty normalise
    the relevance of a re-ranking pool by its range, and when the artist cap widens the
    pool past the candidates, the blend's whole range below them would squash the
    candidates' relevance into a sliver, and the diversity and popularity terms would
    decide alone (measured on AMBAR, the shipped rules: NDCG@50 0.129 with the blend's
    scores merely shifted below the candidates, 0.175 with this band, 0.177 with the
    artist cap alone and neither term).
    """
    n_rows, n_tracks = scores.shape
    if not (rows.shape == columns.shape == candidate_scores.shape):
        raise ValueError("rows, columns and candidate_scores must have the same shape")
    if len(rows) == 0:
        return scores
    is_candidate = np.zeros((n_rows, n_tracks), dtype=bool)
    is_candidate[rows, columns] = True
    values = candidate_scores.astype(np.float64)
    low = np.full(n_rows, np.inf)
    high = np.full(n_rows, -np.inf)
    np.minimum.at(low, rows, values)
    np.maximum.at(high, rows, values)
    others = np.where(is_candidate, -np.inf, scores)
    top = others.max(axis=1).astype(np.float64)
    bottom = np.where(np.isfinite(others), others, np.inf).min(axis=1).astype(np.float64)
    moved = np.flatnonzero(np.isfinite(low) & np.isfinite(top))
    if len(moved):
        spread = high[moved] - low[moved]
        spread = np.where(spread > 0, spread, 1.0)
        ceiling = low[moved] - BAND_GAP * spread
        extent = top[moved] - bottom[moved]
        scale = np.where(extent > 0, BAND_WIDTH * spread / np.where(extent > 0, extent, 1.0), 0.0)
        block = scores[moved].astype(np.float64)
        finite = np.isfinite(block)
        band = (
            ceiling[:, None] - (top[moved][:, None] - np.where(finite, block, 0.0)) * scale[:, None]
        )
        band = np.where(finite, band, -np.inf)
        # Against float32 rounding: never at or above the lowest candidate.
        limit = np.nextafter(low[moved].astype(np.float32), np.float32(-np.inf))
        scores[moved] = np.minimum(band.astype(np.float32), limit[:, None])
    scores[rows, columns] = candidate_scores
    return scores

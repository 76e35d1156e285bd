"""The one interface every model that proposes tracks implements, as implicit's
``RecommenderBase`` does: ``fit``, ``score`` and ``recommend`` over a block of listeners,
``similar_items``, ``save`` and ``load``.

The playlist pipeline (:mod:`recsys.pipeline`) asks a model only for :meth:`score`; the
other methods give every model the same contract, checked by one shared test mixin
(``tests/test_recommenders.py``). :class:`BlockRecommender` implements ``recommend`` and
``similar_items`` once, from ``score`` and the model's item vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys.matrix import InteractionMatrix


@runtime_checkable
class Recommender(Protocol):
    """Scores tracks for blocks of listeners."""

    @property
    def user_ids(self) -> npt.NDArray[np.str_]: ...

    @property
    def track_ids(self) -> npt.NDArray[np.str_]: ...

    def score(self, user_rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """float32 scores of shape (len(user_rows), n_tracks); higher is better."""
        ...

    def recommend(
        self, user_rows: npt.NDArray[np.int64], known: sp.csr_matrix, n: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...

    def similar_items(
        self, track_columns: npt.NDArray[np.int64], n: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...

    def save(self, directory: Path) -> Path: ...


def top_n(
    scores: npt.NDArray[np.float32], n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Each row's ``n`` best columns in descending score (ties: lower column first);
    -inf scores are never taken: -1 columns and -inf scores pad the rows.

    Returns
    -------
    (columns, scores)
        int64 and float32 arrays of shape (B, n).
    """
    n_rows, n_columns = scores.shape
    width = min(n, n_columns)
    columns = np.full((n_rows, n), -1, dtype=np.int64)
    values = np.full((n_rows, n), -np.inf, dtype=np.float32)
    if width == 0:
        return columns, values
    best = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    best_scores = np.take_along_axis(scores, best, axis=1)
    order = np.lexsort((best, -best_scores), axis=1)
    best = np.take_along_axis(best, order, axis=1)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    finite = np.isfinite(best_scores)
    columns[:, :width] = np.where(finite, best, -1)
    values[:, :width] = np.where(finite, best_scores, -np.inf)
    return columns, values


class BlockRecommender:
    """``score``, ``recommend`` and ``similar_items`` from :meth:`score_into` and
    :meth:`item_vectors`."""

    user_ids: npt.NDArray[np.str_]
    track_ids: npt.NDArray[np.str_]

    def score(self, user_rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """float32 scores of shape (len(user_rows), n_tracks) in a new array."""
        out = np.empty((len(user_rows), len(self.track_ids)), dtype=np.float32)
        self.score_into(np.asarray(user_rows, dtype=np.int64), out)
        return out

    def score_into(self, user_rows: npt.NDArray[np.int64], out: npt.NDArray[np.float32]) -> None:
        """Write :meth:`score`'s scores into ``out``, float32 (len(user_rows), n_tracks)
        and C-contiguous: generation reuses one buffer for every block
        (:class:`recsys.playlist.BlockScorer`)."""
        raise NotImplementedError

    def item_vectors(self) -> npt.NDArray[np.float32]:
        """float32 (n_tracks, d): what :meth:`similar_items` compares by cosine."""
        raise NotImplementedError

    def unit_item_vectors(self) -> npt.NDArray[np.float32]:
        """:meth:`item_vectors` scaled to unit length (zero rows stay zero)."""
        vectors = self.item_vectors().astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = vectors / np.maximum(norms, 1e-12)
        return unit

    def recommend(
        self, user_rows: npt.NDArray[np.int64], known: sp.csr_matrix, n: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``n`` best tracks of each listener that ``known`` (len(user_rows),
        n_tracks) does not hold; -1 padded.

        Raises
        ------
        ValueError
            If ``known`` does not have one row per listener and one column per track, or
            ``n`` is below 1.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        rows = np.asarray(user_rows, dtype=np.int64)
        if known.shape != (len(rows), len(self.track_ids)):
            raise ValueError(
                f"known has shape {known.shape}, expected ({len(rows)}, {len(self.track_ids)})"
            )
        scores = self.score(rows)
        marked = np.repeat(np.arange(known.shape[0]), np.diff(known.indptr))
        scores[marked, known.indices] = -np.inf
        return top_n(scores, n)

    def similar_items(
        self, track_columns: npt.NDArray[np.int64], n: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``n`` tracks nearest to each of ``track_columns`` by cosine of
        :meth:`item_vectors`, without the track itself; -1 padded."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        unit = self.unit_item_vectors()
        columns = np.asarray(track_columns, dtype=np.int64)
        similarity = (unit[columns] @ unit.T).astype(np.float32)
        similarity[np.arange(len(columns)), columns] = -np.inf
        return top_n(similarity, n)


class PopularityModel(BlockRecommender):
    """Every listener gets the same score per track: how many listeners liked it (a
    positive confidence). The baseline every model must beat, and the ranking of the
    playlists of listeners without history.

    Attributes
    ----------
    listeners : numpy.ndarray
        float32 (n_tracks,): listeners with a positive confidence per track.
    user_ids, track_ids : numpy.ndarray
        The rows and columns the model knows.
    """

    def __init__(
        self,
        listeners: npt.NDArray[np.floating],
        user_ids: npt.NDArray[np.str_],
        track_ids: npt.NDArray[np.str_],
    ) -> None:
        self.listeners = np.asarray(listeners, dtype=np.float32)
        if self.listeners.shape != (len(track_ids),):
            raise ValueError(
                f"listeners has shape {self.listeners.shape}, expected ({len(track_ids)},)"
            )
        self.user_ids = np.asarray(user_ids, dtype=str)
        self.track_ids = np.asarray(track_ids, dtype=str)

    @classmethod
    def fit(cls, matrix: InteractionMatrix) -> Self:
        """Count each track's listeners with a positive confidence in ``matrix``."""
        listeners = np.asarray((matrix.user_items > 0).sum(axis=0), dtype=np.float32).ravel()
        return cls(listeners, matrix.user_ids, matrix.track_ids)

    def score_into(self, user_rows: npt.NDArray[np.int64], out: npt.NDArray[np.float32]) -> None:
        out[...] = self.listeners

    def item_vectors(self) -> npt.NDArray[np.float32]:
        # Tracks are alike in nothing but their popularity: one coordinate.
        return np.log1p(self.listeners)[:, None].astype(np.float32)

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / "popularity.npz",
            allow_pickle=False,
            listeners=self.listeners,
            user_ids=self.user_ids,
            track_ids=self.track_ids,
        )
        (directory / "model.json").write_text(json.dumps({"model": "popularity"}))
        return directory

    @classmethod
    def load(cls, directory: Path) -> Self:
        with np.load(directory / "popularity.npz", allow_pickle=False) as arrays:
            return cls(arrays["listeners"], arrays["user_ids"], arrays["track_ids"])

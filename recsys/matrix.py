"""The listener x track confidence matrix and its id maps."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys.contract import ConfidenceParams, confidence


@dataclass(frozen=True)
class InteractionMatrix:
    """Confidence values of listeners for tracks.

    Attributes
    ----------
    user_items : scipy.sparse.csr_matrix
        float32 matrix of shape (n_users, n_tracks). Positive values are confidence in a
        preference, negative values a thumbs-down (preference 0 with confidence ``|value|``).
    user_ids : numpy.ndarray
        Unicode array of shape (n_users,): the listener of each row, sorted.
    track_ids : numpy.ndarray
        Unicode array of shape (n_tracks,): the track of each column, sorted. Every catalog
        track has a column, including tracks nobody has played yet.
    """

    user_items: sp.csr_matrix
    user_ids: npt.NDArray[np.str_]
    track_ids: npt.NDArray[np.str_]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.user_ids), len(self.track_ids))

    def user_index(self, user_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Row numbers of ``user_ids``; -1 for listeners not in the matrix."""
        return _lookup(self.user_ids, np.asarray(user_ids, dtype=str))

    def track_index(self, track_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Column numbers of ``track_ids``; -1 for tracks not in the matrix."""
        return _lookup(self.track_ids, np.asarray(track_ids, dtype=str))

    def fingerprint(self, params: dict[str, Any] | None = None) -> str:
        """SHA-256 of the matrix, its id maps and ``params``: equal inputs give equal models."""
        digest = hashlib.sha256()
        matrix = self.user_items
        for array in (matrix.indptr, matrix.indices, matrix.data):
            digest.update(np.ascontiguousarray(array).tobytes())
        for ids in (self.user_ids, self.track_ids):
            digest.update("\x1f".join(ids.tolist()).encode())
            digest.update(b"\x1e")
        digest.update(json.dumps(params or {}, sort_keys=True).encode())
        return digest.hexdigest()


def _lookup(
    sorted_ids: npt.NDArray[np.str_], wanted: npt.NDArray[np.str_]
) -> npt.NDArray[np.int64]:
    if len(sorted_ids) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    positions = np.searchsorted(sorted_ids, wanted)
    positions = np.minimum(positions, len(sorted_ids) - 1)
    found = sorted_ids[positions] == wanted
    return np.where(found, positions, -1).astype(np.int64)


def build_interaction_matrix(
    user_ids: npt.ArrayLike,
    track_ids: npt.ArrayLike,
    confidence: npt.ArrayLike,
    catalog_track_ids: npt.ArrayLike,
) -> InteractionMatrix:
    """Build the CSR confidence matrix from one row per (listener, track).

    Parameters
    ----------
    user_ids, track_ids : array-like of str, shape (n_rows,)
        The listener and track of each interaction.
    confidence : array-like of float, shape (n_rows,)
        Non-zero confidence of each interaction (negative for a thumbs-down).
    catalog_track_ids : array-like of str
        Every track of the catalog; each becomes a column.

    Raises
    ------
    ValueError
        If the arrays differ in length, a track is not in the catalog, a (listener, track)
        pair repeats, or a confidence is zero or not finite.
    """
    users = np.asarray(user_ids, dtype=str)
    tracks = np.asarray(track_ids, dtype=str)
    values = np.asarray(confidence, dtype=np.float32)
    if not (len(users) == len(tracks) == len(values)):
        raise ValueError(
            "user_ids, track_ids and confidence must have the same length, got "
            f"{len(users)}, {len(tracks)} and {len(values)}"
        )
    if not np.all(np.isfinite(values)) or np.any(values == 0):
        raise ValueError("confidence must be finite and non-zero for every interaction")
    catalog = np.unique(np.asarray(catalog_track_ids, dtype=str))
    columns = _lookup(catalog, tracks)
    if np.any(columns < 0):
        missing = tracks[columns < 0][:5].tolist()
        raise ValueError(f"track_ids not in catalog_track_ids, e.g. {missing}")
    row_ids, rows = np.unique(users, return_inverse=True)
    matrix = sp.csr_matrix(
        (values, (rows, columns)), shape=(len(row_ids), len(catalog)), dtype=np.float32
    )
    if matrix.nnz != len(values):
        raise ValueError("a (user_id, track_id) pair occurs more than once")
    matrix.sort_indices()
    return InteractionMatrix(user_items=matrix, user_ids=row_ids, track_ids=catalog)


@dataclass(frozen=True)
class PairCounts:
    """What the confidence of each (listener, track) pair is computed from, so a matrix can
    be rebuilt with other confidence weights (:meth:`matrix`) over the same rows and columns.

    Attributes
    ----------
    user_ids, track_ids : numpy.ndarray
        str: the rows and columns of every matrix built (sorted, as in
        :class:`InteractionMatrix`).
    rows, columns : numpy.ndarray
        int64 (n_pairs,): each pair's row and column.
    completed, skips : numpy.ndarray
        float64 (n_pairs,): completed and skipped plays.
    thumb : numpy.ndarray
        int8 (n_pairs,): the latest thumb, +1, -1 or 0.
    age_days : numpy.ndarray
        float64 (n_pairs,): days from the pair's last event to the week's cut-off.
    """

    user_ids: npt.NDArray[np.str_]
    track_ids: npt.NDArray[np.str_]
    rows: npt.NDArray[np.int64]
    columns: npt.NDArray[np.int64]
    completed: npt.NDArray[np.float64]
    skips: npt.NDArray[np.float64]
    thumb: npt.NDArray[np.int8]
    age_days: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        n = len(self.rows)
        for name in ("columns", "completed", "skips", "thumb", "age_days"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, rows {n}")
        if n and (
            self.rows.min() < 0
            or self.rows.max() >= len(self.user_ids)
            or self.columns.min() < 0
            or self.columns.max() >= len(self.track_ids)
        ):
            raise ValueError("a pair's row or column is outside the user and track ids")

    def confidence(self, params: ConfidenceParams) -> npt.NDArray[np.float32]:
        """float32 (n_pairs,): each pair's confidence under ``params``."""
        values = confidence(self.completed, self.skips, self.thumb, params, self.age_days)
        return values.astype(np.float32)

    def matrix(self, params: ConfidenceParams) -> InteractionMatrix:
        """The confidence matrix under ``params``: the same rows and columns whatever the
        weights (a pair whose confidence is 0 is left out, its listener's row stays)."""
        values = self.confidence(params)
        keep = values != 0
        user_items = sp.csr_matrix(
            (values[keep], (self.rows[keep], self.columns[keep])),
            shape=(len(self.user_ids), len(self.track_ids)),
            dtype=np.float32,
        )
        user_items.sort_indices()
        return InteractionMatrix(user_items, self.user_ids, self.track_ids)

    def subset(self, keep: npt.NDArray[np.bool_]) -> PairCounts:
        """The pairs where ``keep`` (bool (n_pairs,)) is true, over the same ids."""
        return PairCounts(
            self.user_ids,
            self.track_ids,
            self.rows[keep],
            self.columns[keep],
            self.completed[keep],
            self.skips[keep],
            self.thumb[keep],
            self.age_days[keep],
        )

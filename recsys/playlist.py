"""Weekly playlist assembly: score, exclude what the listener knows, cap tracks per artist.

Everything here works on blocks of listeners so that memory does not grow with the
number of listeners and each block is an independent unit of work (a Celery chunk).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys.als import Recommender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlaylistRules:
    """What a playlist must satisfy."""

    length: int = 50
    max_tracks_per_artist: int = 2

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"length must be at least 1, got {self.length}")
        if self.max_tracks_per_artist < 1:
            raise ValueError(
                f"max_tracks_per_artist must be at least 1, got {self.max_tracks_per_artist}"
            )


@dataclass(frozen=True)
class PlaylistBlock:
    """Playlists of a block of listeners.

    Attributes
    ----------
    user_rows : numpy.ndarray
        int64 array of shape (B,): the listeners' rows in the model.
    track_columns : numpy.ndarray
        int64 array of shape (B, length): chosen track columns in playlist order, -1 where
        a listener has fewer eligible tracks than ``length``.
    scores : numpy.ndarray
        float32 array of shape (B, length): the model score of each chosen track (NaN
        where ``track_columns`` is -1).
    """

    user_rows: npt.NDArray[np.int64]
    track_columns: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]


def mask_known_tracks(
    scores: npt.NDArray[np.float32],
    known: sp.csr_matrix,
    eligible: npt.NDArray[np.bool_] | None = None,
) -> None:
    """Set to -inf, in place, the scores of tracks each listener already knows.

    Parameters
    ----------
    scores : numpy.ndarray
        float32 array of shape (B, n_tracks).
    known : scipy.sparse.csr_matrix
        Shape (B, n_tracks); any stored entry (a play, a thumbs-up or a thumbs-down) marks a
        track the listener must not get again.
    eligible : numpy.ndarray, optional
        bool array of shape (n_tracks,); tracks that are False are masked for everyone.
    """
    if known.shape != scores.shape:
        raise ValueError(f"known has shape {known.shape}, scores {scores.shape}")
    rows = np.repeat(np.arange(known.shape[0]), np.diff(known.indptr))
    scores[rows, known.indices] = -np.inf
    if eligible is not None:
        scores[:, ~eligible] = -np.inf


def select_with_artist_cap(
    scores: npt.NDArray[np.float32],
    track_artist: npt.NDArray[np.int64],
    rules: PlaylistRules,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The highest-scoring tracks of each row with at most ``rules.max_tracks_per_artist``
    per artist; -inf scores are never chosen.

    Parameters
    ----------
    scores : numpy.ndarray
        float32 array of shape (B, n_tracks), already masked.
    track_artist : numpy.ndarray
        int64 array of shape (n_tracks,): a dense artist number per track.

    Returns
    -------
    (columns, chosen_scores)
        int64 array (B, length) padded with -1, and float32 array (B, length) padded with NaN.
    """
    n_rows, n_tracks = scores.shape
    length = rules.length
    columns = np.full((n_rows, length), -1, dtype=np.int64)
    chosen = np.full((n_rows, length), np.nan, dtype=np.float32)
    pending = np.arange(n_rows)
    # Start with a few times the playlist length; widen only for rows the cap starves.
    width = min(n_tracks, length * (rules.max_tracks_per_artist + 2) * 2)
    while len(pending):
        block = scores[pending]
        if width < n_tracks:
            candidates = np.argpartition(-block, width - 1, axis=1)[:, :width]
        else:
            candidates = np.broadcast_to(np.arange(n_tracks), (len(pending), n_tracks))
        candidate_scores = np.take_along_axis(block, candidates, axis=1)
        order = np.argsort(-candidate_scores, axis=1, kind="stable")
        candidates = np.take_along_axis(candidates, order, axis=1)
        candidate_scores = np.take_along_axis(candidate_scores, order, axis=1)
        keep = _artist_cap_mask(track_artist[candidates], rules.max_tracks_per_artist)
        keep &= np.isfinite(candidate_scores)
        keep &= np.cumsum(keep, axis=1) <= length
        counts = keep.sum(axis=1)
        done = (counts == length) | (width >= n_tracks)
        if np.any(done):
            # Kept candidates first, in score order; then slice to the playlist length.
            picked = np.argsort(~keep[done], axis=1, kind="stable")[:, :length]
            rows = pending[done]
            got = np.take_along_axis(keep[done], picked, axis=1)
            picked_columns = np.take_along_axis(candidates[done], picked, axis=1)
            picked_scores = np.take_along_axis(candidate_scores[done], picked, axis=1)
            take = min(length, picked.shape[1])
            columns[rows, :take] = np.where(got, picked_columns, -1)
            chosen[rows, :take] = np.where(got, picked_scores, np.nan)
        pending = pending[~done]
        width = min(n_tracks, width * 4)
    return columns, chosen


def _artist_cap_mask(artists: npt.NDArray[np.int64], cap: int) -> npt.NDArray[np.bool_]:
    """True where the entry is among the first ``cap`` of its artist in its row (row order)."""
    n_rows, width = artists.shape
    keys = (
        np.arange(n_rows, dtype=np.int64)[:, None] * (int(artists.max(initial=0)) + 1) + artists
    ).ravel()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    positions = np.arange(len(keys))
    group_start = np.maximum.accumulate(np.where(starts, positions, 0))
    occurrence = np.empty(len(keys), dtype=np.int64)
    occurrence[order] = positions - group_start
    mask: npt.NDArray[np.bool_] = (occurrence < cap).reshape(n_rows, width)
    return mask


def generate_playlists(
    recommender: Recommender,
    known: sp.csr_matrix,
    track_artist: npt.NDArray[np.int64],
    rules: PlaylistRules,
    *,
    user_rows: npt.NDArray[np.int64] | None = None,
    eligible: npt.NDArray[np.bool_] | None = None,
    block_size: int = 2048,
) -> Iterator[PlaylistBlock]:
    """Yield playlists for ``user_rows`` (default: every listener), one block at a time.

    Parameters
    ----------
    recommender : Recommender
        Scores of shape (B, n_tracks) for blocks of listener rows.
    known : scipy.sparse.csr_matrix
        Shape (n_users, n_tracks): every track each listener played or thumbed.
    track_artist : numpy.ndarray
        int64 array of shape (n_tracks,): the artist number of each track.
    eligible : numpy.ndarray, optional
        bool array of shape (n_tracks,): tracks that may enter playlists at all.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if len(track_artist) != known.shape[1]:
        raise ValueError(
            f"track_artist has {len(track_artist)} entries for {known.shape[1]} tracks"
        )
    rows_to_do = np.arange(known.shape[0]) if user_rows is None else np.asarray(user_rows)
    for start in range(0, len(rows_to_do), block_size):
        rows = rows_to_do[start : start + block_size].astype(np.int64)
        scores = recommender.score(rows)
        mask_known_tracks(scores, known[rows], eligible)
        columns, chosen = select_with_artist_cap(scores, track_artist, rules)
        yield PlaylistBlock(user_rows=rows, track_columns=columns, scores=chosen)

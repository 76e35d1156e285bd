"""Weekly playlist assembly: score, exclude what the listener knows, re-rank for variety,
reserve a few slots for cold-start tracks, cap tracks per artist.

Everything here works on blocks of listeners so that memory does not grow with the
number of listeners and each block is an independent unit of work (a Celery chunk).

Per block (:func:`generate_playlists`): one matrix product scores every track; tracks the
listener played or thumbed are masked; the best ``pool_factor * length`` warm candidates
(:func:`top_candidates`) are re-ranked by :func:`recsys.rerank.mmr_rerank` (diversity λ and
popularity penalty β; with both 0 this is the artist-capped top ``length``); then the best
cold-start candidates take up to ``cold_slots`` slots (:func:`recsys.rerank.reserve_cold_slots`)
when they score at least ``cold_min_score_ratio`` times the listener's weakest personal pick.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys.recommender import Recommender
from recsys.rerank import mmr_rerank, occurrence_rank, popularity_prior, reserve_cold_slots

log = logging.getLogger(__name__)

#: The reason shown for every track of a playlist of kind "popular".
POPULAR_REASON = "Popular with listeners this week"


@dataclass(frozen=True)
class PlaylistRules:
    """What a playlist must satisfy, and how it is re-ranked.

    Attributes
    ----------
    length : int
        Tracks per playlist.
    max_tracks_per_artist : int
        Artist cap; always enforced, cold-start picks included.
    diversity : float
        λ in [0, 1] of :func:`recsys.rerank.mmr_rerank`.
    popularity_penalty : float
        β >= 0 of :func:`recsys.rerank.mmr_rerank`.
    pool_factor : int
        Warm candidates re-ranked per playlist slot (more when the artist cap leaves fewer
        than ``length`` usable ones).
    cold_slots : int
        Most cold-start tracks per playlist.
    cold_min_score_ratio : float
        A cold track needs a score of at least this times the listener's weakest personal
        pick (the lowest score among the personal tracks; ALS scores of the tracks a listener
        is recommended are positive in practice).
    artist_thumbs_down_limit : int
        A listener who thumbed down at least this many tracks of one artist gets no track
        of that artist (Pandora's "never again", per artist); 0 turns this off.
    """

    length: int = 50
    max_tracks_per_artist: int = 2
    diversity: float = 0.0
    popularity_penalty: float = 0.0
    pool_factor: int = 4
    cold_slots: int = 0
    cold_min_score_ratio: float = 0.5
    artist_thumbs_down_limit: int = 0

    def baseline(self) -> PlaylistRules:
        """Only the length and the artist cap: how the baselines' lists are cut."""
        return PlaylistRules(self.length, self.max_tracks_per_artist)

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"length must be at least 1, got {self.length}")
        if self.max_tracks_per_artist < 1:
            raise ValueError(
                f"max_tracks_per_artist must be at least 1, got {self.max_tracks_per_artist}"
            )
        if not 0.0 <= self.diversity <= 1.0:
            raise ValueError(f"diversity must be in [0, 1], got {self.diversity}")
        if not self.popularity_penalty >= 0.0:
            raise ValueError(f"popularity_penalty must be >= 0, got {self.popularity_penalty}")
        if self.pool_factor < 1:
            raise ValueError(f"pool_factor must be at least 1, got {self.pool_factor}")
        if self.cold_slots < 0:
            raise ValueError(f"cold_slots must be >= 0, got {self.cold_slots}")
        if not self.cold_min_score_ratio >= 0.0:
            raise ValueError(f"cold_min_score_ratio must be >= 0, got {self.cold_min_score_ratio}")
        if self.artist_thumbs_down_limit < 0:
            raise ValueError(
                f"artist_thumbs_down_limit must be >= 0, got {self.artist_thumbs_down_limit}"
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
    is_cold : numpy.ndarray
        bool array of shape (B, length): True where the track is a cold-start pick.
    """

    user_rows: npt.NDArray[np.int64]
    track_columns: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    is_cold: npt.NDArray[np.bool_]


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


def mask_disliked_artists(
    scores: npt.NDArray[np.float32],
    thumbs_down: sp.csr_matrix,
    track_artist: npt.NDArray[np.int64],
    limit: int,
) -> npt.NDArray[np.int64]:
    """Set to -inf, in place, every track of an artist a listener thumbed down ``limit`` or
    more tracks of.

    Parameters
    ----------
    scores : numpy.ndarray
        float32 array of shape (B, n_tracks).
    thumbs_down : scipy.sparse.csr_matrix
        Shape (B, n_tracks); a stored non-zero entry is a track the listener thumbed down.
    track_artist : numpy.ndarray
        int64 array of shape (n_tracks,).
    limit : int
        Thumbs-down on one artist's tracks that exclude the artist (>= 1).

    Returns
    -------
    numpy.ndarray
        int64 array (B,): artists excluded per listener.
    """
    if thumbs_down.shape != scores.shape:
        raise ValueError(f"thumbs_down has shape {thumbs_down.shape}, scores {scores.shape}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    down = sp.csr_matrix(thumbs_down, copy=True)
    down.eliminate_zeros()
    n_rows = down.shape[0]
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(down.indptr))
    n_artists = int(track_artist.max(initial=-1)) + 1
    per_artist = sp.csr_matrix(
        (np.ones(len(rows)), (rows, track_artist[down.indices])), shape=(n_rows, max(n_artists, 1))
    )  # duplicates summed: thumbs-down per (listener, artist)
    per_artist.data = (per_artist.data >= limit).astype(np.float64)
    per_artist.eliminate_zeros()
    if per_artist.nnz:
        excluded = (per_artist[:, track_artist] > 0).toarray()
        scores[excluded] = -np.inf
    counts: npt.NDArray[np.int64] = np.diff(per_artist.indptr).astype(np.int64)
    return counts


def top_candidates(
    scores: npt.NDArray[np.float32],
    track_artist: npt.NDArray[np.int64],
    length: int,
    max_per_artist: int,
    width: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Each row's best-scoring tracks in descending score, enough to fill ``length`` slots
    under the artist cap.

    Starts with the top ``width`` of each row (``argpartition``, no full sort) and widens
    (x4) only the rows where fewer than ``length`` of them survive the artist cap while
    better-scoring tracks remain, or where those ``length`` reach into tracks of equal score
    that the pool cuts through (so they never depend on the order argpartition leaves).
    -inf scores are never candidates.

    Parameters
    ----------
    scores : numpy.ndarray
        float32 array of shape (B, n_tracks), already masked.
    track_artist : numpy.ndarray
        int64 array of shape (n_tracks,): a dense artist number per track.
    length, max_per_artist : int
        Slots to fill and the artist cap.
    width : int
        Candidates per row to start with (at least ``length`` are taken).

    Returns
    -------
    (candidates, candidate_scores)
        int64 array (B, W) of track columns in descending score (ties: lower column
        first), -1 padded; float32 array (B, W) of their scores, -inf in the padding.
        W is the widest row's pool.
    """
    n_rows, n_tracks = scores.shape
    if len(track_artist) != n_tracks:
        raise ValueError(f"track_artist has {len(track_artist)} entries for {n_tracks} tracks")
    if length < 1 or max_per_artist < 1:
        raise ValueError(f"length and max_per_artist must be >= 1, got {length}, {max_per_artist}")
    width = min(n_tracks, max(width, length))
    pending = np.arange(n_rows)
    parts: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]] = []
    while len(pending) and width > 0:
        block = scores[pending]
        if width < n_tracks:
            candidates = np.argpartition(-block, width - 1, axis=1)[:, :width].astype(np.int64)
        else:
            candidates = np.tile(np.arange(n_tracks, dtype=np.int64), (len(pending), 1))
        candidate_scores = np.take_along_axis(block, candidates, axis=1)
        order = np.lexsort((candidates, -candidate_scores), axis=1)
        candidates = np.take_along_axis(candidates, order, axis=1)
        candidate_scores = np.take_along_axis(candidate_scores, order, axis=1)
        finite = np.isfinite(candidate_scores)
        usable = np.cumsum(
            (occurrence_rank(track_artist[candidates]) < max_per_artist) & finite, axis=1
        )
        enough = usable[:, -1] >= length
        # Which of several tracks tied at the pool's lowest score argpartition kept is
        # arbitrary: a row whose first `length` usable candidates reach into such a tie
        # widens, so that they never depend on that order.
        last_needed = np.argmax(usable >= length, axis=1)
        lowest = candidate_scores[:, -1]
        at_edge = np.flatnonzero(
            enough
            & np.isfinite(lowest)
            & (candidate_scores[np.arange(len(pending)), last_needed] == lowest)
        )
        ties_cut = np.zeros(len(pending), dtype=bool)
        if len(at_edge):
            edge_lowest = lowest[at_edge, None]
            ties_cut[at_edge] = (block[at_edge] == edge_lowest).sum(axis=1) > (
                candidate_scores[at_edge] == edge_lowest
            ).sum(axis=1)
        # A row is settled when the cap leaves enough, or when its pool already holds every
        # finite score (a -inf made it in), or when the pool is the whole catalog.
        done = (enough | ~finite[:, -1]) & ~ties_cut
        done |= width >= n_tracks
        if np.any(done):
            parts.append(
                (
                    pending[done],
                    np.where(finite[done], candidates[done], -1),
                    np.where(finite[done], candidate_scores[done], -np.inf).astype(np.float32),
                )
            )
        pending = pending[~done]
        width = min(n_tracks, width * 4)
    widest = max((part[1].shape[1] for part in parts), default=0)
    out_items = np.full((n_rows, widest), -1, dtype=np.int64)
    out_scores = np.full((n_rows, widest), -np.inf, dtype=np.float32)
    for rows, items, values in parts:
        out_items[rows, : items.shape[1]] = items
        out_scores[rows, : values.shape[1]] = values
    return out_items, out_scores


def select_with_artist_cap(
    scores: npt.NDArray[np.float32],
    track_artist: npt.NDArray[np.int64],
    rules: PlaylistRules,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The highest-scoring tracks of each row with at most ``rules.max_tracks_per_artist``
    per artist; -inf scores are never chosen; equal scores go to the lower column.

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
    n_rows = scores.shape[0]
    length, cap = rules.length, rules.max_tracks_per_artist
    candidates, candidate_scores = top_candidates(
        scores, track_artist, length, cap, length * (cap + 2) * 2
    )
    columns = np.full((n_rows, length), -1, dtype=np.int64)
    chosen = np.full((n_rows, length), np.nan, dtype=np.float32)
    if candidates.shape[1] == 0:
        return columns, chosen
    keep = (occurrence_rank(track_artist[np.maximum(candidates, 0)]) < cap) & (candidates >= 0)
    keep &= np.cumsum(keep, axis=1) <= length
    # Kept candidates first, in score order; then slice to the playlist length.
    picked = np.argsort(~keep, axis=1, kind="stable")[:, :length]
    got = np.take_along_axis(keep, picked, axis=1)
    take = picked.shape[1]
    columns[:, :take] = np.where(got, np.take_along_axis(candidates, picked, axis=1), -1)
    chosen[:, :take] = np.where(got, np.take_along_axis(candidate_scores, picked, axis=1), np.nan)
    return columns, chosen


def weakest_scores(scores: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """float64 array (B,): the lowest finite score of each row of (B, L) scores; -inf for a
    row without any (so that a threshold derived from it admits everything)."""
    values = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(values)
    lowest = np.where(finite, values, np.inf).min(axis=1, initial=np.inf)
    result: npt.NDArray[np.float64] = np.where(finite.any(axis=1), lowest, -np.inf)
    return result


def generate_playlists(
    recommender: Recommender,
    known: sp.csr_matrix,
    track_artist: npt.NDArray[np.int64],
    rules: PlaylistRules,
    *,
    user_rows: npt.NDArray[np.int64] | None = None,
    eligible: npt.NDArray[np.bool_] | None = None,
    block_size: int = 2048,
    cold_mask: npt.NDArray[np.bool_] | None = None,
    item_factors: npt.NDArray[np.float32] | None = None,
    popularity: npt.NDArray[np.floating] | None = None,
    thumbs_down: sp.csr_matrix | None = None,
) -> Iterator[PlaylistBlock]:
    """Yield playlists for ``user_rows`` (default: every listener), one block at a time.

    Parameters
    ----------
    recommender : Recommender
        Scores of shape (B, n_tracks) for blocks of listener rows; cold-start tracks must be
        scored too (e.g. :meth:`recsys.als.ALSModel.scorer`) when ``cold_mask`` is given.
    known : scipy.sparse.csr_matrix
        Shape (n_users, n_tracks): every track each listener played or thumbed; never chosen.
    track_artist : numpy.ndarray
        int64 array of shape (n_tracks,): the artist number of each track.
    rules : PlaylistRules
        Length, artist cap, re-ranking and cold-slot parameters.
    user_rows : numpy.ndarray, optional
        int64 array: the listeners' rows, in the order the blocks are yielded.
    eligible : numpy.ndarray, optional
        bool array of shape (n_tracks,): warm tracks that may enter playlists at all.
    block_size : int
        Listeners scored per matrix product (bounds memory).
    cold_mask : numpy.ndarray, optional
        bool array of shape (n_tracks,): cold-start tracks. They never enter the personal
        ranking, only the up to ``rules.cold_slots`` cold slots (so with ``cold_slots=0``
        they are left out). Without it, there are no cold slots.
    item_factors : numpy.ndarray, optional
        float32 array of shape (n_tracks, factors): vectors of the diversity term; required
        when ``rules.diversity > 0``.
    popularity : numpy.ndarray, optional
        float array of shape (n_tracks,): listeners per track; required when
        ``rules.popularity_penalty > 0``.
    thumbs_down : scipy.sparse.csr_matrix, optional
        Shape (n_users, n_tracks): each listener's thumbed-down tracks (stored non-zero
        entries). With ``rules.artist_thumbs_down_limit > 0`` the artists a listener thumbed
        down that many tracks of are left out of their playlist, cold-start picks included
        (:func:`mask_disliked_artists`).

    Notes
    -----
    With ``diversity=0``, ``popularity_penalty=0`` and no ``cold_mask`` the playlists are
    exactly :func:`select_with_artist_cap` of the masked scores.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    n_tracks = known.shape[1]
    if len(track_artist) != n_tracks:
        raise ValueError(f"track_artist has {len(track_artist)} entries for {n_tracks} tracks")
    if rules.diversity > 0 and item_factors is None:
        raise ValueError("item_factors is required when rules.diversity > 0")
    if rules.popularity_penalty > 0 and popularity is None:
        raise ValueError("popularity is required when rules.popularity_penalty > 0")
    if cold_mask is not None and cold_mask.shape != (n_tracks,):
        raise ValueError(f"cold_mask has shape {cold_mask.shape}, expected ({n_tracks},)")
    personal_ok = np.ones(n_tracks, dtype=bool) if eligible is None else eligible.astype(bool)
    cold_columns = np.empty(0, dtype=np.int64)
    if cold_mask is not None:
        personal_ok &= ~cold_mask
        if rules.cold_slots > 0:
            cold_columns = np.flatnonzero(cold_mask).astype(np.int64)
    vectors = (
        np.asarray(item_factors, dtype=np.float32)
        if item_factors is not None
        else np.zeros((n_tracks, 1), dtype=np.float32)
    )
    artists = np.asarray(track_artist, dtype=np.int64)
    length, cap = rules.length, rules.max_tracks_per_artist
    rows_to_do = np.arange(known.shape[0]) if user_rows is None else np.asarray(user_rows)
    for start in range(0, len(rows_to_do), block_size):
        rows = rows_to_do[start : start + block_size].astype(np.int64)
        scores = recommender.score(rows)
        mask_known_tracks(scores, known[rows])
        if thumbs_down is not None and rules.artist_thumbs_down_limit > 0:
            mask_disliked_artists(
                scores, thumbs_down[rows], artists, rules.artist_thumbs_down_limit
            )
        cold_scores = scores[:, cold_columns]  # a copy: known cold tracks already -inf
        scores[:, ~personal_ok] = -np.inf
        candidates, candidate_scores = top_candidates(
            scores, artists, length, cap, length * rules.pool_factor
        )
        del scores
        personal, personal_scores = mmr_rerank(
            candidates,
            candidate_scores,
            vectors,
            artists,
            length,
            cap,
            diversity=rules.diversity,
            popularity=popularity,
            popularity_penalty=rules.popularity_penalty,
        )
        if len(cold_columns) == 0:
            is_cold = np.zeros(personal.shape, dtype=bool)
            yield PlaylistBlock(rows, personal, personal_scores, is_cold)
            continue
        cold_candidates, cold_candidate_scores = top_candidates(
            cold_scores,
            artists[cold_columns],
            rules.cold_slots,
            cap,
            rules.cold_slots * rules.pool_factor,
        )
        cold_items = np.where(cold_candidates >= 0, cold_columns[cold_candidates], -1)
        weakest = weakest_scores(personal_scores)
        finite = np.isfinite(weakest)
        threshold = np.where(
            finite, rules.cold_min_score_ratio * np.where(finite, weakest, 0.0), -np.inf
        )
        columns, chosen, is_cold = reserve_cold_slots(
            personal,
            personal_scores,
            cold_items,
            cold_candidate_scores,
            artists,
            length,
            cap,
            cold_slots=rules.cold_slots,
            min_cold_score=threshold,
        )
        yield PlaylistBlock(rows, columns, chosen, is_cold)


def popular_playlists(
    popularity: npt.NDArray[np.floating],
    track_artist: npt.NDArray[np.int64],
    known: sp.csr_matrix,
    rules: PlaylistRules,
    *,
    item_factors: npt.NDArray[np.floating] | None = None,
    diversity: float = 0.3,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Popular, varied playlists (:func:`recsys.coldstart.popular_diverse`) for listeners
    without usable history, each without the tracks that listener already knows.

    Parameters
    ----------
    popularity : numpy.ndarray
        float array of shape (n_tracks,): listeners per track; tracks with 0 never appear.
    track_artist : numpy.ndarray
        int64 array of shape (n_tracks,).
    known : scipy.sparse.csr_matrix
        Shape (B, n_tracks): what each of these listeners played or thumbed (usually
        nothing).
    rules : PlaylistRules
        Only ``length`` and ``max_tracks_per_artist`` apply.
    item_factors : numpy.ndarray, optional
        float array of shape (n_tracks, factors) for the similarity term.
    diversity : float
        λ of :func:`recsys.coldstart.popular_diverse`.

    Returns
    -------
    (columns, scores)
        int64 array (B, length), -1 padded; float32 array (B, length): the popularity of
        each track on a log scale in [0, 1] (:func:`recsys.rerank.popularity_prior`), NaN in
        the padding.
    """
    from recsys.coldstart import popular_diverse

    values = np.asarray(popularity, dtype=np.float64)
    if known.shape[1] != len(values):
        raise ValueError(f"known has {known.shape[1]} columns for {len(values)} tracks")

    def one_list(exclude: npt.NDArray[np.int64] | None) -> npt.NDArray[np.int64]:
        return popular_diverse(
            values,
            track_artist,
            rules.length,
            rules.max_tracks_per_artist,
            exclude,
            item_vectors=item_factors,
            diversity=diversity,
        )

    n_rows = known.shape[0]
    columns = np.empty((n_rows, rules.length), dtype=np.int64)
    history = np.diff(known.indptr)
    if np.any(history == 0):
        columns[history == 0] = one_list(None)
    # Listeners who know a few tracks each get their own list (rare: most have no events).
    for row in np.flatnonzero(history > 0):
        columns[row] = one_list(known.indices[known.indptr[row] : known.indptr[row + 1]])
    prior = popularity_prior(values)
    scores = np.where(columns >= 0, prior[np.maximum(columns, 0)], np.nan).astype(np.float32)
    return columns, scores

"""Weekly playlist assembly: score, exclude what the listener knows, re-rank for variety,
reserve a few slots for cold-start tracks, cap tracks per artist.

Everything here works on blocks of listeners so that memory does not grow with the
number of listeners and each block is an independent unit of work (a Celery chunk).

Per block (:func:`generate_playlists`): one matrix product scores every track into a buffer
reused by every block (:class:`BlockScorer`); tracks the listener played or thumbed are
masked in place through their sparse rows; the best ``pool_factor * length`` warm
candidates (:func:`top_candidates`, exact, at about one reading pass over the scores:
:func:`top_sorted`) are re-ranked by :func:`recsys.rerank.mmr_rerank` (diversity λ and
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

from recsys.neighbors import PRODUCT_ROWS
from recsys.recommender import Recommender
from recsys.rerank import (
    DEFAULT_ROW_BLOCK,
    mmr_rerank,
    occurrence_rank,
    popularity_prior,
    reserve_cold_slots,
)

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


def artist_track_index(track_artist: npt.NDArray[np.int64]) -> sp.csr_matrix:
    """(n_artists, n_tracks) CSR: a 1 where the track is the artist's."""
    artists = np.asarray(track_artist, dtype=np.int64)
    n_artists = max(int(artists.max(initial=-1)) + 1, 1)
    return sp.csr_matrix(
        (np.ones(len(artists)), (artists, np.arange(len(artists)))),
        shape=(n_artists, len(artists)),
    )


def mask_disliked_artists(
    scores: npt.NDArray[np.float32],
    thumbs_down: sp.csr_matrix,
    track_artist: npt.NDArray[np.int64],
    limit: int,
    *,
    artist_tracks: sp.csr_matrix | None = None,
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
    artist_tracks : scipy.sparse.csr_matrix, optional
        :func:`artist_track_index` of ``track_artist``, when the caller keeps it across
        blocks.

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
    tracks_of = artist_tracks if artist_tracks is not None else artist_track_index(track_artist)
    per_artist = sp.csr_matrix(
        (np.ones(len(rows)), (rows, track_artist[down.indices])), shape=(n_rows, tracks_of.shape[0])
    )  # duplicates summed: thumbs-down per (listener, artist)
    per_artist.data = (per_artist.data >= limit).astype(np.float64)
    per_artist.eliminate_zeros()
    if per_artist.nnz:
        # (listener, track) pairs of the excluded artists, written in place: no dense mask.
        excluded = sp.csr_matrix(per_artist @ tracks_of)
        excluded_rows = np.repeat(np.arange(n_rows), np.diff(excluded.indptr))
        scores[excluded_rows, excluded.indices] = -np.inf
    counts: npt.NDArray[np.int64] = np.diff(per_artist.indptr).astype(np.int64)
    return counts


#: Score columns per first-level chunk of :func:`top_sorted` (a strided chunk: columns
#: ``c, c + n_chunks, ...``), and first-level chunks per second-level group.
CHUNK_COLUMNS = 8
GROUP_CHUNKS = 8
#: A level of chunks is used only when it leaves at least this many chunks per selected one.
MIN_CHUNKS_PER_PICK = 4
#: Rows selected together: their chunk maxima stay in the processor's cache.
SELECT_ROWS = 256


def _special(values: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """NaN or +inf: a chunk maximum that hides which finite scores its chunk holds."""
    result: npt.NDArray[np.bool_] = ~(values < np.inf) & ~np.isneginf(values)
    return result


def _chunk_maxima(values: npt.NDArray[np.float32], chunk: int) -> npt.NDArray[np.float32]:
    """(P, n // chunk): the maximum of each strided chunk of each row (NaN propagates)."""
    n_rows, n_columns = values.shape
    n_chunks = n_columns // chunk
    maxima: npt.NDArray[np.float32] = (
        values[:, : n_chunks * chunk].reshape(n_rows, chunk, n_chunks).max(axis=1)
    )
    return maxima


def _open(
    values: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    firsts: npt.NDArray[np.int64],
    chunk: int,
    threshold: npt.NDArray[np.float32],
    keep_special: bool,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The entries of the strided chunks ``firsts`` of ``rows`` (columns ``first + i *
    (n // chunk)``) that may hold a top score: at least the row's threshold and above
    -inf. NaN and +inf entries are kept when ``keep_special`` (a chunk maximum that must
    be opened), else dropped.

    Returns
    -------
    (rows, columns, values)
        Flat arrays of the kept entries.
    """
    n_columns = values.shape[1]
    stride = n_columns // chunk
    columns = firsts[:, None] + stride * np.arange(chunk, dtype=np.int64)[None, :]
    found = np.take(values.reshape(-1), columns + (rows * n_columns)[:, None])
    keep = (found >= threshold[rows][:, None]) & (found > -np.inf)
    if keep_special:
        keep |= _special(found)
    else:
        keep &= found < np.inf
    which, offset = np.nonzero(keep)
    return rows[which], columns[which, offset], found[which, offset]


def _open_tail(
    values: npt.NDArray[np.float32],
    start: int,
    threshold: npt.NDArray[np.float32],
    keep_special: bool,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """As :func:`_open` for the columns ``start:`` of every row (those past the chunks)."""
    tail = values[:, start:]
    keep = (tail >= threshold[:, None]) & (tail > -np.inf)
    if keep_special:
        keep |= _special(tail)
    else:
        keep &= tail < np.inf
    rows, offset = np.nonzero(keep)
    return rows.astype(np.int64), offset.astype(np.int64) + start, tail[rows, offset]


def _sorted_order(
    rows: npt.NDArray[np.int64],
    columns: npt.NDArray[np.int64],
    values: npt.NDArray[np.float32],
    n_rows: int,
    n_columns: int,
) -> npt.NDArray[np.int64]:
    """The order of flat entries by row, then descending value (-0.0 equal to 0.0), then
    column: one sort of packed 64-bit keys when they fit, else a lexsort."""
    bits = (values + np.float32(0.0)).view(np.uint32)
    # Descending float order as ascending unsigned integers.
    descending = np.where(bits >> 31, bits, ~bits & np.uint32(0x7FFFFFFF)).astype(np.uint64)
    column_bits = max(1, (n_columns - 1).bit_length())
    row_bits = max(1, (n_rows - 1).bit_length())
    if row_bits + column_bits + 32 > 64:
        order: npt.NDArray[np.int64] = np.lexsort((columns, descending, rows))
        return order
    keys = (rows.astype(np.uint64) << np.uint64(32 + column_bits)) | (
        descending << np.uint64(column_bits)
    )
    keys |= columns.astype(np.uint64)
    order = np.argsort(keys)
    return order


def top_sorted(
    scores: npt.NDArray[np.float32], width: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Each row's ``width`` best finite scores, exactly, in descending score (ties: lower
    column first), at about the cost of one reading pass over ``scores``.

    The row's columns are cut into strided chunks and the chunks into groups; the maxima
    of both levels are one pass (and a pass over an eighth) of the scores. The
    ``width``-th largest group maximum is a threshold every top score reaches (at least
    ``width`` finite scores reach it), so only the groups, then the chunks, whose maximum
    reaches it are opened, and the few scores among them at or above it are sorted. A
    chunk holding NaN or +inf is always opened; NaN, +inf and -inf are never taken.

    Parameters
    ----------
    scores : numpy.ndarray
        float32 array (P, n); not modified, not copied.
    width : int
        Scores per row to return (at most n).

    Returns
    -------
    (columns, values, ties)
        int64 (P, width) columns, -1 padded where a row has fewer finite scores; float32
        (P, width) their scores, -inf in the padding; int64 (P,) how many scores of the
        whole row equal the row's last returned one (meaningful where it is finite).
    """
    n_rows, n_columns = scores.shape
    width = min(width, n_columns)
    out_columns = np.full((n_rows, width), -1, dtype=np.int64)
    out_values = np.full((n_rows, width), -np.inf, dtype=np.float32)
    ties = np.zeros(n_rows, dtype=np.int64)
    if n_rows == 0 or width == 0:
        return out_columns, out_values, ties
    for start in range(0, n_rows, SELECT_ROWS):
        stop = min(n_rows, start + SELECT_ROWS)
        _top_sorted_rows(
            np.ascontiguousarray(scores[start:stop], dtype=np.float32),
            out_columns[start:stop],
            out_values[start:stop],
            ties[start:stop],
        )
    return out_columns, out_values, ties


def _top_sorted_rows(
    values: npt.NDArray[np.float32],
    out_columns: npt.NDArray[np.int64],
    out_values: npt.NDArray[np.float32],
    ties: npt.NDArray[np.int64],
) -> None:
    """:func:`top_sorted` of a few rows, written into the given outputs."""
    n_rows, n_columns = values.shape
    width = out_columns.shape[1]
    rows, columns, found = _candidates(values, width)
    order = _sorted_order(rows, columns, found, n_rows, n_columns)
    rows, columns, found = rows[order], columns[order], found[order]
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    position = np.arange(len(rows), dtype=np.int64) - starts[rows]
    take = position < width
    out_columns[rows[take], position[take]] = columns[take]
    out_values[rows[take], position[take]] = values[rows[take], columns[take]]
    lowest = out_values[:, -1]
    ties[:] = np.bincount(rows[found == lowest[rows]], minlength=n_rows)


def _candidates(
    values: npt.NDArray[np.float32], width: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Flat (row, column, value) entries that hold every row's top ``width`` finite scores
    and every score equal to the ``width``-th (see :func:`top_sorted`)."""
    n_columns = values.shape[1]
    chunk = CHUNK_COLUMNS if n_columns // CHUNK_COLUMNS >= MIN_CHUNKS_PER_PICK * width else 1
    if chunk == 1:
        finite = np.isfinite(values)
        threshold = _threshold(np.where(finite, values, -np.inf), width)
        rows, columns = np.nonzero(finite & (values >= threshold[:, None]))
        return rows.astype(np.int64), columns.astype(np.int64), values[rows, columns]
    n_chunks = n_columns // chunk
    maxima = np.ascontiguousarray(_chunk_maxima(values, chunk))
    group = GROUP_CHUNKS if n_chunks // GROUP_CHUNKS >= MIN_CHUNKS_PER_PICK * width else 1
    top = _chunk_maxima(maxima, group) if group > 1 else maxima
    special = _special(top)
    threshold = _threshold(np.where(special, -np.inf, top), width)
    selected = ((top >= threshold[:, None]) & (top > -np.inf)) | special
    group_rows, groups = (part.astype(np.int64) for part in np.nonzero(selected))
    if group > 1:
        # The chunks of the selected groups, and the chunks past the last whole group.
        opened = [
            _open(maxima, group_rows, groups, group, threshold, True),
            _open_tail(maxima, (n_chunks // group) * group, threshold, True),
        ]
        chunk_rows = np.concatenate([part[0] for part in opened])
        chunk_ids = np.concatenate([part[1] for part in opened])
    else:
        chunk_rows, chunk_ids = group_rows, groups
    parts = [
        _open(values, chunk_rows, chunk_ids, chunk, threshold, False),
        _open_tail(values, n_chunks * chunk, threshold, False),
    ]
    return (
        np.concatenate([part[0] for part in parts]),
        np.concatenate([part[1] for part in parts]),
        np.concatenate([part[2] for part in parts]),
    )


def _threshold(values: npt.NDArray[np.float32], width: int) -> npt.NDArray[np.float32]:
    """float32 (P,): each row's ``width``-th largest value (-inf where it has fewer)."""
    n_columns = values.shape[1]
    if width > n_columns:
        return np.full(values.shape[0], -np.inf, dtype=np.float32)
    kth = n_columns - width
    result: npt.NDArray[np.float32] = np.partition(values, kth, axis=1)[:, kth]
    return result


def top_candidates(
    scores: npt.NDArray[np.float32],
    track_artist: npt.NDArray[np.int64],
    length: int,
    max_per_artist: int,
    width: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Each row's best-scoring tracks in descending score, enough to fill ``length`` slots
    under the artist cap.

    Starts with the exact top ``width`` of each row (:func:`top_sorted`, about one reading
    pass over the scores) and widens (x4) only the rows where fewer than ``length`` of them
    survive the artist cap while better-scoring tracks remain, or where those ``length``
    reach into tracks of equal score that the pool cuts through (so a playlist never
    depends on where the pool cuts a tie). -inf, NaN and +inf scores are never candidates.

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
        # The first round reads the scores in place; later ones copy their few rows.
        block = scores if len(pending) == n_rows else scores[pending]
        candidates, candidate_scores, ties = top_sorted(block, width)
        finite = candidates >= 0
        artists = np.where(finite, track_artist[np.maximum(candidates, 0)], 0)
        usable = np.cumsum((occurrence_rank(artists) < max_per_artist) & finite, axis=1)
        enough = usable[:, -1] >= length
        # A row whose first `length` usable candidates reach into tracks tied at the pool's
        # lowest score, more of which lie outside the pool, widens: its playlist must not
        # depend on where the pool cuts through the tie.
        last_needed = np.argmax(usable >= length, axis=1)
        lowest = candidate_scores[:, -1]
        at_edge = (
            enough
            & np.isfinite(lowest)
            & (candidate_scores[np.arange(len(pending)), last_needed] == lowest)
        )
        ties_cut = at_edge & (ties > (candidate_scores == lowest[:, None]).sum(axis=1))
        # A row is settled when the cap leaves enough, or when its pool already holds every
        # finite score, or when the pool is the whole catalog.
        done = (enough | ~finite[:, -1]) & ~ties_cut
        done |= width >= n_tracks
        if np.any(done):
            parts.append((pending[done], candidates[done], candidate_scores[done]))
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


def block_memory_bytes(
    block_size: int,
    n_tracks: int,
    pool: int,
    factors: int,
    n_cold: int = 0,
    *,
    partners: bool = False,
) -> int:
    """The most memory :func:`generate_playlists` allocates for one block of
    ``block_size`` listeners when its model writes into the reused buffer (every
    :class:`recsys.recommender.BlockRecommender` does, through ``score_into``), in bytes:
    the score buffer (4 bytes per listener and track), the copy of the cold-start tracks'
    scores, the selection's working set (one slice of :data:`SELECT_ROWS` rows at a time),
    the candidate pools of ``pool`` tracks and their re-ranking (one
    :data:`recsys.rerank.DEFAULT_ROW_BLOCK` of candidate vectors at a time), and per-track
    indexes. With ``partners`` (a :class:`recsys.blend.Blend` with any), also the partners'
    scratch buffer, as large as the score buffer, and one
    :data:`recsys.neighbors.PRODUCT_ROWS` slice of a partner's product (at most 12 bytes per
    score: a value and its column, or a dense row and its cast). It does not grow with the
    number of listeners: blocks reuse the buffers and free the rest.
    """
    scratch = 4 * block_size * n_tracks + 12 * PRODUCT_ROWS * n_tracks if partners else 0
    return (
        4 * block_size * (n_tracks + n_cold)
        + 2 * SELECT_ROWS * n_tracks
        + 128 * block_size * pool
        + 4 * DEFAULT_ROW_BLOCK * pool * (factors + 16)
        + 64 * n_tracks
        + scratch
    )


def block_size_within(
    memory_bytes: int,
    n_tracks: int,
    pool: int,
    factors: int,
    n_cold: int = 0,
    *,
    partners: bool = False,
) -> int:
    """The largest block size whose :func:`block_memory_bytes` fits ``memory_bytes``
    (at least 1)."""
    fixed = block_memory_bytes(0, n_tracks, pool, factors, n_cold, partners=partners)
    per_listener = block_memory_bytes(1, n_tracks, pool, factors, n_cold, partners=partners)
    return max(1, (memory_bytes - fixed) // (per_listener - fixed))


class BlockScorer:
    """Scores blocks of listeners into one buffer allocated once, so that a block costs
    no fresh (block, n_tracks) array: a model with a ``score_into(user_rows, out)``
    method (every :class:`recsys.recommender.BlockRecommender`) writes into it; any other
    model's :meth:`~recsys.recommender.Recommender.score` is used as it is.

    Attributes
    ----------
    recommender : Recommender
    buffer : numpy.ndarray or None
        float32 (block_size, n_tracks), allocated at the first block that uses it.
    """

    def __init__(self, recommender: Recommender, block_size: int, n_tracks: int) -> None:
        self.recommender = recommender
        self.block_size = block_size
        self.n_tracks = n_tracks
        self.buffer: npt.NDArray[np.float32] | None = None

    def score(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """float32 (len(rows), n_tracks) scores; a view of the buffer when the model can
        write into it (valid until the next call)."""
        score_into = getattr(self.recommender, "score_into", None)
        if score_into is None:
            return self.recommender.score(rows)
        if len(rows) > self.block_size:
            raise ValueError(f"{len(rows)} rows for blocks of {self.block_size}")
        if self.buffer is None:
            self.buffer = np.empty((self.block_size, self.n_tracks), dtype=np.float32)
        out = self.buffer[: len(rows)]
        score_into(rows, out)
        return out


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
        scored too (ALS scores them with its projected factors) when ``cold_mask`` is given.
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
    # 0 or -inf per track, added to every row: one contiguous pass, where setting the
    # blocked columns of each row writes scattered cells (benchmarks/generation.py's world,
    # 20k listeners x 50k tracks, many never played: 2.6 s less in 10 blocks).
    blocked = None if personal_ok.all() else np.where(personal_ok, 0.0, -np.inf).astype(np.float32)
    artist_tracks = (
        artist_track_index(artists)
        if thumbs_down is not None and rules.artist_thumbs_down_limit > 0
        else None
    )
    length, cap = rules.length, rules.max_tracks_per_artist
    rows_to_do = np.arange(known.shape[0]) if user_rows is None else np.asarray(user_rows)
    scorer = BlockScorer(recommender, min(block_size, max(len(rows_to_do), 1)), n_tracks)
    for start in range(0, len(rows_to_do), block_size):
        rows = rows_to_do[start : start + block_size].astype(np.int64)
        scores = scorer.score(rows)
        mask_known_tracks(scores, known[rows])
        if artist_tracks is not None and thumbs_down is not None:
            mask_disliked_artists(
                scores,
                thumbs_down[rows],
                artists,
                rules.artist_thumbs_down_limit,
                artist_tracks=artist_tracks,
            )
        cold_scores = scores[:, cold_columns]  # a copy: known cold tracks already -inf
        if blocked is not None:
            np.add(scores, blocked, out=scores)
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

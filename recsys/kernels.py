"""Compiled loops of the playlist pipeline (numba), for the work numpy can only do one
small array operation at a time.

Each kernel is the loop of a documented numpy-level function and is called only by it:
:func:`mmr_picks` by :func:`recsys.rerank.mmr_rerank`, :func:`best_anchors` by
:func:`recsys.explain.explain_anchors`. They run in the calling thread without the GIL
and are compiled once per machine (``cache=True``: numba's cache beside this file, or its
user-wide cache where the package folder is read-only). Importing this module imports
numba (about 0.8 s), so the modules that need it import it when they first run.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

#: Reassociation lets the compiler vectorise the dot products (float32 sums in another
#: order: the last bit may differ from BLAS's); no flag that assumes finite values, which
#: the kernels' ``-inf`` markers are not.
FASTMATH = {"reassoc", "contract"}


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def mmr_picks(
    items: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    relevance: npt.NDArray[np.float64],
    artists: npt.NDArray[np.int64],
    unit_factors: npt.NDArray[np.float32],
    use_similarity: bool,
    diversity: float,
    cap: int,
    out_items: npt.NDArray[np.int64],
    out_scores: npt.NDArray[np.float32],
) -> None:
    """The greedy picks of MMR for a block of rows (B, C), into ``out_items`` and
    ``out_scores`` (B, L).

    ``relevance`` (modified) holds each candidate's weighted relevance, ``-inf`` where it
    can never be picked; ``artists`` the artist of each candidate. At each step a row picks
    the first candidate of highest ``relevance - diversity * max similarity to the picks so
    far`` (the similarity term from the second step on, with ``use_similarity``: the dot
    product of the candidates' rows of ``unit_factors``, in float32), then blocks the pick
    and, once an artist has ``cap`` picks, that artist's other candidates. A row whose best
    value is not finite is done; the rest of its output is left as it was.
    """
    n_rows, width = items.shape
    length = out_items.shape[1]
    n_factors = unit_factors.shape[1]
    artist_picks = np.zeros(width, dtype=np.int32)
    max_similarity = np.zeros(width, dtype=np.float64)
    # The row's candidate vectors, contiguous: each step reads them all.
    vectors = np.zeros((width if use_similarity else 0, n_factors), dtype=np.float32)
    similarity = np.zeros(width if use_similarity else 0, dtype=np.float32)
    weight = diversity if use_similarity else 0.0
    for row in range(n_rows):
        artist_picks[:] = 0
        max_similarity[:] = 0.0
        if use_similarity:
            for column in range(width):
                vectors[column] = unit_factors[max(items[row, column], 0)]
        for step in range(length):
            best = 0
            best_value = -np.inf
            for column in range(width):
                # max_similarity is 0 until the first pick: the first step reads relevance.
                value = relevance[row, column] - max_similarity[column] * weight
                if value > best_value:
                    best, best_value = column, value
            if not np.isfinite(best_value):
                break
            out_items[row, step] = items[row, best]
            out_scores[row, step] = scores[row, best]
            relevance[row, best] = -np.inf
            artist = artists[row, best]
            for column in range(width):
                if artists[row, column] == artist:
                    artist_picks[column] += 1
                    if artist_picks[column] >= cap:
                        relevance[row, column] = -np.inf
            if use_similarity and step + 1 < length:
                np.dot(vectors, vectors[best], similarity)
                for column in range(width):
                    if step == 0 or similarity[column] > max_similarity[column]:
                        max_similarity[column] = similarity[column]


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def best_anchors(
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int32],
    data: npt.NDArray[np.float32],
    can_anchor: npt.NDArray[np.bool_],
    picks: npt.NDArray[np.int64],
    scored: npt.NDArray[np.bool_],
    space: npt.NDArray[np.float64],
    out_anchors: npt.NDArray[np.int64],
    out_cosine: npt.NDArray[np.float64],
) -> None:
    """For each ``scored`` pick of each row (B, L): the row's history entry (CSR
    ``indptr``, ``indices``, ``data``) with a positive value, ``can_anchor`` and not the
    pick itself whose ``space`` row has the largest dot product with the pick's (the first
    stored on a tie), into ``out_anchors`` and its dot product into
    ``out_cosine``; both are left as they were where no entry qualifies."""
    n_rows, length = picks.shape
    width = 0
    for row in range(n_rows):
        width = max(width, indptr[row + 1] - indptr[row])
    history = np.zeros((width, space.shape[1]), dtype=np.float64)
    columns = np.zeros(width, dtype=np.int64)
    dots = np.zeros(width, dtype=np.float64)
    for row in range(n_rows):
        usable = 0
        for entry in range(indptr[row], indptr[row + 1]):
            column = indices[entry]
            if data[entry] > 0 and can_anchor[column]:
                columns[usable] = column
                history[usable] = space[column]
                usable += 1
        if usable == 0:
            continue
        for slot in range(length):
            if not scored[row, slot]:
                continue
            pick = picks[row, slot]
            np.dot(history[:usable], space[pick], dots[:usable])
            best = -1
            best_value = -np.inf
            for index in range(usable):
                if columns[index] != pick and dots[index] > best_value:
                    best, best_value = index, dots[index]
            if best >= 0:
                out_anchors[row, slot] = columns[best]
                out_cosine[row, slot] = best_value

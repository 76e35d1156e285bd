"""Offline evaluation: train/test splits and top-K ranking metrics.

Everything here is pure numpy/scipy so that the weekly validation gate, the tests and the
benchmarks (``benchmarks/quality.py``) compute the same numbers.

Splits
------
:func:`time_split` mimics the product: train on what happened before a week's cut-off and
count as relevant only the tracks each listener *discovered* after it (a track the listener
already had before the cut-off is never a test item, since playlists only hold unheard
tracks). :func:`leave_k_out` is for data without timestamps, :func:`holdout_items` and
:func:`remove_items_from_train` set up a cold-start evaluation.

Metrics
-------
Every ranking metric takes ``recommended``, an int64 array of shape (n_eval_users, K) of
item columns in rank order padded with -1, and ``test``, a CSR matrix of shape
(n_eval_users, n_items) whose row ``u`` holds the relevant items of the listener of row
``u`` of ``recommended``. A -1 (no recommendation) is a miss. Conventions:

* ``recall@K = hits / min(K, |test_u|)`` (so a perfect list scores 1 even when the listener
  has more than K test items), averaged over listeners;
* ``precision@K = hits / K`` (padding counts as a miss);
* ``NDCG@K``: binary relevance, ``DCG = sum_j rel_j / log2(j + 2)`` over 0-based ranks
  ``j``, divided by the ideal DCG of ``min(K, |test_u|)`` hits at the top;
* ``MAP@K``: ``AP@K = sum_j precision@(j+1) * rel_j / min(K, |test_u|)``.

Every listener row of ``test`` must hold at least one test item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

__all__ = [
    "DEFAULT_K",
    "Split",
    "artist_diversity",
    "catalogue_coverage",
    "cold_start_recall",
    "evaluate",
    "gini_coefficient",
    "hit_matrix",
    "holdout_items",
    "intra_list_diversity",
    "item_popularity",
    "leave_k_out",
    "map_at_k",
    "ndcg_at_k",
    "ndcg_per_user",
    "novelty",
    "popularity_gini",
    "precision_at_k",
    "recall_at_k",
    "remove_items_from_train",
    "time_split",
]

#: Playlist length, the default cut-off of every metric.
DEFAULT_K = 50


@dataclass(frozen=True)
class Split:
    """A train/test split of a listener x item matrix.

    Attributes
    ----------
    train : scipy.sparse.csr_matrix
        float32 matrix of shape (n_users, n_items): what a model may learn from (play counts
        or confidence values, depending on the input), sorted indices.
    test : scipy.sparse.csr_matrix
        float32 matrix of shape (n_users, n_items) holding 1.0 for each relevant held-out
        (listener, item) pair; no pair is stored in both ``train`` and ``test``.
    eval_users : numpy.ndarray
        int64 array of shape (n_eval_users,): sorted rows with at least one test item.
    """

    train: sp.csr_matrix
    test: sp.csr_matrix
    eval_users: npt.NDArray[np.int64]


# ------------------------------------------------------------------------------------ splits


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"shape must be (n_users, n_items) with sizes >= 0, got {shape}")
    return int(shape[0]), int(shape[1])


def _binary(
    rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64], shape: tuple[int, int]
) -> sp.csr_matrix:
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape, dtype=np.float32
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def _rows_with_entries(matrix: sp.csr_matrix) -> npt.NDArray[np.int64]:
    return np.flatnonzero(np.diff(matrix.indptr) > 0).astype(np.int64)


def time_split(
    user_rows: npt.ArrayLike,
    item_cols: npt.ArrayLike,
    values: npt.ArrayLike,
    timestamps: npt.ArrayLike,
    cutoff: object,
    shape: tuple[int, int],
) -> Split:
    """Split events at ``cutoff``: train on the past, test on each listener's discoveries.

    Parameters
    ----------
    user_rows, item_cols : array-like of int, shape (n_events,)
        Row and column of each event (a play, or one row per pair); repeats are allowed.
    values : array-like of float, shape (n_events,)
        Value of each event; ``train`` holds the sum per pair (ones give play counts).
    timestamps : array-like, shape (n_events,)
        Event times, any dtype comparable with ``cutoff`` (int64 microseconds,
        ``datetime64``...).
    cutoff : scalar
        Events strictly before it train; events at or after it can only be test items.
    shape : tuple of int
        (n_users, n_items).

    Returns
    -------
    Split
        ``train``: sum of ``values`` per pair over events before ``cutoff`` (a pair whose
        values sum to 0 is still stored). ``test``: the pairs whose first event is at or
        after ``cutoff``, so an item the listener already had in ``train`` is never a test
        item. ``eval_users``: rows with at least one test item (they may have no train row,
        e.g. listeners who joined after ``cutoff``; callers decide whether to keep them).

    Raises
    ------
    ValueError
        If the arrays differ in length, or a row or column is outside ``shape``.
    """
    n_users, n_items = _check_shape(shape)
    rows = np.asarray(user_rows, dtype=np.int64)
    cols = np.asarray(item_cols, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float32)
    times = np.asarray(timestamps)
    if not (rows.shape == cols.shape == vals.shape == times.shape) or rows.ndim != 1:
        raise ValueError(
            "user_rows, item_cols, values and timestamps must be 1-d of one length, got "
            f"{rows.shape}, {cols.shape}, {vals.shape} and {times.shape}"
        )
    _check_range("user_rows", rows, n_users)
    _check_range("item_cols", cols, n_items)
    before = np.asarray(times < cutoff, dtype=bool)
    keys = rows * np.int64(max(n_items, 1)) + cols
    train_keys, inverse = np.unique(keys[before], return_inverse=True)
    train_values = np.zeros(len(train_keys), dtype=np.float64)
    np.add.at(train_values, inverse, vals[before].astype(np.float64))
    train = sp.csr_matrix(
        (
            train_values.astype(np.float32),
            (train_keys // max(n_items, 1), train_keys % max(n_items, 1)),
        ),
        shape=(n_users, n_items),
        dtype=np.float32,
    )
    train.sort_indices()
    later_keys = np.unique(keys[~before])
    discovered = later_keys[~np.isin(later_keys, train_keys, assume_unique=True)]
    test = _binary(discovered // max(n_items, 1), discovered % max(n_items, 1), (n_users, n_items))
    return Split(train=train, test=test, eval_users=_rows_with_entries(test))


def leave_k_out(matrix: sp.spmatrix | sp.sparray, k: int, seed: int) -> Split:
    """Hold out ``k`` random positive items of every listener who has more than ``k``.

    Parameters
    ----------
    matrix : scipy sparse matrix
        Shape (n_users, n_items); stored positive values are interactions. Negative values
        (thumbs-down) are never held out and stay in ``train``.
    k : int
        Items held out per listener (>= 1).
    seed : int
        Seed of the random choice; equal seeds give equal splits.

    Returns
    -------
    Split
        ``train``: ``matrix`` without the held-out entries (values kept, float32).
        ``test``: 1.0 at each held-out entry. ``eval_users``: the listeners with more than
        ``k`` positive items.

    Raises
    ------
    ValueError
        If ``k`` < 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    csr.sum_duplicates()
    csr.sort_indices()
    n_users, n_items = csr.shape
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(csr.indptr))
    positive = csr.data > 0
    rng = np.random.default_rng(seed)
    draw = rng.random(len(rows))
    # Rank the positive entries of each row in a random order; non-positive ones sort last.
    order = np.lexsort((draw, ~positive, rows))
    starts = csr.indptr[rows[order]]
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows)) - starts
    n_positive = np.bincount(rows[positive], minlength=n_users)
    held = positive & (rank < k) & (n_positive[rows] > k)
    test = _binary(rows[held], csr.indices[held].astype(np.int64), (n_users, n_items))
    train = sp.csr_matrix(
        (csr.data[~held], (rows[~held], csr.indices[~held])),
        shape=(n_users, n_items),
        dtype=np.float32,
    )
    train.sort_indices()
    return Split(train=train, test=test, eval_users=_rows_with_entries(test))


def holdout_items(
    n_items: int,
    fraction: float,
    seed: int,
    eligible: npt.ArrayLike | None = None,
) -> npt.NDArray[np.int64]:
    """Pick item columns to remove entirely from training (cold-start evaluation).

    Parameters
    ----------
    n_items : int
        Number of item columns.
    fraction : float
        Share of the eligible items to pick, in [0, 1]; ``round(fraction * n_eligible)``
        items are picked.
    seed : int
        Seed of the random choice.
    eligible : array-like, optional
        bool mask of shape (n_items,) or int array of item columns that may be picked
        (e.g. items with test interactions); default every item.

    Returns
    -------
    numpy.ndarray
        Sorted int64 array of distinct item columns.

    Raises
    ------
    ValueError
        If ``fraction`` is outside [0, 1], ``n_items`` is negative, or ``eligible`` does not
        describe columns of ``n_items`` items.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if eligible is None:
        pool = np.arange(n_items, dtype=np.int64)
    else:
        given = np.asarray(eligible)
        if given.dtype == np.bool_:
            if given.shape != (n_items,):
                raise ValueError(
                    f"eligible as a mask must have shape ({n_items},), got {given.shape}"
                )
            pool = np.flatnonzero(given).astype(np.int64)
        else:
            pool = np.unique(given.astype(np.int64))
            _check_range("eligible", pool, n_items)
    count = round(fraction * len(pool))
    rng = np.random.default_rng(seed)
    picked = rng.choice(pool, size=count, replace=False) if count else pool[:0]
    return np.sort(picked).astype(np.int64)


def remove_items_from_train(split: Split, items: npt.ArrayLike) -> Split:
    """The same split with the columns ``items`` emptied in ``train`` (``test`` kept).

    Raises
    ------
    ValueError
        If an item is not a column of the split.
    """
    columns = np.asarray(items, dtype=np.int64)
    n_items = split.train.shape[1]
    _check_range("items", columns, n_items)
    keep = np.ones(n_items, dtype=bool)
    keep[columns] = False
    train = split.train.copy()
    train.data[~keep[train.indices]] = 0.0
    train.eliminate_zeros()
    return Split(train=train, test=split.test, eval_users=split.eval_users)


def _check_range(name: str, values: npt.NDArray[np.int64], size: int) -> None:
    if len(values) and (values.min() < 0 or values.max() >= size):
        raise ValueError(
            f"{name} must lie in [0, {size}), got values in [{values.min()}, {values.max()}]"
        )


# ----------------------------------------------------------------------------------- metrics


def _check_ranking(
    recommended: npt.ArrayLike, test: sp.spmatrix | sp.sparray
) -> tuple[npt.NDArray[np.int64], sp.csr_matrix]:
    recs = np.asarray(recommended)
    if recs.ndim != 2 or not np.issubdtype(recs.dtype, np.integer):
        raise ValueError(
            f"recommended must be a 2-d integer array (n_eval_users, K), got {recs.dtype} "
            f"of shape {recs.shape}"
        )
    csr = sp.csr_matrix(test)
    if csr.shape[0] != recs.shape[0]:
        raise ValueError(
            f"test has {csr.shape[0]} rows but recommended has {recs.shape[0]}; row u of test "
            "must hold the test items of row u of recommended"
        )
    if recs.shape[1] == 0:
        raise ValueError("recommended must have at least one column (K >= 1)")
    n_items = csr.shape[1]
    if recs.size and (recs.min() < -1 or recs.max() >= n_items):
        raise ValueError(f"recommended holds columns outside [-1, {n_items})")
    return recs.astype(np.int64, copy=False), csr


def _test_sizes(test: sp.csr_matrix) -> npt.NDArray[np.int64]:
    csr = test.copy()
    csr.eliminate_zeros()
    sizes: npt.NDArray[np.int64] = np.diff(csr.indptr).astype(np.int64)
    if np.any(sizes == 0):
        raise ValueError(
            f"test has {int(np.sum(sizes == 0))} rows without test items; evaluate only the "
            "listeners of Split.eval_users"
        )
    return sizes


def hit_matrix(recommended: npt.ArrayLike, test: sp.spmatrix | sp.sparray) -> npt.NDArray[np.bool_]:
    """bool array of shape (n_eval_users, K): True where the recommended item is a test item.

    Padding (-1) is never a hit. A test item recommended twice in one row counts once.
    """
    recs, csr = _check_ranking(recommended, test)
    csr = csr.copy()
    csr.eliminate_zeros()
    csr.sum_duplicates()
    n_rows, k = recs.shape
    n_items = np.int64(max(csr.shape[1], 1))
    test_rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(csr.indptr))
    test_keys = np.sort(test_rows * n_items + csr.indices)
    rec_keys = np.arange(n_rows, dtype=np.int64)[:, None] * n_items + recs
    hits = (recs >= 0) & np.isin(rec_keys, test_keys)
    # A repeated item in one row is a single hit: keep only its first position.
    if k > 1:
        order = np.argsort(rec_keys, axis=1, kind="stable")
        sorted_keys = np.take_along_axis(rec_keys, order, axis=1)
        repeat = np.zeros_like(hits)
        repeat_sorted = np.zeros((n_rows, k), dtype=bool)
        repeat_sorted[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        hits &= ~repeat
    result: npt.NDArray[np.bool_] = hits
    return result


def recall_at_k(recommended: npt.ArrayLike, test: sp.spmatrix | sp.sparray) -> float:
    """Mean over listeners of ``hits / min(K, |test_u|)``; K = ``recommended.shape[1]``."""
    hits = hit_matrix(recommended, test)
    sizes = _test_sizes(sp.csr_matrix(test))
    return float(np.mean(hits.sum(axis=1) / np.minimum(hits.shape[1], sizes)))


def precision_at_k(recommended: npt.ArrayLike, test: sp.spmatrix | sp.sparray) -> float:
    """Mean over listeners of ``hits / K`` (padding is a miss)."""
    hits = hit_matrix(recommended, test)
    _test_sizes(sp.csr_matrix(test))
    return float(np.mean(hits.sum(axis=1) / hits.shape[1]))


def _discounts(k: int) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)
    return result


def ndcg_per_user(
    recommended: npt.ArrayLike, test: sp.spmatrix | sp.sparray
) -> npt.NDArray[np.float64]:
    """float64 array (n_eval_users,): NDCG@K of each listener (binary relevance, ideal list
    of ``min(K, |test_u|)`` hits), e.g. for paired bootstrap comparisons of two methods."""
    hits = hit_matrix(recommended, test)
    sizes = _test_sizes(sp.csr_matrix(test))
    k = hits.shape[1]
    discounts = _discounts(k)
    ideal = np.concatenate(([0.0], np.cumsum(discounts)))[np.minimum(k, sizes)]
    result: npt.NDArray[np.float64] = (hits @ discounts) / ideal
    return result


def ndcg_at_k(recommended: npt.ArrayLike, test: sp.spmatrix | sp.sparray) -> float:
    """Mean NDCG@K with binary relevance; the ideal list has ``min(K, |test_u|)`` hits."""
    return float(np.mean(ndcg_per_user(recommended, test)))


def map_at_k(recommended: npt.ArrayLike, test: sp.spmatrix | sp.sparray) -> float:
    """Mean average precision at K, ``AP = sum_j P@(j+1) rel_j / min(K, |test_u|)``."""
    hits = hit_matrix(recommended, test)
    sizes = _test_sizes(sp.csr_matrix(test))
    k = hits.shape[1]
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = np.sum(precision * hits, axis=1) / np.minimum(k, sizes)
    return float(np.mean(ap))


def cold_start_recall(
    recommended: npt.ArrayLike,
    test: sp.spmatrix | sp.sparray,
    cold_items: npt.ArrayLike,
) -> float:
    """Recall@K restricted to test items in ``cold_items``.

    For every listener with at least one test item in ``cold_items``:
    ``hits on cold test items / min(K, |test_u ∩ cold|)``; the mean over those listeners,
    or NaN when no listener has a cold test item.

    Parameters
    ----------
    cold_items : array-like of int
        Item columns that count as cold (e.g. from :func:`holdout_items`).
    """
    recs, csr = _check_ranking(recommended, test)
    n_items = csr.shape[1]
    columns = np.asarray(cold_items, dtype=np.int64)
    _check_range("cold_items", columns, n_items)
    is_cold = np.zeros(n_items, dtype=bool)
    is_cold[columns] = True
    cold_test = csr.copy()
    cold_test.eliminate_zeros()
    cold_test.data = cold_test.data * is_cold[cold_test.indices]
    cold_test.eliminate_zeros()
    sizes = np.diff(cold_test.indptr)
    users = np.flatnonzero(sizes > 0)
    if len(users) == 0:
        return float("nan")
    hits = hit_matrix(recs[users], cold_test[users])
    return float(np.mean(hits.sum(axis=1) / np.minimum(recs.shape[1], sizes[users])))


def catalogue_coverage(recommended: npt.ArrayLike, n_items: int) -> float:
    """Distinct recommended items (padding excluded) divided by ``n_items``."""
    if n_items < 1:
        raise ValueError(f"n_items must be at least 1, got {n_items}")
    recs = np.asarray(recommended)
    return float(len(np.unique(recs[recs >= 0])) / n_items)


def artist_diversity(recommended: npt.ArrayLike, item_artist: npt.ArrayLike) -> tuple[float, float]:
    """Artist variety of the lists.

    Parameters
    ----------
    recommended : numpy.ndarray
        int64 array (n_lists, K) padded with -1.
    item_artist : numpy.ndarray
        int array of shape (n_items,): the artist number of each item.

    Returns
    -------
    (mean_distinct_artists, mean_top_artist_share)
        The mean number of distinct artists per list, and the mean share of a list's items
        held by its most frequent artist; both over lists with at least one item (NaN when
        every list is empty).
    """
    recs = np.asarray(recommended, dtype=np.int64)
    if recs.ndim != 2:
        raise ValueError(f"recommended must be 2-d (n_lists, K), got shape {recs.shape}")
    artists_of = np.asarray(item_artist, dtype=np.int64)
    if recs.size and recs.max() >= len(artists_of):
        raise ValueError(
            f"item_artist has {len(artists_of)} entries but recommended holds item {recs.max()}"
        )
    valid = recs >= 0
    lengths = valid.sum(axis=1)
    nonempty = lengths > 0
    if not np.any(nonempty):
        return float("nan"), float("nan")
    artists = np.where(valid, artists_of[np.maximum(recs, 0)], -1)[nonempty]
    artists = np.sort(artists, axis=1)
    valid_sorted = artists >= 0
    new_run = np.ones_like(valid_sorted)
    new_run[:, 1:] = artists[:, 1:] != artists[:, :-1]
    distinct = np.sum(new_run & valid_sorted, axis=1)
    # Longest run of one artist in each sorted row.
    n_rows, width = artists.shape
    positions = np.broadcast_to(np.arange(width), (n_rows, width))
    run_start = np.maximum.accumulate(np.where(new_run, positions, 0), axis=1)
    run_length = np.where(valid_sorted, positions - run_start + 1, 0)
    top_share = run_length.max(axis=1) / lengths[nonempty]
    return float(np.mean(distinct)), float(np.mean(top_share))


def item_popularity(train: sp.spmatrix | sp.sparray) -> npt.NDArray[np.int64]:
    """int64 array (n_items,): the number of listeners with a positive entry for each item."""
    csr = sp.csr_matrix(train)
    counts = np.bincount(csr.indices[csr.data > 0], minlength=csr.shape[1])
    result: npt.NDArray[np.int64] = counts.astype(np.int64)
    return result


def novelty(recommended: npt.ArrayLike, popularity: npt.ArrayLike, n_users: int) -> float:
    """Mean self-information of recommended items, in bits.

    The popularity share of item ``i`` is ``(popularity[i] + 1) / (n_users + 1)`` (add-one
    smoothing so that an item nobody had in training is finite, ``log2(n_users + 1)``). A
    list's novelty is the mean ``-log2(share)`` of its items (padding excluded); the result is
    the mean over lists with at least one item (NaN when all are empty).

    Parameters
    ----------
    popularity : array-like of int, shape (n_items,)
        Training listeners per item (:func:`item_popularity`).
    n_users : int
        Number of training listeners (rows of the training matrix).
    """
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
    pop = np.asarray(popularity, dtype=np.float64)
    if np.any(pop < 0) or np.any(pop > n_users):
        raise ValueError("popularity must lie in [0, n_users]")
    recs = np.asarray(recommended, dtype=np.int64)
    if recs.ndim != 2:
        raise ValueError(f"recommended must be 2-d (n_lists, K), got shape {recs.shape}")
    if recs.size and recs.max() >= len(pop):
        raise ValueError(f"popularity has {len(pop)} entries but recommended holds {recs.max()}")
    information = -np.log2((pop + 1.0) / (n_users + 1.0))
    valid = recs >= 0
    lengths = valid.sum(axis=1)
    nonempty = lengths > 0
    if not np.any(nonempty):
        return float("nan")
    per_list = np.where(valid, information[np.maximum(recs, 0)], 0.0).sum(axis=1)
    return float(np.mean(per_list[nonempty] / lengths[nonempty]))


def intra_list_diversity(
    recommended: npt.ArrayLike, item_vectors: npt.ArrayLike, block: int = 1024
) -> float:
    """Mean pairwise cosine distance (1 - cosine similarity) of each list's items, averaged
    over lists with at least two items (NaN when there is none): what the MMR re-ranking
    raises, in the space of its vectors.

    Parameters
    ----------
    recommended : numpy.ndarray
        int64 array (n_lists, K) padded with -1.
    item_vectors : numpy.ndarray
        float array (n_items, d): e.g. the ALS item factors. A zero vector counts as
        dissimilar to every other (similarity 0).
    block : int
        Lists gathered at once (bounds the (block, K, d) gather).
    """
    recs = np.asarray(recommended, dtype=np.int64)
    vectors = np.asarray(item_vectors, dtype=np.float32)
    if recs.ndim != 2 or vectors.ndim != 2:
        raise ValueError(
            f"recommended and item_vectors must be 2-d, got {recs.shape} and {vectors.shape}"
        )
    if recs.size and recs.max() >= len(vectors):
        raise ValueError(f"item_vectors has {len(vectors)} rows but recommended holds {recs.max()}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    totals: list[np.ndarray] = []
    for start in range(0, len(recs), block):
        rows = recs[start : start + block]
        valid = rows >= 0
        gathered = unit[np.maximum(rows, 0)] * valid[:, :, None]  # padding: zero vectors
        similarity = np.einsum("bkd,bjd->bkj", gathered, gathered, dtype=np.float64)
        count = valid.sum(axis=1).astype(np.float64)
        pairs = count * (count - 1.0)
        # The diagonal adds each valid item's self-similarity 1 (0 for a zero vector).
        self_similarity = np.einsum("bkd,bkd->b", gathered, gathered, dtype=np.float64)
        off_diagonal = similarity.sum(axis=(1, 2)) - self_similarity
        keep = pairs > 0
        totals.append(1.0 - off_diagonal[keep] / pairs[keep])
    values = np.concatenate(totals) if totals else np.empty(0)
    return float(values.mean()) if len(values) else float("nan")


def gini_coefficient(values: npt.ArrayLike) -> float:
    """Gini coefficient of non-negative ``values`` (0: all equal, -> 1: one holds all).

    Uses ``G = sum_i (2 i - n - 1) x_(i) / (n sum x)`` over the ascending order statistics
    ``x_(1..n)``; 0.0 when every value is zero.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if np.any(x < 0):
        raise ValueError("values must be non-negative")
    n = len(x)
    total = x.sum()
    if n == 0 or total == 0:
        return 0.0
    index = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2.0 * index - n - 1.0) * x) / (n * total))


def popularity_gini(recommended: npt.ArrayLike, n_items: int) -> float:
    """Gini coefficient of how often each of the ``n_items`` items is recommended."""
    if n_items < 1:
        raise ValueError(f"n_items must be at least 1, got {n_items}")
    recs = np.asarray(recommended, dtype=np.int64)
    counts = np.bincount(recs[recs >= 0], minlength=n_items)
    if len(counts) > n_items:
        raise ValueError(f"recommended holds items >= n_items ({n_items})")
    return gini_coefficient(counts)


def evaluate(
    recommended: npt.ArrayLike,
    test: sp.spmatrix | sp.sparray,
    train: sp.spmatrix | sp.sparray,
    *,
    item_artist: npt.ArrayLike | None = None,
    cold_items: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Every metric of this module for one set of recommendation lists.

    Parameters
    ----------
    recommended : numpy.ndarray
        int64 array (n_eval_users, K), item columns in rank order padded with -1.
    test : scipy.sparse.csr_matrix
        Shape (n_eval_users, n_items): row ``u`` holds the test items of row ``u`` of
        ``recommended`` (e.g. ``split.test[split.eval_users]``); every row non-empty.
    train : scipy.sparse.csr_matrix
        Shape (n_users, n_items), all training listeners: item popularity for novelty.
    item_artist : numpy.ndarray, optional
        int array (n_items,): artist of each item; without it the artist metrics are NaN.
    cold_items : array-like of int, optional
        Item columns counted as cold; without it ``cold_recall`` is NaN.

    Returns
    -------
    dict
        ``k``, ``users``, ``recall``, ``precision``, ``ndcg``, ``map``, ``coverage``,
        ``artists_per_list``, ``top_artist_share``, ``novelty``, ``gini``, ``cold_recall``
        (every rate at K = ``recommended.shape[1]``).
    """
    recs, test_csr = _check_ranking(recommended, test)
    train_csr = sp.csr_matrix(train)
    n_items = test_csr.shape[1]
    if train_csr.shape[1] != n_items:
        raise ValueError(f"train has {train_csr.shape[1]} items but test has {n_items}")
    hits = hit_matrix(recs, test_csr)
    sizes = _test_sizes(test_csr)
    k = recs.shape[1]
    relevant = np.minimum(k, sizes)
    discounts = _discounts(k)
    ideal = np.concatenate(([0.0], np.cumsum(discounts)))[relevant]
    precision_curve = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    if item_artist is not None:
        artists, top_share = artist_diversity(recs, item_artist)
    else:
        artists = top_share = float("nan")
    return {
        "k": float(k),
        "users": float(recs.shape[0]),
        "recall": float(np.mean(hits.sum(axis=1) / relevant)),
        "precision": float(np.mean(hits.sum(axis=1) / k)),
        "ndcg": float(np.mean((hits @ discounts) / ideal)),
        "map": float(np.mean(np.sum(precision_curve * hits, axis=1) / relevant)),
        "coverage": catalogue_coverage(recs, n_items),
        "artists_per_list": artists,
        "top_artist_share": top_share,
        "novelty": novelty(recs, item_popularity(train_csr), max(train_csr.shape[0], 1)),
        "gini": popularity_gini(recs, n_items),
        "cold_recall": (
            cold_start_recall(recs, test_csr, cold_items)
            if cold_items is not None
            else float("nan")
        ),
    }

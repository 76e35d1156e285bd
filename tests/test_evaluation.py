"""recsys.evaluation: every metric against a slow, obviously correct loop, plus split invariants.

The reference functions below loop over listeners and items in plain Python (as lightfm's
tests/test_evaluation.py does) and share no code with the vectorised implementation.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluation import (
    Split,
    artist_diversity,
    catalogue_coverage,
    cold_start_recall,
    evaluate,
    gini_coefficient,
    hit_matrix,
    holdout_items,
    intra_list_diversity,
    item_popularity,
    leave_k_out,
    map_at_k,
    ndcg_at_k,
    ndcg_per_user,
    novelty,
    popularity_gini,
    precision_at_k,
    recall_at_k,
    remove_items_from_train,
    time_split,
)

# ------------------------------------------------------------------ slow reference metrics


def _test_sets(test: sp.csr_matrix) -> list[set[int]]:
    dense = test.toarray()
    return [{j for j in range(dense.shape[1]) if dense[u, j] != 0} for u in range(dense.shape[0])]


def _hits(row: list[int], relevant: set[int]) -> list[bool]:
    seen: set[int] = set()
    result = []
    for item in row:
        result.append(item >= 0 and item in relevant and item not in seen)
        seen.add(item)
    return result


def ref_recall(recs: np.ndarray, test: sp.csr_matrix) -> float:
    sets, k, total = _test_sets(test), recs.shape[1], 0.0
    for u, row in enumerate(recs.tolist()):
        total += sum(_hits(row, sets[u])) / min(k, len(sets[u]))
    return total / len(sets)


def ref_precision(recs: np.ndarray, test: sp.csr_matrix) -> float:
    sets, k, total = _test_sets(test), recs.shape[1], 0.0
    for u, row in enumerate(recs.tolist()):
        total += sum(_hits(row, sets[u])) / k
    return total / len(sets)


def ref_ndcg(recs: np.ndarray, test: sp.csr_matrix) -> float:
    sets, k, total = _test_sets(test), recs.shape[1], 0.0
    for u, row in enumerate(recs.tolist()):
        dcg = 0.0
        for rank, hit in enumerate(_hits(row, sets[u])):
            if hit:
                dcg += 1.0 / math.log2(rank + 2)
        idcg = 0.0
        for rank in range(min(k, len(sets[u]))):
            idcg += 1.0 / math.log2(rank + 2)
        total += dcg / idcg
    return total / len(sets)


def ref_ndcg_per_user(recs: np.ndarray, test: sp.csr_matrix) -> list[float]:
    return [ref_ndcg(recs[u : u + 1], test[u : u + 1]) for u in range(recs.shape[0])]


def ref_map(recs: np.ndarray, test: sp.csr_matrix) -> float:
    sets, k, total = _test_sets(test), recs.shape[1], 0.0
    for u, row in enumerate(recs.tolist()):
        found, score = 0, 0.0
        for rank, hit in enumerate(_hits(row, sets[u])):
            if hit:
                found += 1
                score += found / (rank + 1)
        total += score / min(k, len(sets[u]))
    return total / len(sets)


def ref_cold_recall(recs: np.ndarray, test: sp.csr_matrix, cold: set[int]) -> float:
    sets, k = _test_sets(test), recs.shape[1]
    scores = []
    for u, row in enumerate(recs.tolist()):
        relevant = sets[u] & cold
        if relevant:
            scores.append(sum(_hits(row, relevant)) / min(k, len(relevant)))
    return sum(scores) / len(scores) if scores else math.nan


def ref_coverage(recs: np.ndarray, n_items: int) -> float:
    items = {item for row in recs.tolist() for item in row if item >= 0}
    return len(items) / n_items


def ref_diversity(recs: np.ndarray, item_artist: list[int]) -> tuple[float, float]:
    distinct, shares = [], []
    for row in recs.tolist():
        artists = [item_artist[item] for item in row if item >= 0]
        if artists:
            distinct.append(len(set(artists)))
            shares.append(max(Counter(artists).values()) / len(artists))
    if not distinct:
        return math.nan, math.nan
    return sum(distinct) / len(distinct), sum(shares) / len(shares)


def ref_novelty(recs: np.ndarray, train: sp.csr_matrix) -> float:
    dense = train.toarray()
    n_users, n_items = dense.shape
    listeners = [sum(1 for u in range(n_users) if dense[u, i] > 0) for i in range(n_items)]
    per_list = []
    for row in recs.tolist():
        items = [item for item in row if item >= 0]
        if items:
            bits = [-math.log2((listeners[i] + 1) / (n_users + 1)) for i in items]
            per_list.append(sum(bits) / len(bits))
    return sum(per_list) / len(per_list) if per_list else math.nan


def ref_gini(values: list[float]) -> float:
    """Mean absolute difference over all pairs / (2 * mean): the textbook definition."""
    n = len(values)
    mean = sum(values) / n
    if mean == 0:
        return 0.0
    spread = sum(abs(a - b) for a in values for b in values)
    return spread / (2 * n * n * mean)


def ref_popularity_gini(recs: np.ndarray, n_items: int) -> float:
    counts = [0] * n_items
    for row in recs.tolist():
        for item in row:
            if item >= 0:
                counts[item] += 1
    return ref_gini([float(c) for c in counts])


# --------------------------------------------------------------------------- random inputs


def _random_case(
    seed: int, n_users: int = 25, n_items: int = 40, k: int = 10
) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Lists with padding and duplicates, test sets both smaller and larger than K."""
    rng = np.random.default_rng(seed)
    recs = np.full((n_users, k), -1, dtype=np.int64)
    for u in range(n_users):
        length = int(rng.integers(0, k + 1)) if u % 3 == 0 else k
        recs[u, :length] = rng.permutation(n_items)[:length]
    if k > 1:
        recs[1, 1] = recs[1, 0]  # a repeated item counts once
    rows, cols = [], []
    for u in range(n_users):
        size = int(rng.integers(1, 2 * k + 2))
        for item in rng.choice(n_items, size=min(size, n_items), replace=False):
            rows.append(u)
            cols.append(int(item))
    test = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), (n_users, n_items))
    train = sp.random(
        n_users + 5, n_items, density=0.2, format="csr", random_state=seed, dtype=np.float32
    )
    item_artist = rng.integers(0, 6, size=n_items)
    return recs, test, train, item_artist


SEEDS = [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 5, 10, 50])
def test_ranking_metrics_match_the_reference(seed: int, k: int) -> None:
    recs, test, _, _ = _random_case(seed, n_items=60, k=k)
    assert (recs == -1).any()
    sizes = np.diff(test.indptr)
    if k > 1:
        assert (sizes < k).any()
    assert recall_at_k(recs, test) == pytest.approx(ref_recall(recs, test), abs=1e-12)
    assert precision_at_k(recs, test) == pytest.approx(ref_precision(recs, test), abs=1e-12)
    assert ndcg_at_k(recs, test) == pytest.approx(ref_ndcg(recs, test), abs=1e-12)
    assert map_at_k(recs, test) == pytest.approx(ref_map(recs, test), abs=1e-12)
    np.testing.assert_allclose(ndcg_per_user(recs, test), ref_ndcg_per_user(recs, test))


@pytest.mark.parametrize("seed", SEEDS)
def test_catalogue_metrics_match_the_reference(seed: int) -> None:
    recs, test, train, item_artist = _random_case(seed)
    n_items = test.shape[1]
    assert catalogue_coverage(recs, n_items) == pytest.approx(ref_coverage(recs, n_items))
    distinct, share = artist_diversity(recs, item_artist)
    ref_distinct, ref_share = ref_diversity(recs, item_artist.tolist())
    assert distinct == pytest.approx(ref_distinct)
    assert share == pytest.approx(ref_share)
    assert novelty(recs, item_popularity(train), train.shape[0]) == pytest.approx(
        ref_novelty(recs, train)
    )
    assert popularity_gini(recs, n_items) == pytest.approx(ref_popularity_gini(recs, n_items))
    cold = set(np.random.default_rng(seed).choice(n_items, size=8, replace=False).tolist())
    assert cold_start_recall(recs, test, sorted(cold)) == pytest.approx(
        ref_cold_recall(recs, test, cold)
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_gini_matches_the_pairwise_definition(seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 20, size=int(seed) * 7 + 3)
    assert gini_coefficient(values) == pytest.approx(ref_gini(values.astype(float).tolist()))


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluate_reports_every_metric_as_the_reference(seed: int) -> None:
    recs, test, train, item_artist = _random_case(seed)
    cold = [3, 7, 11, 19]
    result = evaluate(recs, test, train, item_artist=item_artist, cold_items=cold)
    n_items = test.shape[1]
    expected = {
        "k": recs.shape[1],
        "users": recs.shape[0],
        "recall": ref_recall(recs, test),
        "precision": ref_precision(recs, test),
        "ndcg": ref_ndcg(recs, test),
        "map": ref_map(recs, test),
        "coverage": ref_coverage(recs, n_items),
        "artists_per_list": ref_diversity(recs, item_artist.tolist())[0],
        "top_artist_share": ref_diversity(recs, item_artist.tolist())[1],
        "novelty": ref_novelty(recs, train),
        "gini": ref_popularity_gini(recs, n_items),
        "cold_recall": ref_cold_recall(recs, test, set(cold)),
    }
    assert result.keys() == expected.keys()
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, nan_ok=True), name


def test_evaluate_without_artists_or_cold_items_reports_nan() -> None:
    recs, test, train, _ = _random_case(9)
    result = evaluate(recs, test, train)
    assert math.isnan(result["artists_per_list"])
    assert math.isnan(result["cold_recall"])
    assert result["ndcg"] == pytest.approx(ref_ndcg(recs, test))


# --------------------------------------------------------------------- hand-computed cases


def test_tiny_case_computed_by_hand() -> None:
    # One listener, test items {0, 1}, list [2, 0, padding]: one hit at rank 2 of K = 3.
    recs = np.array([[2, 0, -1]])
    test = sp.csr_matrix(np.array([[1, 1, 0, 0]], dtype=np.float32))
    assert hit_matrix(recs, test).tolist() == [[False, True, False]]
    assert recall_at_k(recs, test) == pytest.approx(1 / 2)  # min(K=3, |T|=2) = 2
    assert precision_at_k(recs, test) == pytest.approx(1 / 3)
    dcg = 1 / math.log2(3)
    assert ndcg_at_k(recs, test) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert map_at_k(recs, test) == pytest.approx((1 / 2) / 2)


def test_recall_divides_by_k_when_the_listener_has_more_test_items() -> None:
    recs = np.array([[0, 1]])
    test = sp.csr_matrix(np.ones((1, 5), dtype=np.float32))
    assert recall_at_k(recs, test) == 1.0
    assert ndcg_at_k(recs, test) == pytest.approx(1.0)
    assert map_at_k(recs, test) == pytest.approx(1.0)


def test_catalogue_metrics_by_hand() -> None:
    recs = np.array([[0, 1, 2, -1], [1, -1, -1, -1]])
    assert catalogue_coverage(recs, 8) == pytest.approx(3 / 8)
    distinct, share = artist_diversity(recs, np.array([0, 0, 1]))
    assert distinct == pytest.approx((2 + 1) / 2)
    assert share == pytest.approx((2 / 3 + 1.0) / 2)
    # Item 0: all 3 training listeners (0 bits); item 1: nobody (log2(4) = 2 bits).
    train = sp.csr_matrix(np.array([[1, 0], [2, 0], [5, 0]], dtype=np.float32))
    assert novelty(np.array([[0, 1]]), item_popularity(train), 3) == pytest.approx(1.0)
    assert gini_coefficient([0, 0, 0, 4]) == pytest.approx(0.75)
    assert gini_coefficient([3, 3, 3]) == 0.0
    assert gini_coefficient([0, 0]) == 0.0
    assert popularity_gini(np.array([[0, -1]]), 2) == pytest.approx(0.5)


def test_cold_recall_counts_only_cold_test_items() -> None:
    recs = np.array([[0, 1], [2, 3]])
    test = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    # Listener 0: cold test item 3 missed (item 0 is a warm hit); listener 1: no cold items.
    assert cold_start_recall(recs, test, [3]) == 0.0
    assert cold_start_recall(recs, test, [2, 3]) == pytest.approx((0.0 + 1.0) / 2)
    assert math.isnan(cold_start_recall(recs, test, [1]))


def test_empty_lists_give_nan_diversity_and_novelty() -> None:
    recs = np.full((2, 3), -1)
    assert all(math.isnan(v) for v in artist_diversity(recs, np.zeros(4, dtype=np.int64)))
    assert math.isnan(novelty(recs, np.zeros(4, dtype=np.int64), 2))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: recall_at_k(np.array([0, 1]), sp.csr_matrix((1, 3))), "recommended must be"),
        (lambda: recall_at_k(np.array([[0]]), sp.csr_matrix((2, 3))), "test has 2 rows"),
        (lambda: recall_at_k(np.array([[5]]), sp.csr_matrix(np.ones((1, 3)))), "outside"),
        (lambda: recall_at_k(np.array([[0]]), sp.csr_matrix((1, 3))), "without test items"),
        (lambda: catalogue_coverage(np.array([[0]]), 0), "n_items"),
        (lambda: novelty(np.array([[0]]), [5], 2), "popularity"),
        (lambda: gini_coefficient([-1, 2]), "non-negative"),
        (lambda: artist_diversity(np.array([[3]]), [0, 1]), "item_artist"),
        (lambda: cold_start_recall(np.array([[0]]), sp.csr_matrix(np.ones((1, 2))), [9]), "cold"),
    ],
)
def test_metrics_reject_bad_input_naming_the_argument(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------------- splits


def _random_events(seed: int, n_users: int = 30, n_items: int = 25, n_events: int = 400):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    items = rng.integers(0, n_items, n_events)
    values = rng.integers(1, 4, n_events).astype(np.float32)
    times = rng.integers(0, 1000, n_events)
    return users, items, values, times, (n_users, n_items)


def _pairs(matrix: sp.csr_matrix) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


@pytest.mark.parametrize("seed", SEEDS)
def test_time_split_tests_only_first_interactions_after_the_cutoff(seed: int) -> None:
    users, items, values, times, shape = _random_events(seed)
    cutoff = 600
    split = time_split(users, items, values, times, cutoff, shape)
    first_seen: dict[tuple[int, int], int] = {}
    train_sum: dict[tuple[int, int], float] = {}
    for u, i, v, t in zip(
        users.tolist(), items.tolist(), values.tolist(), times.tolist(), strict=True
    ):
        first_seen[(u, i)] = min(t, first_seen.get((u, i), t))
        if t < cutoff:
            train_sum[(u, i)] = train_sum.get((u, i), 0.0) + v
    expected_test = {pair for pair, t in first_seen.items() if t >= cutoff}
    assert _pairs(split.test) == expected_test
    assert _pairs(split.train) == set(train_sum)
    assert not _pairs(split.train) & _pairs(split.test)
    train = split.train.toarray()
    for (u, i), total in train_sum.items():
        assert train[u, i] == pytest.approx(total)
    assert set(split.test.data.tolist()) <= {1.0}
    assert split.eval_users.tolist() == sorted({u for u, _ in expected_test})
    assert split.train.dtype == np.float32 and split.eval_users.dtype == np.int64


def test_time_split_by_hand() -> None:
    # Listener 0 had item 1 before the cutoff and plays it again after: not a discovery.
    split = time_split(
        user_rows=[0, 0, 0, 1, 1],
        item_cols=[1, 1, 2, 0, 0],
        values=[1, 1, 1, 1, 1],
        timestamps=np.array(
            ["2026-10-01", "2026-11-03", "2026-11-04", "2026-11-02", "2026-11-05"],
            dtype="datetime64[D]",
        ),
        cutoff=np.datetime64("2026-11-02"),
        shape=(3, 3),
    )
    assert split.train.toarray().tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert split.test.toarray().tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 0]]
    assert split.eval_users.tolist() == [0, 1]


def test_time_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one length"):
        time_split([0], [0, 1], [1, 1], [0, 0], 1, (2, 2))
    with pytest.raises(ValueError, match="item_cols"):
        time_split([0], [2], [1], [0], 1, (2, 2))


@pytest.mark.parametrize("seed", SEEDS)
def test_leave_k_out_invariants(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dense = (rng.random((20, 30)) < 0.3) * rng.integers(1, 50, (20, 30)).astype(np.float32)
    dense[0, :2] = -2.0  # thumbs-down entries are never held out
    matrix = sp.csr_matrix(dense)
    k = 3
    split = leave_k_out(matrix, k, seed)
    positives = (dense > 0).sum(axis=1)
    held = split.test.toarray()
    train = split.train.toarray()
    for u in range(dense.shape[0]):
        expected = k if positives[u] > k else 0
        assert held[u].sum() == expected
    assert not _pairs(split.train) & _pairs(split.test)
    assert _pairs(split.train) | _pairs(split.test) == _pairs(matrix)
    assert np.all(dense[held > 0] > 0)
    np.testing.assert_array_equal(train[train != 0], dense[(dense != 0) & (held == 0)])
    assert split.eval_users.tolist() == np.flatnonzero(positives > k).tolist()
    again = leave_k_out(matrix, k, seed)
    assert _pairs(again.test) == _pairs(split.test)
    other = leave_k_out(matrix, k, seed + 100)
    assert _pairs(other.test) != _pairs(split.test)


def test_leave_k_out_rejects_k_below_one() -> None:
    with pytest.raises(ValueError, match="k must be"):
        leave_k_out(sp.csr_matrix((2, 2)), 0, 1)


def test_holdout_items_and_removal() -> None:
    picked = holdout_items(100, 0.1, seed=3)
    assert len(picked) == 10 and picked.tolist() == sorted(set(picked.tolist()))
    assert holdout_items(100, 0.1, seed=3).tolist() == picked.tolist()
    eligible = np.zeros(100, dtype=bool)
    eligible[50:60] = True
    within = holdout_items(100, 0.5, seed=1, eligible=eligible)
    assert len(within) == 5 and all(50 <= i < 60 for i in within.tolist())
    assert holdout_items(100, 1.0, seed=1, eligible=[4, 2]).tolist() == [2, 4]
    assert len(holdout_items(10, 0.0, seed=1)) == 0

    split = Split(
        train=sp.csr_matrix(np.array([[1, 2, 3], [4, 0, 6]], dtype=np.float32)),
        test=sp.csr_matrix(np.array([[0, 0, 0], [0, 1, 0]], dtype=np.float32)),
        eval_users=np.array([1]),
    )
    cold = remove_items_from_train(split, [2])
    assert cold.train.toarray().tolist() == [[1, 2, 0], [4, 0, 0]]
    assert cold.train.nnz == 3
    assert cold.test is split.test


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_items": 10, "fraction": 1.5, "seed": 0}, "fraction"),
        ({"n_items": -1, "fraction": 0.5, "seed": 0}, "n_items"),
        ({"n_items": 3, "fraction": 0.5, "seed": 0, "eligible": np.ones(4, bool)}, "eligible"),
        ({"n_items": 3, "fraction": 0.5, "seed": 0, "eligible": [7]}, "eligible"),
    ],
)
def test_holdout_items_rejects_bad_input(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        holdout_items(**kwargs)


def test_intra_list_diversity_is_the_mean_pairwise_cosine_distance() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(30, 4)).astype(np.float32)
    vectors[7] = 0.0  # a track without a vector: dissimilar to all
    lists = rng.integers(0, 30, size=(9, 6))
    lists[0, 3:] = -1  # padding
    lists[1, 1:] = -1  # one item: no pair, left out
    lists[2, :] = [7, 1, 2, 3, 4, 5]
    expected = []
    for row in lists:
        items = [int(i) for i in row if i >= 0]
        if len(items) < 2:
            continue
        distances = []
        for a in range(len(items)):
            for b in range(len(items)):
                if a == b:
                    continue
                u, v = vectors[items[a]], vectors[items[b]]
                nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                cos = 0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv))
                distances.append(1.0 - cos)
        expected.append(np.mean(distances))
    assert intra_list_diversity(lists, vectors, block=4) == pytest.approx(np.mean(expected))
    assert intra_list_diversity([[0, 0]], vectors) == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(intra_list_diversity([[1, -1]], vectors))
    with pytest.raises(ValueError, match="item_vectors has 30 rows"):
        intra_list_diversity([[30, 1]], vectors)

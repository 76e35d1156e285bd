"""The item-to-item models of :mod:`recsys.neighbors` against plainly written dense
references on tiny matrices, on a world of two disjoint tastes, with thumbs-down, and
through save and load. The shared contract runs in ``tests/test_recommenders.py``."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.matrix import InteractionMatrix
from recsys.neighbors import (
    EASE,
    ItemKNN,
    RP3beta,
    ease_fits,
    ease_peak_bytes,
    keep_top_k,
)

#: 4 listeners x 5 tracks; listener 2 thumbed track 3 down, nobody liked track 3 but
#: listener 3.
CONFIDENCE = np.array(
    [
        [2.0, 1.0, 0.0, 0.0, 3.0],
        [0.0, 1.5, 1.0, 0.0, 0.0],
        [1.0, 0.0, 4.0, -2.0, 1.0],
        [0.0, 2.0, 0.0, 1.0, 0.5],
    ],
    dtype=np.float32,
)


def interactions(dense: np.ndarray) -> InteractionMatrix:
    n_users, n_tracks = dense.shape
    return InteractionMatrix(
        sp.csr_matrix(dense.astype(np.float32)),
        np.array([f"u{i:03d}" for i in range(n_users)]),
        np.array([f"t{i:03d}" for i in range(n_tracks)]),
    )


def two_tastes(seed: int = 3) -> np.ndarray:
    """Listeners 0..19 like 5 of tracks 0..9, listeners 20..39 5 of tracks 10..19."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((40, 20), dtype=np.float32)
    for user in range(40):
        group = np.arange(10) + (10 if user >= 20 else 0)
        liked = rng.choice(group, size=5, replace=False)
        dense[user, liked] = rng.uniform(1.0, 5.0, size=5)
    return dense


#: Each model with its default parameters (both weightings of ItemKNN) ...
DEFAULT_FITS: dict[str, Any] = {
    "item_knn_bm25": lambda m: ItemKNN.fit(m, weighting="bm25"),
    "item_knn_cosine": lambda m: ItemKNN.fit(m, weighting="cosine"),
    "rp3beta": lambda m: RP3beta.fit(m),
    "ease": lambda m: EASE.fit(m),
}
#: ... and with other ones.
FITS: dict[str, Any] = {
    **DEFAULT_FITS,
    "item_knn_pruned": lambda m: ItemKNN.fit(m, K=3, K1=2.0, B=0.5),
    "rp3beta_alpha": lambda m: RP3beta.fit(m, alpha=0.6, beta=0.3, K=4),
    "rp3beta_normalised": lambda m: RP3beta.fit(m, normalize_similarity=True),
    "ease_confidence": lambda m: EASE.fit(m, regularization=5.0, binary=False),
}


# --- known answers ---------------------------------------------------------------------


def dense_cosine(dense: np.ndarray) -> np.ndarray:
    """Cosine of every pair of columns (0 where a column is all zero)."""
    norms = np.linalg.norm(dense, axis=0)
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    return (dense.T @ dense) * np.outer(scale, scale)


def dense_bm25_similarity(dense: np.ndarray, K1: float, B: float) -> np.ndarray:
    """Dot products of BM25-weighted track rows: tracks are the documents, listeners the
    terms (implicit's ``bm25_weight`` of the track x listener matrix)."""
    tracks = dense.T.astype(np.float64)
    n_tracks = tracks.shape[0]
    idf = np.log(n_tracks) - np.log1p((tracks > 0).sum(axis=0))
    length = tracks.sum(axis=1)
    length_norm = (1.0 - B) + B * length / length.mean()
    weighted = np.zeros_like(tracks)
    for i, u in zip(*np.nonzero(tracks), strict=True):
        x = tracks[i, u]
        weighted[i, u] = x * (K1 + 1.0) / (K1 * length_norm[i] + x) * idf[u]
    return weighted @ weighted.T


def test_item_knn_cosine_is_the_cosine_of_track_columns_and_scores_are_rows_times_it() -> None:
    matrix = interactions(CONFIDENCE)
    model = ItemKNN.fit(matrix, weighting="cosine", K=100)
    positive = np.maximum(CONFIDENCE, 0.0)
    expected = dense_cosine(positive)
    np.testing.assert_allclose(model.weights.toarray(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.score(np.arange(4)), positive @ expected, rtol=1e-5, atol=1e-6)


def test_item_knn_bm25_is_implicits_bm25_similarity() -> None:
    from implicit.nearest_neighbours import BM25Recommender

    dense = two_tastes()
    dense[:3, 15] = 2.0  # some overlap between the tastes
    matrix = interactions(dense)
    model = ItemKNN.fit(matrix, weighting="bm25", K=100, K1=1.5, B=0.6)
    np.testing.assert_allclose(
        model.weights.toarray(), dense_bm25_similarity(dense, 1.5, 0.6), rtol=1e-5, atol=1e-7
    )
    reference = BM25Recommender(K=7, K1=1.5, B=0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit warns that it converts COO to CSR
        reference.fit(matrix.user_items, show_progress=False)
    pruned = ItemKNN.fit(matrix, weighting="bm25", K=7, K1=1.5, B=0.6)
    np.testing.assert_allclose(
        pruned.weights.toarray(), reference.similarity.toarray(), rtol=1e-6, atol=1e-7
    )
    assert (np.diff(pruned.weights.indptr) <= 7).all()


def test_item_knn_similar_items_are_cosines_of_the_weighted_listeners() -> None:
    dense = two_tastes()
    model = ItemKNN.fit(interactions(dense), weighting="bm25", K=100)
    similarity = model.weights.toarray()
    diagonal = np.diag(similarity)
    cosine = similarity / np.sqrt(np.outer(diagonal, diagonal))
    columns, values = model.similar_items(np.array([0, 12]), 3)
    for row, track in enumerate([0, 12]):
        others = np.where(np.arange(20) == track, -np.inf, cosine[track])
        best = np.argsort(-others, kind="stable")[:3]
        np.testing.assert_array_equal(columns[row], best)
        np.testing.assert_allclose(values[row], cosine[track, best], rtol=1e-5)


def rp3beta_reference(confidence: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """W_ij = sum_u (1 / listeners_i)^alpha (1 / tracks_u)^alpha / listeners_j^beta over the
    listeners u who liked both i and j; zero diagonal; no top-K."""
    liked = confidence > 0
    n_users, n_tracks = liked.shape
    weights = np.zeros((n_tracks, n_tracks))
    for i in range(n_tracks):
        for j in range(n_tracks):
            if i == j:
                continue
            for u in range(n_users):
                if liked[u, i] and liked[u, j]:
                    to_listener = 1.0 / liked[:, i].sum()
                    to_track = 1.0 / liked[u].sum()
                    weights[i, j] += to_listener**alpha * to_track**alpha
            if weights[i, j]:
                weights[i, j] /= liked[:, j].sum() ** beta
    return weights


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.5), (0.6, 0.3), (1.4, 0.0)])
def test_rp3beta_weights_are_the_dense_random_walk(alpha: float, beta: float) -> None:
    model = RP3beta.fit(interactions(CONFIDENCE), alpha=alpha, beta=beta, K=100)
    expected = rp3beta_reference(CONFIDENCE, alpha, beta)
    np.testing.assert_allclose(model.weights.toarray(), expected, rtol=1e-6, atol=1e-8)
    binary = (CONFIDENCE > 0).astype(np.float32)
    np.testing.assert_allclose(model.score(np.arange(4)), binary @ expected, rtol=1e-5)


def test_rp3beta_keeps_the_k_largest_per_row_then_normalises() -> None:
    dense = two_tastes()
    dense[:5, 12] = 1.0
    expected = rp3beta_reference(dense, 1.0, 0.5)
    model = RP3beta.fit(interactions(dense), K=3)
    weights = model.weights.toarray()
    for track in range(20):
        kept = weights[track][weights[track] != 0]
        assert len(kept) == min(3, np.count_nonzero(expected[track])), track
        np.testing.assert_allclose(np.sort(kept), np.sort(expected[track])[-len(kept) :])
    normalised = RP3beta.fit(interactions(dense), K=3, normalize_similarity=True)
    np.testing.assert_allclose(
        normalised.weights.toarray(), weights / weights.sum(axis=1, keepdims=True), rtol=1e-6
    )


def test_rp3beta_builds_the_same_weights_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix = interactions(two_tastes())
    whole = RP3beta.fit(matrix, K=5)
    monkeypatch.setattr("recsys.neighbors.BLOCK_CELLS", 3 * 20)  # 3 tracks per block
    blocked = RP3beta.fit(matrix, K=5)
    np.testing.assert_array_equal(blocked.weights.toarray(), whole.weights.toarray())


def test_keep_top_k_breaks_ties_by_lower_column() -> None:
    matrix = sp.csr_matrix(np.array([[0.0, 2.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 0.0, 0.0]]))
    top = keep_top_k(matrix, 2)
    np.testing.assert_array_equal(top.toarray(), [[0, 2, 0, 0, 3], [1, 0, 0, 0, 0]])
    top = keep_top_k(matrix, 3)
    np.testing.assert_array_equal(top.toarray(), [[0, 2, 0, 2, 3], [1, 0, 0, 0, 0]])
    assert top.has_sorted_indices


def ease_reference(listened: np.ndarray, regularization: float) -> np.ndarray:
    """B_ij = -P_ij / P_jj with P = (X^T X + lambda I)^-1, zero diagonal."""
    x = listened.astype(np.float64)
    precision = np.linalg.inv(x.T @ x + regularization * np.eye(x.shape[1]))
    n_tracks = x.shape[1]
    weights = np.zeros((n_tracks, n_tracks))
    for i in range(n_tracks):
        for j in range(n_tracks):
            if i != j:
                weights[i, j] = -precision[i, j] / precision[j, j]
    return weights


@pytest.mark.parametrize("binary", [True, False])
def test_ease_weights_are_the_closed_form(binary: bool) -> None:
    model = EASE.fit(interactions(CONFIDENCE), regularization=0.5, binary=binary)
    listened = (CONFIDENCE > 0).astype(np.float32) if binary else np.maximum(CONFIDENCE, 0)
    expected = ease_reference(listened, 0.5)
    assert model.weights.dtype == np.float32
    np.testing.assert_array_equal(np.diag(model.weights), 0.0)
    np.testing.assert_allclose(model.weights, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.score(np.arange(4)), listened @ expected, rtol=1e-4, atol=1e-6)


def test_ease_refuses_a_catalog_beyond_its_memory_budget() -> None:
    # 1,000 tracks: 8 MB of float64 inverse; 100,000 tracks: 80 GB.
    assert ease_fits(1_000, memory_budget_mb=256)
    assert not ease_fits(100_000, memory_budget_mb=64 * 1024)
    assert ease_peak_bytes(20_000) >= (8 + 4) * 20_000**2
    matrix = interactions(np.ones((3, 2_000), dtype=np.float32))
    with pytest.raises(ValueError, match=r"EASE on 2000 tracks needs about \d+ MiB.*skip EASE"):
        EASE.fit(matrix, memory_budget_mb=16)
    with pytest.raises(ValueError, match="regularization must be > 0"):
        EASE.fit(interactions(CONFIDENCE), regularization=0.0)


def test_ease_holds_no_more_than_its_estimate() -> None:
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 1_500)) < 0.02).astype(np.float32)
    matrix = interactions(dense)
    tracemalloc.start()
    try:
        EASE.fit(matrix)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The copies of the interactions (float64 CSC, positive part) come on top.
    copies = 4 * matrix.user_items.nnz * 12 + 4 * 8 * sum(matrix.shape)
    assert 8 * 1_500**2 <= peak <= ease_peak_bytes(1_500) + copies


# --- behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize("name", DEFAULT_FITS)
def test_a_taste_group_gets_only_its_own_tracks(name: str) -> None:
    matrix = interactions(two_tastes())
    model = DEFAULT_FITS[name](matrix)
    # Each listener has 5 tracks of their taste left, and gets exactly those.
    columns, scores = model.recommend(np.arange(40), matrix.user_items, 5)
    assert (scores > 0).all()
    for user in range(40):
        own = np.arange(10) + (10 if user >= 20 else 0)
        unheard = set(own.tolist()) - set(matrix.user_items[user].indices.tolist())
        assert set(columns[user].tolist()) == unheard, (user, columns[user])
    similar, _ = model.similar_items(np.array([3, 17]), 5)
    assert (similar >= 0).all()
    assert set((similar[0][similar[0] >= 0] // 10).tolist()) == {0}
    assert set((similar[1][similar[1] >= 0] // 10).tolist()) == {1}


@pytest.mark.parametrize("name", FITS)
def test_thumbs_down_are_ignored(name: str) -> None:
    liked = two_tastes()
    with_thumbs_down = liked.copy()
    # Thumbs-down on tracks of the listener's own taste, and on the other taste's.
    rng = np.random.default_rng(8)
    unplayed = np.argwhere(liked == 0)
    for user, track in unplayed[rng.choice(len(unplayed), size=60, replace=False)]:
        with_thumbs_down[user, track] = -rng.uniform(1.0, 5.0)
    plain = FITS[name](interactions(liked))
    thumbed = FITS[name](interactions(with_thumbs_down))
    rows = np.arange(40)
    np.testing.assert_array_equal(thumbed.score(rows), plain.score(rows))
    assert thumbed.user_items.min() >= 0


@pytest.mark.parametrize("name", FITS)
def test_save_and_load_keep_scores_similar_items_and_parameters(name: str, tmp_path: Path) -> None:
    matrix = interactions(two_tastes())
    model = FITS[name](matrix)
    directory = model.save(tmp_path / name)
    loaded = type(model).load(directory)
    rows = np.arange(40)
    np.testing.assert_array_equal(loaded.score(rows), model.score(rows))
    for got, want in zip(
        loaded.similar_items(np.arange(20), 5), model.similar_items(np.arange(20), 5), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.user_ids, matrix.user_ids)
    assert vars(loaded).keys() == vars(model).keys()
    for attribute, value in vars(model).items():
        if isinstance(value, str | int | float | bool):
            assert getattr(loaded, attribute) == value, attribute


def test_load_refuses_another_models_artifact(tmp_path: Path) -> None:
    matrix = interactions(two_tastes())
    RP3beta.fit(matrix).save(tmp_path / "rp3beta")
    with pytest.raises(ValueError, match="holds a 'rp3beta' model, not a 'ease' model"):
        EASE.load(tmp_path / "rp3beta")
    with pytest.raises(ValueError, match="does not hold a model"):
        ItemKNN.load(tmp_path / "missing")


def test_parameters_are_checked() -> None:
    matrix = interactions(CONFIDENCE)
    with pytest.raises(ValueError, match="weighting must be"):
        ItemKNN.fit(matrix, weighting="tfidf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="K must be at least 1"):
        ItemKNN.fit(matrix, K=0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        RP3beta.fit(matrix, alpha=0.0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        RP3beta.fit(matrix, beta=-1.0)

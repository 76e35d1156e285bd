"""Cold start: content features, the content projection, fold-in against implicit, fallback."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from recsys.coldstart import (
    ContentProjection,
    cold_item_factors,
    content_matrix,
    popular_diverse,
    row_chunks,
    tag_features,
)


def _genre_catalog(
    n_tracks: int = 400, n_genres: int = 5, dim: int = 16, seed: int = 0
) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """Embeddings = genre centroid + noise; tags = genre plus one of three sub-genre words."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, n_genres, n_tracks)
    centroids = rng.standard_normal((n_genres, dim))
    embeddings = centroids[genre] + 0.3 * rng.standard_normal((n_tracks, dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    tags = [[f"genre{g}", f"{['dark', 'lofi', 'raw'][rng.integers(3)]} genre{g}"] for g in genre]
    return embeddings.astype(np.float32), tags, genre


def test_content_uses_embeddings_and_maps_tags_of_tracks_without_one() -> None:
    embeddings, tags, genre = _genre_catalog()
    missing = np.zeros(len(genre), dtype=bool)
    missing[::5] = True
    rows: list[np.ndarray | None] = [
        None if m else e for e, m in zip(embeddings, missing, strict=True)
    ]
    tags[3] = None  # an embedding but no tags: still has content
    rows[10] = None
    tags[10] = None  # neither: no content
    content, has_content = content_matrix(rows, tags, tag_dim=8)

    assert content.dtype == np.float32 and content.shape == (len(genre), 16)
    assert has_content.tolist() == [i != 10 for i in range(len(genre))]
    assert not content[10].any()
    np.testing.assert_allclose(np.linalg.norm(content[has_content], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(content[~missing], embeddings[~missing], rtol=1e-5)
    # A track known only by its tags lands next to tracks of its genre.
    mapped = np.flatnonzero(missing & has_content)
    embedded = np.flatnonzero(~missing)
    nearest = embedded[np.argmax(content[mapped] @ content[embedded].T, axis=1)]
    assert (genre[nearest] == genre[mapped]).mean() == 1.0
    assert np.mean(np.sum(content[mapped] * embeddings[mapped], axis=1)) > 0.8


def test_content_without_embeddings_is_tag_vectors_and_reproducible() -> None:
    _, tags, genre = _genre_catalog()
    first, has_first = content_matrix(None, tags, tag_dim=4, random_seed=3)
    second, _ = content_matrix(None, tags, tag_dim=4, random_seed=3)
    assert first.shape == (len(genre), 4) and has_first.all()
    np.testing.assert_array_equal(first, second)
    similarity = first @ first.T
    same = genre[:, None] == genre[None, :]
    assert similarity[same].mean() > 0.8 > 0.2 > similarity[~same].mean()


def test_tag_vectors_match_exact_tfidf_when_the_vocabulary_is_small() -> None:
    tags = [["Rock", " rock "], ["jazz"], None, ["rock", "jazz"], []]
    vectors, has_tags = tag_features(tags, tag_dim=4)
    assert has_tags.tolist() == [True, True, False, True, False]
    idf_rock = np.log(6 / 3) + 1  # 5 tracks, rock in 2
    idf_jazz = np.log(6 / 3) + 1
    expected_both = np.array([idf_jazz, idf_rock]) / np.hypot(idf_jazz, idf_rock)
    # Columns follow first appearance: rock, then jazz.
    np.testing.assert_allclose(vectors[0], [1, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(vectors[1], [0, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(vectors[3, :2], expected_both[::-1], rtol=1e-6)
    assert not vectors[2].any() and not vectors[4].any()


def test_content_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="both None"):
        content_matrix(None, None)
    with pytest.raises(ValueError, match=r"embeddings\[1\]"):
        content_matrix([np.ones(3), np.ones(4)], None)
    with pytest.raises(ValueError, match="rows"):
        content_matrix(np.ones((3, 2)), [["a"]] * 4)


def _linear_world(
    n_tracks: int = 600, dim: int = 12, factors: int = 8, noise: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Item factors = content @ W + b + noise, so the projection has a known answer."""
    rng = np.random.default_rng(seed)
    content = rng.standard_normal((n_tracks, dim))
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    weights = rng.standard_normal((dim, factors))
    bias = rng.standard_normal(factors) * 0.5
    item_factors = content @ weights + bias + noise * rng.standard_normal((n_tracks, factors))
    return content.astype(np.float32), item_factors.astype(np.float32), weights, bias


def test_projection_recovers_a_known_linear_map() -> None:
    content, item_factors, weights, bias = _linear_world(noise=0.0)
    projection = ContentProjection.fit(content, item_factors, regularization=1e-6)
    np.testing.assert_allclose(projection.weights, weights, atol=1e-3)
    np.testing.assert_allclose(projection.bias, bias, atol=1e-3)
    np.testing.assert_allclose(projection.project(content), item_factors, atol=1e-3)


def test_projection_matches_the_closed_form_and_shrinks_with_regularization() -> None:
    content, item_factors, _, _ = _linear_world(noise=0.5, seed=1)
    x = content - content.mean(axis=0)
    y = item_factors - item_factors.mean(axis=0)
    expected = np.linalg.inv(x.T @ x + 5.0 * np.eye(x.shape[1])) @ x.T @ y
    projection = ContentProjection.fit(content, item_factors, regularization=5.0)
    np.testing.assert_allclose(projection.weights, expected, rtol=1e-4, atol=1e-5)
    strong = ContentProjection.fit(content, item_factors, regularization=1e4)
    assert np.linalg.norm(strong.weights) < 0.1 * np.linalg.norm(projection.weights)


def test_projection_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="rows"):
        ContentProjection.fit(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="regularization"):
        ContentProjection.fit(np.ones((3, 2)), np.ones((3, 2)), regularization=-1.0)
    projection = ContentProjection.fit(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="content has shape"):
        projection.project(np.ones((2, 4)))


def test_cold_tracks_get_projected_factors_that_rank_sensibly() -> None:
    content, true_factors, _, _ = _linear_world(noise=0.2, seed=2)
    rng = np.random.default_rng(2)
    n_tracks = len(content)
    play_counts = rng.integers(5, 100, n_tracks)
    cold_truth = rng.random(n_tracks) < 0.2
    cold_truth[0] = True  # barely played but without content: keeps its factors, not cold
    play_counts[cold_truth] = rng.integers(0, 3, int(cold_truth.sum()))
    # Barely-played tracks: ALS gives them nothing useful (zero for the unplayed).
    trained = np.where(cold_truth[:, None], 0.0, true_factors).astype(np.float32)
    has_content = np.ones(n_tracks, dtype=bool)
    has_content[0] = False

    factors, cold = cold_item_factors(
        trained, content, has_content, play_counts, 3, regularization=0.1
    )
    assert cold.tolist() == (cold_truth & has_content).tolist()
    np.testing.assert_array_equal(factors[~cold], trained[~cold])
    warm_norms = np.linalg.norm(trained[play_counts >= 3], axis=1)
    np.testing.assert_allclose(
        np.linalg.norm(factors[cold], axis=1), np.median(warm_norms), rtol=1e-5
    )

    # Listeners rank cold tracks almost as they would with the true factors.
    users = rng.standard_normal((50, true_factors.shape[1]))
    cold_columns = np.flatnonzero(cold)
    true_scores = users @ true_factors[cold_columns].T
    projected_scores = users @ factors[cold_columns].T
    correlation = [spearmanr(true_scores[u], projected_scores[u]).statistic for u in range(50)]
    assert np.mean(correlation) > 0.9
    true_best = np.argsort(-true_scores, axis=1)[:, :10]
    projected_top = np.argmax(projected_scores, axis=1)
    # Random picks would land in the true top 10 of ~120 cold tracks 8 % of the time.
    assert np.mean([projected_top[u] in true_best[u] for u in range(50)]) >= 0.8


def test_norm_matching_lets_cold_tracks_compete_with_warm_ones() -> None:
    # Content explains little of the factors (as with real ALS), so ridge shrinks hard.
    content, true_factors, _, _ = _linear_world(n_tracks=1000, noise=2.0, seed=3)
    rng = np.random.default_rng(3)
    play_counts = rng.integers(5, 100, len(content))
    unplayed = rng.random(len(content)) < 0.2
    play_counts[unplayed] = 0
    trained = np.where(unplayed[:, None], 0.0, true_factors).astype(np.float32)
    users = rng.standard_normal((100, true_factors.shape[1]))
    has_content = np.ones(len(content), dtype=bool)

    def cold_share_of_top_50(norm_quantile: float | None) -> float:
        factors, cold = cold_item_factors(
            trained, content, has_content, play_counts, 3, norm_quantile=norm_quantile
        )
        top = np.argsort(-(users @ factors.T), axis=1)[:, :50]
        return float(cold[top].mean())

    assert cold_share_of_top_50(None) < 0.01  # shrunken vectors never make a playlist
    assert 0.3 * unplayed.mean() < cold_share_of_top_50(0.5) < 1.5 * unplayed.mean()


def test_row_chunks_cover_every_row_once_within_the_bounds() -> None:
    counts = np.array([5, 0, 100, 3, 3, 7, 1, 60])
    chunks = list(row_chunks(counts, max_cells=20, max_rows=3))
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(counts)))
    for chunk in chunks:
        assert len(chunk) <= 3
        assert len(chunk) == 1 or len(chunk) * max(counts[chunk].max(), 1) <= 20


def test_popular_diverse_caps_artists_spreads_genres_and_excludes() -> None:
    # Genre A (vectors along x) holds the 30 most popular tracks; genre B is less popular.
    n_tracks = 60
    popularity = np.arange(n_tracks, 0, -1).astype(float)  # track 0 most popular
    vectors = np.zeros((n_tracks, 2))
    vectors[:30, 0] = 1.0
    vectors[30:, 1] = 1.0
    artists = np.arange(n_tracks) // 3  # three tracks per artist
    top = popular_diverse(popularity, artists, 6, 2)
    assert top.tolist() == [0, 1, 3, 4, 6, 7]  # artist cap of 2, by popularity
    varied = popular_diverse(popularity, artists, 6, 2, item_vectors=vectors, diversity=0.5)
    # The most popular B track comes second; once both genres are in, popularity decides.
    assert varied.tolist() == [0, 30, 1, 3, 4, 6]
    excluded = popular_diverse(popularity, artists, 6, 2, exclude=np.array([0, 1]))
    assert 0 not in excluded and 1 not in excluded and excluded[0] == 2
    mask = np.zeros(n_tracks, dtype=bool)
    mask[2:] = True
    assert popular_diverse(popularity, artists, 4, 1, exclude=mask).tolist() == [0, -1, -1, -1]
    with pytest.raises(ValueError, match="item_popularity"):
        popular_diverse(-popularity, artists, 4, 1)


def test_content_falls_back_to_tags_when_no_track_has_an_embedding() -> None:
    _, tags, _ = _genre_catalog(n_tracks=50)
    content, has_content = content_matrix([None] * 50, tags, tag_dim=6)
    expected, expected_mask = content_matrix(None, tags, tag_dim=6)
    np.testing.assert_array_equal(content, expected)
    assert has_content.tolist() == expected_mask.tolist() == [True] * 50
    nothing, has_nothing = content_matrix(np.full((3, 4), np.nan), None)
    assert nothing.shape == (3, 4) and not nothing.any() and not has_nothing.any()

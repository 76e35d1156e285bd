"""MMR re-ranking and cold-slot reservation, checked against slow, obviously correct loops."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.playlist import PlaylistRules, select_with_artist_cap
from recsys.rerank import mmr_rerank, occurrence_rank, popularity_prior, reserve_cold_slots


def _reference_mmr(
    items: np.ndarray,
    scores: np.ndarray,
    factors: np.ndarray,
    artists: np.ndarray,
    length: int,
    cap: int,
    diversity: float,
    popularity: np.ndarray | None,
    penalty: float,
) -> list[int]:
    """One listener, one candidate at a time, straight from the definition."""
    valid, seen = [], set()
    for position, (item, score) in enumerate(zip(items, scores, strict=True)):
        if item >= 0 and np.isfinite(score) and item not in seen:
            valid.append(position)
            seen.add(item)
    if not valid:
        return []
    low = min(scores[p] for p in valid)
    high = max(scores[p] for p in valid)
    top_popularity = max(popularity) if popularity is not None else 0.0

    def relevance(position: int) -> float:
        r = (scores[position] - low) / (high - low) if high > low else 1.0
        if penalty:
            r -= penalty * np.log1p(popularity[items[position]]) / np.log1p(top_popularity)
        return r

    def cosine(a: int, b: int) -> float:
        norm = np.linalg.norm(factors[a]) * np.linalg.norm(factors[b])
        return float(factors[a] @ factors[b] / norm) if norm > 0 else 0.0

    chosen: list[int] = []
    per_artist: dict[int, int] = {}
    while len(chosen) < length:
        best, best_value = None, -np.inf
        for position in valid:
            item = int(items[position])
            if item in chosen or per_artist.get(artists[item], 0) >= cap:
                continue
            similarity = max((cosine(item, c) for c in chosen), default=0.0)
            value = (1 - diversity) * relevance(position) - diversity * similarity
            if value > best_value:
                best, best_value = item, value
        if best is None:
            break
        chosen.append(best)
        per_artist[artists[best]] = per_artist.get(artists[best], 0) + 1
    return chosen


@pytest.mark.parametrize("seed", range(10))
def test_without_diversity_or_penalty_mmr_is_the_artist_capped_top_k(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows, n_tracks = 6, int(rng.integers(30, 300))
    artists = rng.integers(0, int(rng.integers(1, 30)), n_tracks)
    scores = rng.standard_normal((n_rows, n_tracks)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    if seed % 3 == 0:  # one artist dominates the top: the cap must bite
        scores[:, artists == artists[0]] += 10
    rules = PlaylistRules(int(rng.integers(1, 60)), int(rng.integers(1, 4)))

    # Candidates in a shuffled order per listener, some slots padded with -1.
    candidates = np.stack([rng.permutation(n_tracks) for _ in range(n_rows)])
    candidates[rng.random(candidates.shape) < 0.1] = -1
    is_candidate = np.zeros(scores.shape, dtype=bool)
    rows, slots = np.nonzero(candidates >= 0)
    is_candidate[rows, candidates[rows, slots]] = True
    expected_columns, expected_scores = select_with_artist_cap(
        np.where(is_candidate, scores, -np.inf), artists, rules
    )
    candidate_scores = np.where(
        candidates >= 0, np.take_along_axis(scores, np.maximum(candidates, 0), axis=1), np.nan
    )

    columns, chosen_scores = mmr_rerank(
        candidates,
        candidate_scores,
        rng.standard_normal((n_tracks, 4)),
        artists,
        rules.length,
        rules.max_tracks_per_artist,
        row_block=4,
    )
    np.testing.assert_array_equal(columns, expected_columns)
    np.testing.assert_array_equal(chosen_scores, expected_scores)


@pytest.mark.parametrize("seed", range(8))
def test_mmr_matches_the_reference_with_diversity_and_popularity(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n_tracks, n_rows, width = 80, 5, 40
    artists = rng.integers(0, 15, n_tracks)
    factors = rng.standard_normal((n_tracks, 6))
    factors[rng.random(n_tracks) < 0.1] = 0.0  # zero vectors are similar to nothing
    popularity = rng.integers(0, 1000, n_tracks).astype(float)
    candidates = np.stack([rng.choice(n_tracks, width, replace=False) for _ in range(n_rows)])
    candidates[rng.random(candidates.shape) < 0.1] = -1
    candidates[0, 5] = candidates[0, 6]  # a repeated candidate counts once
    scores = rng.standard_normal(candidates.shape)
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    diversity = [0.0, 0.3, 0.7, 1.0][seed % 4]
    penalty = [0.0, 0.5][seed % 2]
    length, cap = 12, 2
    columns, chosen_scores = mmr_rerank(
        candidates,
        scores,
        factors,
        artists,
        length,
        cap,
        diversity=diversity,
        popularity=popularity,
        popularity_penalty=penalty,
        row_block=2,
    )
    for row in range(n_rows):
        expected = _reference_mmr(
            candidates[row],
            scores[row],
            factors,
            artists,
            length,
            cap,
            diversity,
            popularity,
            penalty,
        )
        assert columns[row, : len(expected)].tolist() == expected
        assert (columns[row, len(expected) :] == -1).all()
        assert np.isnan(chosen_scores[row, len(expected) :]).all()
        lookup: dict[int, float] = {}
        for item, score in zip(candidates[row].tolist(), scores[row].tolist(), strict=True):
            if np.isfinite(score):
                lookup.setdefault(item, score)
        np.testing.assert_allclose(
            chosen_scores[row, : len(expected)], [lookup[c] for c in expected]
        )


def test_diversity_alternates_between_two_styles() -> None:
    # Tracks 0-9 point one way and score highest; tracks 10-19 point the other way.
    factors = np.zeros((20, 2))
    factors[:10, 0] = 1.0
    factors[10:, 1] = 1.0
    scores = np.concatenate([np.linspace(1.0, 0.9, 10), np.linspace(0.8, 0.7, 10)])[None, :]
    candidates = np.arange(20)[None, :]
    artists = np.arange(20)
    plain, _ = mmr_rerank(candidates, scores, factors, artists, 4, 1)
    varied, _ = mmr_rerank(candidates, scores, factors, artists, 4, 1, diversity=0.5)
    assert plain[0].tolist() == [0, 1, 2, 3]
    # Once both styles are in, similarity is 1 for every track and relevance decides again.
    assert varied[0].tolist() == [0, 10, 1, 2]


def test_popularity_penalty_lets_a_niche_track_overtake_a_hit() -> None:
    scores = np.array([[1.0, 0.98, 0.0]])
    candidates = np.array([[0, 1, 2]])
    popularity = np.array([10_000.0, 10.0, 1.0])
    artists = np.arange(3)
    factors = np.eye(3)
    plain, _ = mmr_rerank(candidates, scores, factors, artists, 2, 1, popularity=popularity)
    debiased, _ = mmr_rerank(
        candidates,
        scores,
        factors,
        artists,
        2,
        1,
        popularity=popularity,
        popularity_penalty=0.2,
    )
    assert plain[0].tolist() == [0, 1]
    assert debiased[0].tolist() == [1, 0]
    np.testing.assert_allclose(
        popularity_prior(popularity), np.log1p(popularity) / np.log1p(10_000.0)
    )


def test_occurrence_rank_counts_earlier_equal_keys_per_row() -> None:
    keys = np.array([[3, 1, 3, 3, 1], [0, 0, 2, 1, 0]])
    assert occurrence_rank(keys).tolist() == [[0, 0, 1, 2, 1], [0, 1, 0, 0, 2]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"diversity": 1.5}, "diversity"),
        ({"popularity_penalty": 0.1}, "popularity is required"),
        ({"popularity_penalty": -1.0}, "popularity_penalty"),
        ({"length": 0}, "length"),
        ({"max_per_artist": 0}, "max_per_artist"),
        ({"candidate_items": np.array([[0, 9]])}, "candidate_items"),
        ({"candidate_scores": np.zeros((1, 3))}, "candidate_scores"),
    ],
)
def test_mmr_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {
        "candidate_items": np.array([[0, 1]]),
        "candidate_scores": np.array([[1.0, 0.5]]),
        "item_factors": np.eye(3),
        "item_artist": np.arange(3),
        "length": 2,
        "max_per_artist": 1,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        mmr_rerank(**arguments)


def _reference_reserve(
    personal: np.ndarray,
    personal_scores: np.ndarray,
    cold: np.ndarray,
    cold_scores: np.ndarray,
    artists: np.ndarray,
    length: int,
    cap: int,
    slots: int,
    threshold: float,
) -> tuple[list[int], list[bool]]:
    """One listener, from the definition in the docstring."""
    taken: list[int] = []
    per_artist: dict[int, int] = {}

    def take(item: int) -> bool:
        if item in taken or per_artist.get(artists[item], 0) >= cap:
            return False
        taken.append(item)
        per_artist[artists[item]] = per_artist.get(artists[item], 0) + 1
        return True

    order = sorted(
        range(len(cold)), key=lambda k: -cold_scores[k] if np.isfinite(cold_scores[k]) else np.inf
    )
    cold_taken = []
    for k in order:
        if len(cold_taken) == min(slots, length):
            break
        usable = cold[k] >= 0 and np.isfinite(cold_scores[k]) and cold_scores[k] >= threshold
        if usable and take(int(cold[k])):
            cold_taken.append(int(cold[k]))
    personal_taken = []
    for item, score in zip(personal, personal_scores, strict=True):
        if len(taken) == length:
            break
        if item >= 0 and np.isfinite(score) and take(int(item)):
            personal_taken.append(int(item))
    total, n = len(taken), len(cold_taken)
    positions = {(k + 1) * total // (n + 1): item for k, item in enumerate(cold_taken)}
    rest = iter(personal_taken)
    playlist = [positions[p] if p in positions else next(rest) for p in range(total)]
    return playlist, [p in positions for p in range(total)]


@pytest.mark.parametrize("seed", range(10))
def test_reserve_cold_slots_matches_the_reference(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    n_tracks, n_rows = 120, 6
    artists = rng.integers(0, 25, n_tracks)
    length = int(rng.integers(3, 30))
    cap, slots = int(rng.integers(1, 3)), int(rng.integers(0, 7))
    personal = np.stack([rng.choice(n_tracks, 40, replace=False) for _ in range(n_rows)])
    personal[rng.random(personal.shape) < 0.05] = -1
    personal_scores = np.sort(rng.random(personal.shape), axis=1)[:, ::-1].copy()
    cold = rng.integers(0, n_tracks, (n_rows, 12))  # may repeat and overlap personal tracks
    cold[rng.random(cold.shape) < 0.1] = -1
    cold_scores = rng.random(cold.shape)
    cold_scores[rng.random(cold.shape) < 0.1] = np.nan
    threshold = rng.random(n_rows) * 0.6
    items, scores, is_cold = reserve_cold_slots(
        personal,
        personal_scores,
        cold,
        cold_scores,
        artists,
        length,
        cap,
        cold_slots=slots,
        min_cold_score=threshold,
    )
    for row in range(n_rows):
        expected, expected_cold = _reference_reserve(
            personal[row],
            personal_scores[row],
            cold[row],
            cold_scores[row],
            artists,
            length,
            cap,
            slots,
            threshold[row],
        )
        n = len(expected)
        assert items[row, :n].tolist() == expected
        assert is_cold[row, :n].tolist() == expected_cold
        assert (items[row, n:] == -1).all() and not is_cold[row, n:].any()
        assert np.isnan(scores[row, n:]).all()
        assert len(set(expected)) == n


def test_reserve_cold_slots_spreads_five_cold_tracks_through_fifty() -> None:
    personal = np.arange(100)[None, :]
    personal_scores = np.linspace(1.0, 0.5, 100)[None, :]
    cold = np.arange(100, 110)[None, :]
    cold_scores = np.linspace(0.9, 0.0, 10)[None, :]  # 0.9 .. 0.0: six pass 0.35
    artists = np.arange(110)
    items, scores, is_cold = reserve_cold_slots(
        personal, personal_scores, cold, cold_scores, artists, 50, 2, min_cold_score=0.35
    )
    assert np.flatnonzero(is_cold[0]).tolist() == [8, 16, 25, 33, 41]
    assert items[0, is_cold[0]].tolist() == [100, 101, 102, 103, 104]
    assert items[0, ~is_cold[0]].tolist() == list(range(45))
    np.testing.assert_allclose(scores[0, is_cold[0]], cold_scores[0, :5], rtol=1e-6)

    # Nothing passes a high threshold: the personal list is unchanged.
    items, _, is_cold = reserve_cold_slots(
        personal, personal_scores, cold, cold_scores, artists, 50, 2, min_cold_score=0.95
    )
    assert not is_cold.any() and items[0].tolist() == list(range(50))


def test_reserve_cold_slots_rejects_bad_arguments() -> None:
    good = (np.array([[0]]), np.array([[1.0]]), np.array([[1]]), np.array([[1.0]]), np.arange(2))
    with pytest.raises(ValueError, match="cold_slots"):
        reserve_cold_slots(*good, 5, 1, cold_slots=-1)
    with pytest.raises(ValueError, match="min_cold_score"):
        reserve_cold_slots(*good, 5, 1, min_cold_score=np.zeros(3))
    with pytest.raises(ValueError, match="cold_items"):
        reserve_cold_slots(good[0], good[1], np.array([[7]]), good[3], good[4], 5, 1)

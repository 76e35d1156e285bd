"""The final ranker (:mod:`benchmarks.final_ranker`): its features against hand-computed values and
plainly written references, a ranker that must learn a known rule (and cannot without the
feature behind it), the ranked model's promise that no non-candidate outranks a candidate,
the pipeline over it, save and load, and the refusals of bad input. Small synthetic worlds
built here; no data set file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks.final_ranker import (
    COMMON_FEATURES,
    FinalRanker,
    Ranked,
    RankerInputs,
    RankerParams,
    _blend_parts,
    below_candidates,
    candidate_features,
    feature_names,
    fit_final_ranker,
    labels_of,
    mean_ndcg,
    rank_among,
)
from recsys.als import ALSModel, ALSParams, with_cold_start
from recsys.blend import Blend
from recsys.matrix import InteractionMatrix
from recsys.neighbors import RP3beta, binarised
from recsys.pipeline import PlaylistPipeline
from recsys.playlist import PlaylistRules
from tests.test_recommenders import N_TRACKS, N_USERS, RecommenderContract, checker_board

#: Small data: few rows per leaf, few rounds, no early stopping below 20 held-out listeners.
SMALL = RankerParams(rounds=30, min_data_in_leaf=5, num_leaves=7)
#: The synthetic features have no blend score to start from.
PLAIN = RankerParams(min_data_in_leaf=20, start_from=None)
ALS = ALSParams(factors=4, regularization=0.01, alpha=10.0, iterations=15)


def listeners_of(matrix: sp.csr_matrix) -> np.ndarray:
    return np.bincount(binarised(matrix).indices, minlength=matrix.shape[1]).astype(np.int64)


def inputs_of(matrix: sp.csr_matrix, track_artist: np.ndarray) -> RankerInputs:
    return RankerInputs(matrix, matrix, np.asarray(track_artist), listeners_of(matrix))


def leave_one_out(matrix: InteractionMatrix, seed: int) -> tuple[InteractionMatrix, sp.csr_matrix]:
    """(training part, held-out part): one played track of every listener with at least
    two, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    dense = matrix.user_items.toarray()
    held = np.zeros_like(dense)
    for user in range(dense.shape[0]):
        played = np.flatnonzero(dense[user] > 0)
        if len(played) >= 2:
            pick = rng.choice(played)
            held[user, pick], dense[user, pick] = 1.0, 0.0
    train = InteractionMatrix(sp.csr_matrix(dense), matrix.user_ids, matrix.track_ids)
    return train, sp.csr_matrix(held)


# -------------------------------------------------------------------- a hand-made world

#: 4 listeners x 6 tracks, artists A A B B C C. Listener 0 played only track 0 (artist A);
#: listener 1 tracks 2 (B, confidence 1) and 4 (C, confidence 3); every track has a
#: listener (track 5 only one).
HAND = np.array(
    [
        [2.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0, 3.0, 0.0],
        [0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    ],
    dtype=np.float32,
)
HAND_ARTIST = np.array([0, 0, 1, 1, 2, 2])


def hand_blend() -> Blend:
    users = np.array([f"u{i}" for i in range(4)])
    tracks = np.array([f"t{i}" for i in range(6)])
    # ALS scores of a listener: user factor . item factor; all distinct per row.
    user_factors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]], dtype=np.float32)
    item_factors = np.array(
        [[0.9, 0.1], [0.8, 0.3], [0.1, 0.7], [0.3, 0.2], [0.2, 0.9], [0.6, 0.5]],
        dtype=np.float32,
    )
    base = ALSModel(user_factors, item_factors, users, tracks, ALS, "hand")
    # A partner that links each track to the next one only.
    weights = sp.csr_matrix((np.ones(5, dtype=np.float32), (np.arange(5), np.arange(1, 6))), (6, 6))
    partner = RP3beta(
        binarised(sp.csr_matrix(HAND)),
        weights,
        users,
        tracks,
        alpha=1.0,
        beta=0.5,
        K=10,
        normalize_similarity=False,
    )
    return Blend(base, {"rp3beta": (partner, 0.5)})


def test_features_of_a_hand_made_world_have_their_known_values() -> None:
    blend = hand_blend()
    inputs = inputs_of(sp.csr_matrix(HAND), HAND_ARTIST)
    found = candidate_features(blend, inputs, np.array([0, 1]), n_candidates=10)
    names = found.names
    assert names == (
        "als_score",
        "als_rank",
        "rp3beta_score",
        "rp3beta_rank",
        *COMMON_FEATURES,
    )
    assert names == feature_names(blend)
    assert found.features.shape == (len(found.rows), len(names))
    assert found.features.dtype == np.float32 and found.n_listeners == 2
    pairs = {
        (int(r), int(c)): found.features[i]
        for i, (r, c) in enumerate(zip(*(found.rows, found.columns), strict=True))
    }
    column = {name: i for i, name in enumerate(names)}

    # ALS proposes every unheard track but its lowest (listener 0: track 2, listener 1:
    # track 0), RP3beta the tracks after the ones played; nothing heard is a candidate.
    assert {c for r, c in pairs if r == 0} == {1, 3, 4, 5}
    assert {c for r, c in pairs if r == 1} == {1, 3, 5}
    als = blend.base.score(np.array([0, 1]))
    for row, heard in ((0, {0}), (1, {2, 4})):
        # ALS's ranks among the unheard tracks: 0 for its best, then 1, 2...
        order = sorted((c for c in range(6) if c not in heard), key=lambda c: -als[row, c])
        for rank, track in enumerate(order):
            if (row, track) in pairs:
                assert pairs[row, track][column["als_rank"]] == rank
    # RP3beta scores listener 0's track 1 alone (rank 0); the rest tie at 0 below it.
    assert pairs[0, 1][column["rp3beta_rank"]] == 0
    assert pairs[0, 3][column["rp3beta_rank"]] == pairs[0, 5][column["rp3beta_rank"]] == 1

    # Listener 0 played only artist A: familiarity 1 on A's other track, 0 elsewhere.
    for (row, track), values in pairs.items():
        if row != 0:
            continue
        a = HAND_ARTIST[track] == 0
        assert values[column["artist_share"]] == (1.0 if a else 0.0)
        assert values[column["knows_artist"]] == (1.0 if a else 0.0)
        assert values[column["artist_tracks"]] == pytest.approx(np.log1p(1) if a else 0.0)
        assert values[column["log_activity"]] == pytest.approx(np.log1p(1))
    # Listener 1: a quarter of their confidence on B (track 3), three quarters on C (5).
    assert pairs[1, 3][column["artist_share"]] == pytest.approx(0.25)
    assert pairs[1, 5][column["artist_share"]] == pytest.approx(0.75)
    assert pairs[1, 1][column["artist_share"]] == 0.0 and pairs[1, 1][column["knows_artist"]] == 0
    assert pairs[1, 1][column["log_activity"]] == pytest.approx(np.log1p(2))
    # Popularity: every track has 2 listeners but track 5, which has 1.
    assert pairs[1, 5][column["log_popularity"]] == pytest.approx(np.log1p(1))
    assert pairs[1, 1][column["log_popularity"]] == pytest.approx(np.log1p(2))
    # The blend's score is exactly what the blend ships.
    shipped = blend.score(np.array([0, 1]))
    for (row, track), values in pairs.items():
        assert values[column["blend_score"]] == shipped[row, track]


def test_the_blends_parts_are_exactly_the_blends_score_cold_tracks_included() -> None:
    matrix = checker_board()
    base = ALSModel.fit(matrix, ALS)
    content = np.zeros((N_TRACKS, 2), dtype=np.float32)
    content[np.arange(N_TRACKS), np.arange(N_TRACKS) % 2] = 1.0
    cold_base = with_cold_start(
        base, content, np.ones(N_TRACKS, bool), listeners_of(matrix.user_items), 1
    )
    assert cold_base.cold_start is not None
    blend = Blend(cold_base, {"rp3beta": (RP3beta.fit(matrix), 0.5)})
    rows = np.arange(N_USERS)
    parts, total = _blend_parts(blend, rows)
    np.testing.assert_array_equal(total, blend.score(rows))
    assert len(parts) == 2
    # Cold tracks are never candidates: the pipeline keeps them out of the personal ranking.
    found = candidate_features(blend, inputs_of(matrix.user_items, np.arange(N_TRACKS)), rows)
    assert not cold_base.cold_start.cold_mask[found.columns].any()


def test_candidates_are_the_union_of_each_generators_best_unheard_tracks() -> None:
    rng = np.random.default_rng(11)
    dense = (rng.random((30, 40)) < 0.15) * rng.uniform(1, 4, (30, 40))
    matrix = InteractionMatrix(
        sp.csr_matrix(dense.astype(np.float32)),
        np.array([f"u{i:02d}" for i in range(30)]),
        np.array([f"t{i:02d}" for i in range(40)]),
    )
    blend = Blend(ALSModel.fit(matrix, ALS), {"rp3beta": (RP3beta.fit(matrix), 0.5)})
    artist = np.arange(40) // 3
    # What a listener knows can be more than what they trained on (e.g. thumbs).
    known = sp.csr_matrix(dense + (rng.random((30, 40)) < 0.05))
    inputs = RankerInputs(matrix.user_items, known, artist, listeners_of(matrix.user_items))
    rows = np.arange(30)
    found = candidate_features(blend, inputs, rows, n_candidates=3, block_size=7)
    eligible = inputs.track_listeners > 0
    for position, row in enumerate(rows):
        got = set(found.columns[found.rows == position].tolist())
        heard = set(known[row].indices.tolist())
        assert not got & heard
        expected: set[int] = set()
        for generator in (blend.base, blend.partners["rp3beta"][0]):
            scores = generator.score(np.array([row]))[0]
            floor = scores.min()
            open_ = [c for c in range(40) if c not in heard and eligible[c] and scores[c] > floor]
            expected |= set(sorted(open_, key=lambda c: -scores[c])[:3])
        assert got == expected, row
    # Grouped by listener, in the order asked for; groups count them.
    assert np.all(np.diff(found.rows) >= 0)
    assert found.groups.sum() == len(found.rows) and len(found.groups) == 30


def test_rank_among_counts_the_strictly_higher_finite_scores_of_the_row() -> None:
    rng = np.random.default_rng(2)
    scores = rng.integers(-3, 4, size=(5, 12)).astype(np.float32)  # many ties
    scores[rng.random((5, 12)) < 0.2] = -np.inf
    scores[0, 0], scores[0, 1] = -0.0, 0.0
    rows, columns = np.nonzero(np.isfinite(scores))
    ranks = rank_among(scores, rows.astype(np.int64), columns.astype(np.int64))
    for row, column, rank in zip(rows, columns, ranks, strict=True):
        finite = scores[row][np.isfinite(scores[row])]
        assert rank == np.sum(finite > scores[row, column])
    assert ranks[(rows == 0) & (columns == 0)] == ranks[(rows == 0) & (columns == 1)]


# ------------------------------------------------------------------------------ ranker


def synthetic_groups(
    seed: int, n_groups: int = 150, size: int = 40
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of ``size`` rows with three uniform features; the label is 1 exactly when
    feature ``signal`` is above 0.8 (the other two are noise)."""
    rng = np.random.default_rng(seed)
    features = rng.random((n_groups * size, 3)).astype(np.float32)
    labels = (features[:, 1] > 0.8).astype(np.float32)
    return features, labels, np.full(n_groups, size, dtype=np.int64)


NAMES = ("noise_a", "signal", "noise_b")


def precision_at(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 5) -> float:
    start, hits = 0, 0.0
    for size in groups:
        top = np.argsort(-scores[start : start + size], kind="stable")[:k]
        hits += labels[start : start + size][top].mean()
        start += size
    return hits / len(groups)


def test_a_ranker_learns_a_label_that_is_a_function_of_one_feature() -> None:
    features, labels, groups = synthetic_groups(1)
    ranker = FinalRanker.fit(features, labels, groups, NAMES, PLAIN)
    fresh, fresh_labels, fresh_groups = synthetic_groups(2)
    scores = ranker.predict(fresh)
    assert precision_at(scores, fresh_labels, fresh_groups) >= 0.95
    # Above the threshold beats below it, whatever the noise.
    assert scores[fresh[:, 1] > 0.85].min() > scores[fresh[:, 1] < 0.75].max()
    gain = ranker.importance("gain")
    assert max(gain, key=lambda name: gain[name]) == "signal" and gain["signal"] > 0.9
    assert ranker.metadata["holdout_listeners"] == 30 and ranker.metadata["best_iteration"] >= 1
    assert ranker.metadata["holdout_ndcg"] > 0.95


def test_without_the_feature_behind_the_label_the_ranker_cannot_find_it() -> None:
    features, labels, groups = synthetic_groups(1)
    kept = [0, 2]
    ranker = FinalRanker.fit(features[:, kept], labels, groups, ("noise_a", "noise_b"), PLAIN)
    fresh, fresh_labels, fresh_groups = synthetic_groups(2)
    # About a fifth of the rows are positive: chance, not the 0.95 with the feature.
    assert precision_at(ranker.predict(fresh[:, kept]), fresh_labels, fresh_groups) < 0.4


def test_boosting_starts_from_the_start_from_feature_and_corrects_it() -> None:
    """Starting from a score that knows half the rule, the ranker keeps that score's order
    where the data add nothing and learns the other half."""
    features, labels, groups = synthetic_groups(1)
    names = ("noise_a", "signal", "blend_score")
    # The "blend" ranks by the signal only below 0.5 and is noise above: the label (signal
    # > 0.8) must come from the boosting.
    features[:, 2] = np.where(features[:, 1] < 0.5, features[:, 1], features[:, 2] * 0.5)
    params = RankerParams(min_data_in_leaf=20)
    ranker = FinalRanker.fit(features, labels, groups, names, params)
    fresh, fresh_labels, fresh_groups = synthetic_groups(2)
    fresh[:, 2] = np.where(fresh[:, 1] < 0.5, fresh[:, 1], fresh[:, 2] * 0.5)
    assert precision_at(ranker.predict(fresh), fresh_labels, fresh_groups) >= 0.95
    assert precision_at(fresh[:, 2], fresh_labels, fresh_groups) < 0.6  # the start alone
    # One round at a tiny rate leaves the starting order.
    barely = FinalRanker.fit(
        features, labels, groups, names, replace(params, rounds=1, learning_rate=1e-6)
    )
    np.testing.assert_allclose(barely.predict(fresh), fresh[:, 2], atol=1e-4)


def test_mean_ndcg_has_its_known_answers() -> None:
    # One hit at the second place: 1 / log2(3); a group without a positive counts 1.
    scores = np.array([3.0, 2.0, 1.0, 0.5, 0.2])
    labels = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    assert mean_ndcg(scores[:3], labels[:3], [3], 10) == pytest.approx(1 / np.log2(3))
    assert mean_ndcg(scores, labels, [3, 2], 10) == pytest.approx((1 / np.log2(3) + 1) / 2)
    assert mean_ndcg(scores[:3], labels[:3], [3], 1) == 0.0  # the hit is below the cut
    # Ties go to the earlier row, whatever the label.
    assert mean_ndcg(np.zeros(2), np.array([0.0, 1.0]), [2], 1) == 0.0


def test_bad_inputs_to_the_ranker_are_refused_with_the_reason(tmp_path: Path) -> None:
    features, labels, groups = synthetic_groups(1, n_groups=10)
    plain = replace(SMALL, start_from=None)
    with pytest.raises(ValueError, match=r"features has shape .* expected \(N, 2\)"):
        FinalRanker.fit(features, labels, groups, ("a", "b"), plain)
    with pytest.raises(ValueError, match="labels has shape"):
        FinalRanker.fit(features, labels[:-1], groups, NAMES, plain)
    with pytest.raises(ValueError, match="sum to the 400 rows, they sum to 399"):
        FinalRanker.fit(features, labels, np.r_[groups[:-1], 39], NAMES, plain)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        FinalRanker.fit(features, labels * 2, groups, NAMES, plain)
    with pytest.raises(ValueError, match="features must be finite"):
        FinalRanker.fit(np.where(features > 0.99, np.nan, features), labels, groups, NAMES, plain)
    with pytest.raises(ValueError, match="feature names repeat"):
        FinalRanker.fit(features, labels, groups, ("a", "a", "b"), plain)
    with pytest.raises(ValueError, match="no positive label"):
        FinalRanker.fit(features, np.zeros_like(labels), groups, NAMES, plain)
    with pytest.raises(ValueError, match="start_from 'blend_score' is not one of the features"):
        FinalRanker.fit(features, labels, groups, NAMES, SMALL)
    ranker = FinalRanker.fit(features, labels, groups, NAMES, plain)
    with pytest.raises(ValueError, match=r"features has shape \(4, 2\)"):
        ranker.predict(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="does not hold a final ranker"):
        FinalRanker.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="must be at least 1"):
        RankerParams(candidates=0)
    with pytest.raises(ValueError, match="holdout_share"):
        RankerParams(holdout_share=1.0)


def test_a_saved_ranker_loads_with_identical_scores(tmp_path: Path) -> None:
    features, labels, groups = synthetic_groups(3)
    ranker = FinalRanker.fit(features, labels, groups, NAMES, PLAIN)
    ranker.save(tmp_path / "r")
    loaded = FinalRanker.load(tmp_path / "r")
    assert loaded.names == NAMES and loaded.params == ranker.params
    assert loaded.metadata == ranker.metadata and loaded.fingerprint == ranker.fingerprint
    np.testing.assert_array_equal(loaded.predict(features), ranker.predict(features))


# ------------------------------------------------------------- Ranked, on checker boards


def fitted_ranked(matrix: InteractionMatrix, params: RankerParams = SMALL) -> Ranked:
    """A ranker fitted on a leave-one-out split of ``matrix``, put over the blend of the
    whole matrix (as the weekly run would: fitted a split earlier, applied to this week)."""
    artist = np.arange(matrix.shape[1]) // 2
    train, held = leave_one_out(matrix, seed=4)
    val_blend = Blend(ALSModel.fit(train, ALS), {"rp3beta": (RP3beta.fit(train), 0.5)})
    rows = np.arange(matrix.shape[0])
    has_held = np.diff(held.indptr) > 0
    ranker = fit_final_ranker(
        val_blend,
        train.user_items,
        rows[has_held],
        held[has_held],
        artist,
        listeners_of(train.user_items),
        params=params,
    )
    blend = Blend(ALSModel.fit(matrix, ALS), {"rp3beta": (RP3beta.fit(matrix), 0.5)})
    return Ranked(blend, ranker, inputs_of(matrix.user_items, artist))


class TestRankedContract(RecommenderContract):
    """The ranked model keeps every promise of the interface."""

    model_class = Ranked

    def fit(self, matrix: InteractionMatrix) -> Any:
        return fitted_ranked(matrix)

    def test_known_answer_each_listener_gets_tracks_of_their_parity(
        self, model: Any, matrix: InteractionMatrix
    ) -> None:
        columns, _ = model.recommend(np.arange(N_USERS), matrix.user_items, 2)
        for user in range(N_USERS):
            assert {c % 2 for c in columns[user]} == {user % 2}, user


def test_no_track_outside_the_candidates_outranks_one_inside() -> None:
    matrix = checker_board()
    ranked = fitted_ranked(matrix)
    rows = np.arange(N_USERS)
    scores = ranked.score(rows)
    blend_scores = ranked.blend.score(rows)
    found = ranked.candidates(rows)
    assert len(found.rows) > 0
    for row in rows:
        inside = np.zeros(N_TRACKS, dtype=bool)
        inside[found.columns[found.rows == row]] = True
        assert inside.any()
        np.testing.assert_array_equal(
            scores[row, inside], ranked.ranker.predict(found.features[found.rows == row])
        )
        assert scores[row, ~inside].max() < scores[row, inside].min()
        # Outside, the blend's order, in a narrow band just below the candidates.
        outside = np.flatnonzero(~inside)
        order = np.argsort(-blend_scores[row, outside], kind="stable")
        assert np.all(np.diff(scores[row, outside][order]) <= 0)
        spread = np.ptp(scores[row, inside]) or 1.0
        assert scores[row, outside].min() >= scores[row, inside].min() - 0.11 * spread - 1e-5
        # Nothing heard is a candidate.
        assert not inside[matrix.user_items[row].indices].any()


def test_below_candidates_keeps_minus_infinity_and_the_order_outside() -> None:
    scores = np.array([[5.0, -np.inf, 3.0, 9.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]], np.float32)
    out = below_candidates(
        scores.copy(),
        np.array([0, 0, 1]),
        np.array([0, 2, 4]),
        np.array([-7.0, -6.5, 0.25], dtype=np.float32),
    )
    assert out[0, 1] == -np.inf
    assert out[0, 0] == -7.0 and out[0, 2] == -6.5 and out[1, 4] == 0.25
    assert out[0, 3] < -7.0 and out[0, 4] < out[0, 3]  # 9 above 1, both below -7
    # In a band 1 % to 11 % of the candidates' spread (0.5) below the lowest one.
    assert out[0, 3] == pytest.approx(-7.005) and out[0, 4] == pytest.approx(-7.055)
    assert out[1, :4].max() < 0.25 and np.all(np.diff(out[1, :4]) > 0)
    # A row without candidates keeps the blend's scores.
    untouched = below_candidates(
        scores.copy(), np.array([1]), np.array([0]), np.array([0.0], np.float32)
    )
    np.testing.assert_array_equal(untouched[0], scores[0])


def test_the_pipeline_runs_over_the_ranked_model_with_mmr_cap_and_explanations() -> None:
    matrix = checker_board()
    ranked = fitted_ranked(matrix)
    artist = ranked.inputs.track_artist
    rules = PlaylistRules(6, 2, diversity=0.2, popularity_penalty=0.1)
    pipeline = PlaylistPipeline(rules, ranked, artist, listeners_of(matrix.user_items))
    assert pipeline.item_vectors is ranked.base.scoring_item_factors
    rows = np.arange(N_USERS)
    (block,) = pipeline.personal(rows, matrix.user_items)
    for user, columns in enumerate(block.track_columns):
        picked = columns[columns >= 0]
        assert len(picked) == rules.length
        assert not set(picked) & set(matrix.user_items[user].indices)
        assert np.bincount(artist[picked]).max() <= 2
    titles = np.array([f"Track {i}" for i in range(N_TRACKS)])
    reasons = pipeline.explain(block, matrix.user_items, titles)
    assert len(reasons) == N_USERS and any(text for row in reasons for text in row)


def test_a_saved_ranked_model_loads_with_identical_scores(tmp_path: Path) -> None:
    ranked = fitted_ranked(checker_board())
    ranked.save(tmp_path / "m")
    loaded = Ranked.load(tmp_path / "m")
    rows = np.arange(N_USERS)
    np.testing.assert_array_equal(loaded.score(rows), ranked.score(rows))
    assert loaded.fingerprint == ranked.fingerprint != ranked.blend.fingerprint
    # A reader that knows only blends still loads the blend underneath.
    np.testing.assert_array_equal(Blend.load(tmp_path / "m").score(rows), ranked.blend.score(rows))


def test_bad_inputs_to_features_and_ranked_are_refused_with_the_reason() -> None:
    matrix = checker_board()
    ranked = fitted_ranked(matrix)
    blend = ranked.blend
    artist = np.arange(N_TRACKS) // 2
    with pytest.raises(ValueError, match="known has shape"):
        RankerInputs(matrix.user_items, matrix.user_items[:3], artist, np.ones(N_TRACKS, int))
    with pytest.raises(ValueError, match="track_artist has shape"):
        RankerInputs(matrix.user_items, matrix.user_items, artist[:3], np.ones(N_TRACKS, int))
    with pytest.raises(ValueError, match="track_artist must be non-negative"):
        RankerInputs(matrix.user_items, matrix.user_items, artist - 1, np.ones(N_TRACKS, int))
    small = RankerInputs(
        sp.csr_matrix((2, N_TRACKS)), sp.csr_matrix((2, N_TRACKS)), artist, np.ones(N_TRACKS, int)
    )
    with pytest.raises(ValueError, match="inputs have shape"):
        candidate_features(blend, small, np.arange(2))
    with pytest.raises(ValueError, match="inputs have shape"):
        Ranked(blend, ranked.ranker, small)
    with pytest.raises(ValueError, match=r"user_rows must be in \[0, 40\)"):
        ranked.score(np.array([0, N_USERS]))
    with pytest.raises(ValueError, match="n_candidates must be at least 1"):
        candidate_features(blend, ranked.inputs, np.arange(2), n_candidates=0)
    # A ranker fitted on other generators' features does not fit this blend.
    with pytest.raises(ValueError, match="the ranker was fitted on features"):
        Ranked(blend.base, ranked.ranker, ranked.inputs)
    with pytest.raises(ValueError, match=r"test_rows has shape \(3, 24\), expected \(2, 24\)"):
        fit_final_ranker(
            blend,
            matrix.user_items,
            np.arange(2),
            sp.csr_matrix((3, N_TRACKS)),
            artist,
            listeners_of(matrix.user_items),
        )
    with pytest.raises(ValueError, match="no positive label"):
        fit_final_ranker(
            blend,
            matrix.user_items,
            np.arange(2),
            sp.csr_matrix((2, N_TRACKS)),
            artist,
            listeners_of(matrix.user_items),
            params=SMALL,
        )
    found = candidate_features(blend, ranked.inputs, np.arange(3))
    with pytest.raises(ValueError, match="test_rows has 2 rows for 3 listeners"):
        labels_of(found, sp.csr_matrix((2, N_TRACKS)))


def test_with_base_keeps_the_ranker_and_cold_tracks_keep_the_blends_score() -> None:
    """The weekly run swaps a blend's base for its cold-start twin (``with_base``); cold
    tracks are never candidates and keep the blend's score, so the cold slots still fill."""
    matrix = checker_board()
    ranked = fitted_ranked(matrix)
    content = np.zeros((N_TRACKS, 2), dtype=np.float32)
    content[np.arange(N_TRACKS), np.arange(N_TRACKS) % 2] = 1.0
    cold_base = with_cold_start(
        ranked.base, content, np.ones(N_TRACKS, bool), listeners_of(matrix.user_items), 1
    )
    assert cold_base.cold_start is not None
    cold = cold_base.cold_start.cold_mask
    swapped = ranked.with_base(cold_base)
    assert isinstance(swapped, Ranked) and swapped.ranker is ranked.ranker
    assert swapped.base is cold_base and swapped.partners == ranked.partners
    rows = np.arange(N_USERS)
    scores, blend_scores = swapped.score(rows), swapped.blend.score(rows)
    np.testing.assert_array_equal(scores[:, cold], blend_scores[:, cold])
    found = swapped.candidates(rows)
    assert not cold[found.columns].any()
    for row in rows:
        inside = np.zeros(N_TRACKS, dtype=bool)
        inside[found.columns[found.rows == row]] = True
        assert scores[row, ~inside & ~cold].max() < scores[row, inside].min()
    rules = PlaylistRules(6, 2, cold_slots=1)
    artist = ranked.inputs.track_artist
    listeners = listeners_of(matrix.user_items)
    pipeline = PlaylistPipeline(rules, swapped, artist, listeners)
    assert pipeline.cold_mask is cold
    (block,) = pipeline.personal(rows, matrix.user_items)
    (shipped,) = PlaylistPipeline(rules, swapped.blend, artist, listeners).personal(
        rows, matrix.user_items
    )
    assert block.is_cold.any(axis=1).mean() >= 0.5 * shipped.is_cold.any(axis=1).mean() > 0
    for user, columns in enumerate(block.track_columns):
        assert not set(columns[columns >= 0]) & set(matrix.user_items[user].indices)

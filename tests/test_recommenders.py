"""One contract for every model behind :class:`recsys.recommender.Recommender` (implicit's
``RecommenderBaseTestMixin``), run against ALS, ALS with content cold start, popularity and
the item-to-item models of :mod:`recsys.neighbors`; plus the known answer of each on a
checker-board world, and the one pipeline that the weekly run, the gate and ``evaluate``
share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.als import ALSModel, ALSParams, with_cold_start
from recsys.matrix import InteractionMatrix
from recsys.neighbors import EASE, ItemKNN, RP3beta
from recsys.recommender import PopularityModel, Recommender

N_USERS, N_TRACKS = 40, 24


def checker_board() -> InteractionMatrix:
    """Even listeners play some even tracks, odd listeners some odd ones; track 0 and 1 are
    the most played of their parity. Fixed seed."""
    rng = np.random.default_rng(5)
    dense = np.zeros((N_USERS, N_TRACKS), dtype=np.float32)
    for user in range(N_USERS):
        parity = user % 2
        same = np.arange(parity, N_TRACKS - 4, 2)  # the last 4 tracks nobody plays
        played = rng.choice(same[1:], size=4, replace=False)
        dense[user, played] = rng.uniform(0.5, 3.0, size=4)
        if user < 30:
            dense[user, parity] = 2.0
    return InteractionMatrix(
        sp.csr_matrix(dense),
        np.array([f"u{i:02d}" for i in range(N_USERS)]),
        np.array([f"t{i:02d}" for i in range(N_TRACKS)]),
    )


class RecommenderContract:
    """What every recommender must do; subclasses say which model class it is (it loads
    what was saved) and how to fit one."""

    model_class: ClassVar[Any]

    def fit(self, matrix: InteractionMatrix) -> Any:
        raise NotImplementedError

    @pytest.fixture
    def matrix(self) -> InteractionMatrix:
        return checker_board()

    @pytest.fixture
    def model(self, matrix: InteractionMatrix) -> Any:
        return self.fit(matrix)

    def test_is_a_recommender(self, model: Any) -> None:
        assert isinstance(model, Recommender)

    def test_scores_a_block(self, model: Any) -> None:
        scores = model.score(np.array([3, 0, 3], dtype=np.int64))
        assert scores.shape == (3, N_TRACKS) and scores.dtype == np.float32
        np.testing.assert_array_equal(scores[0], scores[2])

    def test_recommend_leaves_out_what_is_known_best_first(
        self, model: Any, matrix: InteractionMatrix
    ) -> None:
        rows = np.arange(N_USERS, dtype=np.int64)
        columns, scores = model.recommend(rows, matrix.user_items, 5)
        assert columns.shape == scores.shape == (N_USERS, 5)
        full = model.score(rows)
        for row in rows:
            known = set(matrix.user_items[row].indices)
            assert not known & set(columns[row].tolist())
            assert np.all(np.diff(scores[row]) <= 0)
            np.testing.assert_array_equal(scores[row], full[row, columns[row]])
        with pytest.raises(ValueError, match="known has shape"):
            model.recommend(rows[:2], matrix.user_items, 5)
        with pytest.raises(ValueError, match="n must be"):
            model.recommend(rows, matrix.user_items, 0)

    def test_similar_items_leave_out_the_item_itself(self, model: Any) -> None:
        columns, similarity = model.similar_items(np.array([2, 5]), N_TRACKS)
        assert columns.shape == (2, N_TRACKS)
        assert 2 not in columns[0] and 5 not in columns[1]
        assert (columns[:, -1] == -1).all()  # everything but itself, then padding
        finite = np.isfinite(similarity)
        assert np.all(similarity[finite] <= 1.0 + 1e-5)

    def test_save_and_load_give_the_same_scores(self, model: Any, tmp_path: Path) -> None:
        model.save(tmp_path / "model")
        loaded = self.model_class.load(tmp_path / "model")
        rows = np.arange(N_USERS, dtype=np.int64)
        np.testing.assert_array_equal(loaded.score(rows), model.score(rows))
        np.testing.assert_array_equal(loaded.track_ids, model.track_ids)


class TestALS(RecommenderContract):
    model_class = ALSModel

    def fit(self, matrix: InteractionMatrix) -> Any:
        params = ALSParams(factors=4, regularization=0.01, alpha=10.0, iterations=15)
        return ALSModel.fit(matrix, params)

    def test_known_answer_each_listener_gets_tracks_of_their_parity(
        self, model: Any, matrix: InteractionMatrix
    ) -> None:
        columns, _ = model.recommend(np.arange(N_USERS), matrix.user_items, 2)
        for user in range(N_USERS):
            assert {c % 2 for c in columns[user]} == {user % 2}, user


class TestContentColdStart(TestALS):
    """ALS whose unplayed tracks score through factors projected from their content."""

    def fit(self, matrix: InteractionMatrix) -> Any:
        model = super().fit(matrix)
        # Content says which parity a track is; the last four tracks have no listener.
        content = np.zeros((N_TRACKS, 2), dtype=np.float32)
        content[np.arange(N_TRACKS), np.arange(N_TRACKS) % 2] = 1.0
        listeners = np.asarray((matrix.user_items > 0).sum(axis=0)).ravel().astype(np.int64)
        has_content = np.ones(N_TRACKS, dtype=bool)
        return with_cold_start(model, content, has_content, listeners, min_listeners=1)

    def test_known_answer_new_tracks_of_a_listeners_parity_score_higher(self, model: Any) -> None:
        assert model.cold_start is not None and model.cold_start.cold_mask[-4:].all()
        scores = model.score(np.arange(N_USERS))
        for user in range(N_USERS):
            same, other = (N_TRACKS - 4 + user % 2), (N_TRACKS - 3 - user % 2)
            assert scores[user, same] > scores[user, other], user


class TestPopularity(RecommenderContract):
    model_class = PopularityModel

    def fit(self, matrix: InteractionMatrix) -> Any:
        return PopularityModel.fit(matrix)

    def test_known_answer_the_most_played_unheard_track(
        self, model: Any, matrix: InteractionMatrix
    ) -> None:
        columns, _ = model.recommend(np.arange(N_USERS), matrix.user_items, 1)
        # Tracks 0 and 1 have 15 listeners each, far more than any other; the 10 listeners
        # without their parity's one get the other parity's.
        for user in range(N_USERS):
            heard = set(matrix.user_items[user].indices)
            best = 0 if 0 not in heard else 1 if 1 not in heard else None
            if best is not None:
                assert columns[user, 0] == best, user

    def test_listeners_of_a_track_count_positive_confidence_only(self) -> None:
        matrix = InteractionMatrix(
            sp.csr_matrix(np.array([[1.0, -2.0], [3.0, 0.0]], dtype=np.float32)),
            np.array(["a", "b"]),
            np.array(["x", "y"]),
        )
        assert PopularityModel.fit(matrix).listeners.tolist() == [2.0, 0.0]


class ItemToItemContract(RecommenderContract):
    """The models of :mod:`recsys.neighbors`: no listener links the two parities, so no
    track of the other parity gets a score."""

    def test_known_answer_each_listener_gets_tracks_of_their_parity(
        self, model: Any, matrix: InteractionMatrix
    ) -> None:
        columns, scores = model.recommend(np.arange(N_USERS), matrix.user_items, 2)
        assert (scores > 0).all()
        for user in range(N_USERS):
            assert {c % 2 for c in columns[user]} == {user % 2}, user


class TestItemKNN(ItemToItemContract):
    model_class = ItemKNN

    def fit(self, matrix: InteractionMatrix) -> Any:
        return ItemKNN.fit(matrix, weighting="bm25", K=10)


class TestItemKNNCosine(ItemToItemContract):
    model_class = ItemKNN

    def fit(self, matrix: InteractionMatrix) -> Any:
        return ItemKNN.fit(matrix, weighting="cosine", K=10)


class TestRP3beta(ItemToItemContract):
    model_class = RP3beta

    def fit(self, matrix: InteractionMatrix) -> Any:
        return RP3beta.fit(matrix, alpha=1.0, beta=0.5, K=10)


class TestEASE(ItemToItemContract):
    model_class = EASE

    def fit(self, matrix: InteractionMatrix) -> Any:
        return EASE.fit(matrix, regularization=10.0)

"""Matrix building, ALS training and artifact, playlist selection: pure numpy/scipy, fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.als import ALSModel, ALSParams, train_als
from recsys.matrix import build_interaction_matrix
from recsys.playlist import (
    PlaylistRules,
    generate_playlists,
    mask_known_tracks,
    select_with_artist_cap,
)


def test_matrix_columns_cover_the_whole_catalog_sorted() -> None:
    m = build_interaction_matrix(
        ["u2", "u1", "u1"], ["t1", "t2", "t3"], [1.0, 2.0, -1.0], ["t3", "t1", "t2", "t4"]
    )
    assert m.user_ids.tolist() == ["u1", "u2"]
    assert m.track_ids.tolist() == ["t1", "t2", "t3", "t4"]
    assert m.user_items.toarray().tolist() == [[0, 2, -1, 0], [1, 0, 0, 0]]
    assert m.user_index(["u2", "nobody"]).tolist() == [1, -1]
    assert m.track_index(["t4", "t0"]).tolist() == [3, -1]


@pytest.mark.parametrize(
    ("users", "tracks", "confidence", "message"),
    [
        (["u1"], ["t9"], [1.0], "not in catalog"),
        (["u1", "u1"], ["t1", "t1"], [1.0, 2.0], "more than once"),
        (["u1"], ["t1"], [0.0], "non-zero"),
        (["u1"], ["t1"], [np.inf], "finite"),
        (["u1"], ["t1", "t2"], [1.0], "same length"),
    ],
)
def test_matrix_rejects_bad_rows(users, tracks, confidence, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_interaction_matrix(users, tracks, confidence, ["t1", "t2"])


def test_fingerprint_changes_with_data_and_params() -> None:
    a = build_interaction_matrix(["u1"], ["t1"], [1.0], ["t1", "t2"])
    b = build_interaction_matrix(["u1"], ["t1"], [2.0], ["t1", "t2"])
    assert (
        a.fingerprint()
        == build_interaction_matrix(["u1"], ["t1"], [1.0], ["t1", "t2"]).fingerprint()
    )
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint({"factors": 8}) != a.fingerprint({"factors": 16})


def _checkerboard(n_users: int = 40, n_items: int = 20) -> tuple:
    """Even listeners play even tracks, odd listeners odd tracks, each missing one track."""
    users, items = [], []
    for u in range(n_users):
        for i in range(u % 2, n_items, 2):
            if i // 2 != u % (n_items // 2):
                users.append(f"u{u:03d}")
                items.append(f"t{i:03d}")
    return users, items


def test_als_recovers_the_checkerboard_and_round_trips(tmp_path: Path) -> None:
    users, items = _checkerboard()
    catalog = [f"t{i:03d}" for i in range(22)]  # two tracks nobody played
    m = build_interaction_matrix(users, items, np.ones(len(users)), catalog)
    model = train_als(m, ALSParams(factors=4, iterations=15, regularization=0.01, random_seed=1))
    scores = model.score(np.arange(m.shape[0]))
    for row, user in enumerate(m.user_ids):
        parity = int(user[1:]) % 2
        missing = f"t{2 * (int(user[1:]) % 10) + parity:03d}"
        played = set(m.user_items[row].indices)
        unplayed_scores = {c: scores[row, c] for c in range(20) if c not in played}
        assert max(unplayed_scores, key=unplayed_scores.get) == m.track_index([missing])[0]
    assert not model.item_factors[m.track_index(["t020", "t021"])].any()

    model.save(tmp_path / "model")
    loaded = ALSModel.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.track_ids.tolist() == m.track_ids.tolist()
    assert loaded.params == model.params and loaded.fingerprint == model.fingerprint
    with np.load(tmp_path / "model" / "factors.npz", allow_pickle=False) as arrays:
        assert arrays["user_ids"].dtype.kind == "U"


def test_loading_something_that_is_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not hold a model"):
        ALSModel.load(tmp_path)


def _reference_selection(scores: np.ndarray, artists: np.ndarray, length: int, cap: int) -> list:
    """Obviously correct: walk tracks by descending score, skip full artists and -inf."""
    chosen = []
    per_artist: dict[int, int] = {}
    for column in sorted(range(len(scores)), key=lambda c: (-scores[c], c)):
        if not np.isfinite(scores[column]) or per_artist.get(artists[column], 0) >= cap:
            continue
        chosen.append(column)
        per_artist[artists[column]] = per_artist.get(artists[column], 0) + 1
        if len(chosen) == length:
            break
    return chosen


@pytest.mark.parametrize("seed", range(12))
def test_artist_capped_selection_matches_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows, n_tracks = 7, int(rng.integers(20, 400))
    n_artists = int(rng.integers(1, 40))
    artists = rng.integers(0, n_artists, n_tracks)
    scores = rng.standard_normal((n_rows, n_tracks)).astype(np.float32)
    scores[rng.random((n_rows, n_tracks)) < 0.3] = -np.inf
    if seed % 3 == 0:  # one artist dominates the top: the cap must bite
        scores[:, artists == artists[0]] += 10
    rules = PlaylistRules(
        length=int(rng.integers(1, 60)), max_tracks_per_artist=int(rng.integers(1, 4))
    )
    columns, chosen = select_with_artist_cap(scores, artists, rules)
    for row in range(n_rows):
        expected = _reference_selection(
            scores[row], artists, rules.length, rules.max_tracks_per_artist
        )
        got = [int(c) for c in columns[row] if c >= 0]
        assert got == expected
        assert np.all(columns[row, len(expected) :] == -1)
        np.testing.assert_array_equal(chosen[row, : len(expected)], scores[row, expected])


def test_known_and_ineligible_tracks_are_never_chosen() -> None:
    scores = np.arange(12, dtype=np.float32)[None, :].repeat(2, axis=0)
    known = sp.csr_matrix(np.array([[0] * 11 + [1], [1] * 6 + [0] * 6], dtype=np.float32))
    eligible = np.ones(12, dtype=bool)
    eligible[10] = False
    mask_known_tracks(scores, known, eligible)
    assert (
        np.isneginf(scores[0, 11])
        and np.isneginf(scores[0, 10])
        and np.isneginf(scores[1, :6]).all()
    )

    class Fixed:
        user_ids = np.array(["u0", "u1"])
        track_ids = np.array([f"t{i}" for i in range(12)])

        def score(self, rows):
            return np.tile(np.arange(12, dtype=np.float32), (len(rows), 1))

    blocks = list(
        generate_playlists(
            Fixed(), known, np.arange(12), PlaylistRules(3, 1), eligible=eligible, block_size=1
        )
    )
    assert [b.track_columns.tolist() for b in blocks] == [[[9, 8, 7]], [[11, 9, 8]]]

"""Matrix building, ALS training and artifact, playlist selection: pure numpy/scipy, fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.als import ALSModel, ALSParams, train_als, with_cold_start
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


def _checkerboard_model() -> tuple[ALSModel, np.ndarray]:
    users, items = _checkerboard()
    catalog = [f"t{i:03d}" for i in range(22)]  # t020 and t021: nobody played them
    m = build_interaction_matrix(users, items, np.ones(len(users)), catalog)
    model = train_als(m, ALSParams(factors=4, iterations=15, regularization=0.01, random_seed=1))
    listeners = np.asarray((m.user_items > 0).sum(axis=0)).ravel().astype(np.int64)
    return model, listeners


def test_cold_start_factors_travel_with_the_model_and_old_artifacts_still_load(
    tmp_path: Path,
) -> None:
    import json

    model, listeners = _checkerboard_model()
    # Content: even tracks point one way, odd ones the other (their parity is their taste).
    content = np.zeros((22, 2), dtype=np.float32)
    content[np.arange(22) % 2 == 0, 0] = 1.0
    content[np.arange(22) % 2 == 1, 1] = 1.0
    has_content = np.ones(22, dtype=bool)
    cold_model = with_cold_start(model, content, has_content, listeners, min_listeners=5)
    assert cold_model.cold_start is not None
    assert cold_model.cold_start.cold_mask.tolist() == [False] * 20 + [True, True]
    assert cold_model.fingerprint != model.fingerprint
    assert with_cold_start(model, content, has_content, listeners, 5).fingerprint == (
        cold_model.fingerprint
    )
    # The new even track scores best among the new ones for even listeners, and vice versa.
    scores = cold_model.score(np.arange(len(model.user_ids)))
    parity = np.array([int(u[1:]) % 2 for u in model.user_ids])
    assert np.all((scores[:, 20] > scores[:, 21]) == (parity == 0))
    # Warm tracks score as before: only the cold rows take projected factors.
    np.testing.assert_array_equal(
        cold_model.score(np.arange(3))[:, :20], model.score(np.arange(3))[:, :20]
    )

    cold_model.save(tmp_path / "cold")
    assert json.loads((tmp_path / "cold" / "model.json").read_text())["format"] == 2
    loaded = ALSModel.load(tmp_path / "cold")
    assert loaded.cold_start is not None
    np.testing.assert_array_equal(loaded.cold_start.cold_mask, cold_model.cold_start.cold_mask)
    np.testing.assert_array_equal(loaded.cold_start.factors, cold_model.cold_start.factors)
    np.testing.assert_array_equal(loaded.cold_start.content, content)
    np.testing.assert_array_equal(loaded.scoring_item_factors, cold_model.scoring_item_factors)
    assert loaded.metadata["cold_start"]["cold_tracks"] == 2

    # Without cold start the artifact keeps format 1, which older code reads too.
    model.save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "model.json").read_text())["format"] == 1
    assert ALSModel.load(tmp_path / "plain").cold_start is None
    # An artifact as the first version wrote it (format 1, four arrays) still loads.
    old = tmp_path / "old"
    old.mkdir()
    np.savez(
        old / "factors.npz",
        user_factors=model.user_factors,
        item_factors=model.item_factors,
        user_ids=model.user_ids,
        track_ids=model.track_ids,
    )
    (old / "model.json").write_text(
        json.dumps({"format": 1, "params": {"factors": 4}, "fingerprint": "abc"})
    )
    legacy = ALSModel.load(old)
    assert legacy.cold_start is None and legacy.fingerprint == "abc"
    np.testing.assert_array_equal(legacy.scoring_item_factors, model.item_factors)
    (old / "model.json").write_text(json.dumps({"format": 3, "params": {}, "fingerprint": "x"}))
    with pytest.raises(ValueError, match="format 3 is not supported"):
        ALSModel.load(old)


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

"""The one-pass selection of generation (recsys.playlist.top_sorted, top_candidates)
against an exact reference: a full np.argsort of each row, descending score, ties to the
lower column, NaN, +inf and -inf never taken."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from recsys.playlist import top_candidates, top_sorted


def reference_top(
    scores: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact top-k of each row by a full sort: (-1, -inf) padded."""
    n_rows, n_columns = scores.shape
    width = min(k, n_columns)
    columns = np.full((n_rows, width), -1, dtype=np.int64)
    values = np.full((n_rows, width), -np.inf, dtype=np.float32)
    for row in range(n_rows):
        finite = np.flatnonzero(np.isfinite(scores[row]))
        # argsort is stable: equal scores keep the lower column first.
        order = finite[np.argsort(-scores[row, finite].astype(np.float64), kind="stable")]
        chosen = order[:width]
        columns[row, : len(chosen)] = chosen
        values[row, : len(chosen)] = scores[row, chosen]
    return columns, values


def assert_matches(scores: npt.NDArray[np.float32], k: int) -> None:
    columns, values, ties = top_sorted(scores, k)
    expected_columns, expected_values = reference_top(scores, k)
    np.testing.assert_array_equal(columns, expected_columns)
    np.testing.assert_array_equal(values, expected_values)
    for row in range(scores.shape[0]):
        if np.isfinite(values[row, -1]):
            assert ties[row] == int((scores[row] == values[row, -1]).sum())


@pytest.mark.parametrize("n_columns", [1, 7, 64, 1000, 5003, 40_000])
@pytest.mark.parametrize("k", [1, 5, 50, 200])
def test_random_scores_match_the_full_sort(n_columns: int, k: int) -> None:
    rng = np.random.default_rng(n_columns * 1000 + k)
    scores = rng.standard_normal((6, n_columns)).astype(np.float32)
    assert_matches(scores, k)


def test_sorted_and_reversed_rows_match() -> None:
    ramp = np.arange(20_000, dtype=np.float32)
    scores = np.vstack([ramp, ramp[::-1], np.roll(ramp, 7777)])
    assert_matches(scores, 100)


@pytest.mark.parametrize("n_columns", [300, 20_000])
def test_ties_go_to_the_lower_column(n_columns: int) -> None:
    rng = np.random.default_rng(3)
    # Few distinct values: every cut goes through a tie; 0.0 and -0.0 are one value.
    scores = rng.integers(0, 4, size=(5, n_columns)).astype(np.float32)
    scores[1] = 1.0
    scores[2, ::3] = -0.0
    scores[2, 1::3] = 0.0
    assert_matches(scores, 50)


@pytest.mark.parametrize("n_columns", [500, 30_000])
def test_minus_inf_nan_and_plus_inf_are_never_taken(n_columns: int) -> None:
    rng = np.random.default_rng(4)
    scores = rng.standard_normal((7, n_columns)).astype(np.float32)
    scores[0] = np.nan  # a NaN row
    scores[1] = -np.inf  # every track known
    scores[2, :-10] = -np.inf  # fewer candidates than k
    scores[3, rng.random(n_columns) < 0.3] = np.nan  # NaN sprinkled through chunks
    scores[4, rng.random(n_columns) < 0.01] = np.inf
    scores[5, rng.random(n_columns) < 0.99] = -np.inf
    scores[6, : n_columns // 2] = np.nan
    assert_matches(scores, 60)
    columns, _, _ = top_sorted(scores, 60)
    assert (columns[0] == -1).all() and (columns[1] == -1).all()
    assert (columns[2] >= 0).sum() == 10


def test_empty_inputs() -> None:
    columns, values, ties = top_sorted(np.zeros((0, 100), dtype=np.float32), 10)
    assert columns.shape == (0, 10) and values.shape == (0, 10) and ties.shape == (0,)
    columns, _, _ = top_sorted(np.zeros((3, 0), dtype=np.float32), 10)
    assert columns.shape == (3, 0)


def test_the_input_is_left_unchanged() -> None:
    scores = np.random.default_rng(5).standard_normal((4, 10_000)).astype(np.float32)
    scores[0, 5] = np.nan
    before = scores.copy()
    top_sorted(scores, 50)
    np.testing.assert_array_equal(scores, before)


def reference_candidates(
    scores: npt.NDArray[np.float32],
    artists: npt.NDArray[np.int64],
    length: int,
    cap: int,
    width: int,
) -> list[list[int]]:
    """Per row: the shortest pool of the widths width, 4 width, ... (full sort) in which
    ``length`` tracks survive the cap without cutting a tie at its lowest score, or that
    holds every finite score."""
    n_columns = scores.shape[1]
    result = []
    for row in scores:
        order, _ = reference_top(row[None, :], n_columns)
        ranked = [int(c) for c in order[0] if c >= 0]
        size = min(n_columns, max(width, length))
        while True:
            pool = ranked[:size]
            seen: dict[int, int] = {}
            usable, last = 0, None
            for position, column in enumerate(pool):
                seen[artists[column]] = seen.get(artists[column], 0) + 1
                if seen[artists[column]] <= cap:
                    usable += 1
                    if usable == length:
                        last = position
                        break
            settled = len(pool) < size or size >= n_columns
            if last is not None and len(pool) == size:
                lowest = row[pool[-1]]
                cut = row[pool[last]] == lowest and (row == lowest).sum() > sum(
                    row[c] == lowest for c in pool
                )
                settled = settled or not cut
            if settled:
                result.append(pool)
                break
            size = min(n_columns, size * 4)
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_candidates_match_the_widening_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_columns = 12_000
    scores = rng.standard_normal((8, n_columns)).astype(np.float32)
    artists = rng.integers(0, 300, size=n_columns).astype(np.int64)
    # One artist owns the best tracks of row 0: the cap forces widening.
    best = np.argsort(-scores[0])[:400]
    artists[best] = 7
    scores[1] = np.round(scores[1])  # wide ties
    scores[2, rng.random(n_columns) < 0.5] = -np.inf
    scores[3, 30:] = -np.inf  # fewer candidates than the length
    scores[4] = np.nan
    candidates, candidate_scores = top_candidates(scores, artists, 50, 2, 100)
    expected = reference_candidates(scores, artists, 50, 2, 100)
    for row, pool in enumerate(expected):
        got = candidates[row][candidates[row] >= 0].tolist()
        assert got == pool, f"row {row}"
        np.testing.assert_array_equal(candidate_scores[row, : len(pool)], scores[row, pool])
        assert np.isneginf(candidate_scores[row, len(pool) :]).all()

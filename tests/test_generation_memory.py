"""Generation's memory: one reused score buffer per run, a block's allocations within
recsys.playlist.block_memory_bytes whatever the number of listeners, and the same
playlists as scoring each block afresh."""

from __future__ import annotations

import tracemalloc

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp

from recsys.als import ALSModel, ALSParams, ColdStartFactors
from recsys.pipeline import PlaylistPipeline
from recsys.playlist import (
    PlaylistRules,
    block_memory_bytes,
    block_size_within,
    generate_playlists,
)

RULES = PlaylistRules(
    length=20,
    max_tracks_per_artist=2,
    diversity=0.2,
    popularity_penalty=0.1,
    pool_factor=4,
    cold_slots=3,
    artist_thumbs_down_limit=2,
)
N_TRACKS = 6000
FACTORS = 16


def world(
    n_users: int, seed: int = 0
) -> tuple[ALSModel, sp.csr_matrix, sp.csr_matrix, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    cold = rng.random(N_TRACKS) < 0.02
    items = rng.standard_normal((N_TRACKS, FACTORS)).astype(np.float32)
    items[cold] = 0.0
    model = ALSModel(
        rng.standard_normal((n_users, FACTORS)).astype(np.float32),
        items,
        np.array([f"u{i}" for i in range(n_users)]),
        np.array([f"t{i}" for i in range(N_TRACKS)]),
        ALSParams(factors=FACTORS),
        "test",
        {},
        ColdStartFactors(cold, rng.standard_normal((int(cold.sum()), FACTORS)).astype(np.float32)),
    )
    known = sp.random(n_users, N_TRACKS, density=0.01, format="csr", random_state=seed)
    known.data[:] = 1.0
    down = known.copy()
    down.data = (rng.random(len(down.data)) < 0.3).astype(np.float64)
    down.eliminate_zeros()
    artists = rng.integers(0, 800, size=N_TRACKS).astype(np.int64)
    listeners = np.where(cold, 0, rng.integers(1, 50, size=N_TRACKS)).astype(np.int64)
    return model, known, down, artists, listeners


class ScoreOnly:
    """The same model seen only through ``score``: each block scored into a new array."""

    def __init__(self, model: ALSModel) -> None:
        self.model = model
        self.user_ids, self.track_ids = model.user_ids, model.track_ids

    def score(self, user_rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return self.model.score(user_rows)


def peak_bytes(n_users: int, block_size: int) -> int:
    model, known, down, artists, listeners = world(n_users)
    pipeline = PlaylistPipeline(RULES, model, artists, listeners, block_size)
    rows = np.arange(n_users, dtype=np.int64)
    model.scoring_item_factors  # noqa: B018 - cached before measuring, as in a run
    # One listener first: the compiled loops (recsys/kernels.py) are loaded once per process.
    for _ in pipeline.personal(rows[:1], known, thumbs_down=down):
        pass
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in pipeline.personal(rows, known, thumbs_down=down):
            pass
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_a_block_stays_within_its_bound_whatever_the_listeners() -> None:
    n_cold = int(world(1)[0].cold_start.cold_mask.sum())  # type: ignore[union-attr]
    bound = block_memory_bytes(300, N_TRACKS, RULES.length * RULES.pool_factor, FACTORS, n_cold)
    few, many = peak_bytes(600, 300), peak_bytes(2400, 300)
    assert few <= bound and many <= bound
    # Four times the listeners, the same peak (blocks reuse the buffer).
    assert abs(many - few) < 0.1 * few
    # The score buffer dominates: the bound is not loose by much.
    assert few > 0.5 * bound


def test_block_size_within_inverts_the_bound() -> None:
    pool, n_cold = 200, 100
    for memory in (128 * 2**20, 512 * 2**20, 4 * 2**30):
        size = block_size_within(memory, 100_000, pool, 32, n_cold)
        assert block_memory_bytes(size, 100_000, pool, 32, n_cold) <= memory
        assert block_memory_bytes(size + 1, 100_000, pool, 32, n_cold) > memory
    assert block_size_within(1, 100_000, pool, 32) == 1


def test_the_reused_buffer_gives_the_playlists_of_fresh_scores() -> None:
    model, known, down, artists, listeners = world(700, seed=3)
    rows = np.random.default_rng(1).permutation(700).astype(np.int64)
    reused = PlaylistPipeline(RULES, model, artists, listeners, 256)
    blocks = list(reused.personal(rows, known, thumbs_down=down))
    # The same arguments as the pipeline's, the model seen only through `score`.
    expected = list(
        generate_playlists(
            ScoreOnly(model),  # type: ignore[arg-type]
            known,
            artists,
            RULES,
            user_rows=rows,
            eligible=listeners > 0,
            block_size=256,
            cold_mask=reused.cold_mask,
            item_factors=reused.item_vectors,
            popularity=listeners.astype(np.float64),
            thumbs_down=down,
        )
    )
    assert len(blocks) == len(expected) == 3
    for got, want in zip(blocks, expected, strict=True):
        np.testing.assert_array_equal(got.user_rows, want.user_rows)
        np.testing.assert_array_equal(got.track_columns, want.track_columns)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.is_cold, want.is_cold)
    assert (np.concatenate([b.is_cold for b in blocks]).sum()) > 0


def test_the_memory_bound_shrinks_blocks_and_keeps_the_playlists() -> None:
    model, known, down, artists, listeners = world(700, seed=5)
    rows = np.arange(700, dtype=np.int64)
    free = PlaylistPipeline(RULES, model, artists, listeners, 512)
    n_cold = int(free.cold_mask.sum())  # type: ignore[union-attr]
    pool = RULES.length * RULES.pool_factor
    memory = block_memory_bytes(100, N_TRACKS, pool, FACTORS, n_cold)
    bounded = PlaylistPipeline(RULES, model, artists, listeners, 512, memory_bytes=memory)
    assert free.block_rows == 512
    assert bounded.block_rows == 100
    got = list(bounded.personal(rows, known, thumbs_down=down))
    assert len(got) == 7  # 700 listeners in blocks of 100
    want = np.vstack([b.track_columns for b in free.personal(rows, known, thumbs_down=down)])
    np.testing.assert_array_equal(np.vstack([b.track_columns for b in got]), want)


def test_a_bound_below_one_listener_names_the_setting() -> None:
    model, _, _, artists, listeners = world(10)
    pipeline = PlaylistPipeline(RULES, model, artists, listeners, 512, memory_bytes=1000)
    with pytest.raises(ValueError, match="CRATEDIGGER_GENERATE_MEMORY_MB"):
        _ = pipeline.block_rows

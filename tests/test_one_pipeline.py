"""The gate and ``evaluate`` measure what ships: for the same model and listeners, the
playlists they score are the weekly run's playlists, track for track."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jobs.generation import build_playlists
from jobs.quality import WeekSplit, split_playlists
from jobs.week import PlaylistPolicy, TrainingData
from recsys.als import ALSParams, train_als, with_cold_start
from recsys.contract import ConfidenceParams
from recsys.matrix import InteractionMatrix, PairCounts
from recsys.settings import Settings

N_USERS, N_TRACKS, N_ARTISTS = 300, 400, 60


def _week() -> tuple[TrainingData, np.ndarray, np.ndarray]:
    """A week with thumbs-down, artists, tracks nobody played (with content) and tastes."""
    rng = np.random.default_rng(11)
    taste = rng.integers(0, 4, N_USERS)
    genre = rng.integers(0, 4, N_TRACKS)
    dense = np.zeros((N_USERS, N_TRACKS), dtype=np.float32)
    plays = np.zeros_like(dense)
    for user in range(N_USERS):
        liked = np.flatnonzero((genre == taste[user]) & (np.arange(N_TRACKS) < 360))
        picks = rng.choice(liked, size=12, replace=False)
        plays[user, picks] = rng.integers(1, 9, size=12)
        dense[user, picks] = np.log1p(plays[user, picks]).astype(np.float32)
        dense[user, picks[:2]] = -2.0  # thumbs-down
    user_items = sp.csr_matrix(dense)
    matrix = InteractionMatrix(
        user_items,
        np.array([f"u{i:04d}" for i in range(N_USERS)]),
        np.array([f"t{i:04d}" for i in range(N_TRACKS)]),
    )
    rows, cols = user_items.nonzero()
    pairs = PairCounts(
        matrix.user_ids,
        matrix.track_ids,
        rows.astype(np.int64),
        cols.astype(np.int64),
        completed=plays[rows, cols].astype(np.float64),
        skips=np.zeros(len(rows)),
        thumb=np.where(dense[rows, cols] < 0, -1, 0).astype(np.int8),
        age_days=np.zeros(len(rows)),
    )
    # The counts give back the matrix under the default weights.
    assert np.allclose(pairs.matrix(ConfidenceParams()).user_items.toarray(), dense)
    listeners = np.asarray((user_items > 0).sum(axis=0), dtype=np.int64).ravel()
    known = (user_items != 0).astype(np.float32).tocsr()
    data = TrainingData(
        matrix=matrix,
        pairs=pairs,
        known=known,
        track_artist=(np.arange(N_TRACKS) % N_ARTISTS).astype(np.int64),
        played=user_items.multiply(user_items > 0).tocsr(),
        track_listeners=listeners,
        track_titles=np.array([f"Song {i} — Artist {i % N_ARTISTS}" for i in range(N_TRACKS)]),
        outsider_ids=np.empty(0, dtype=str),
        outsider_known=sp.csr_matrix((0, N_TRACKS), dtype=np.float32),
    )
    content = np.eye(4, dtype=np.float32)[genre] + rng.normal(0, 0.05, (N_TRACKS, 4)).astype(
        np.float32
    )
    return data, content, listeners


def test_the_gate_and_evaluate_score_exactly_the_weekly_runs_playlists() -> None:
    data, content, listeners = _week()
    settings = Settings(generate_block_size=64)  # several blocks
    model = train_als(data.matrix, ALSParams(factors=8, iterations=8))
    model = with_cold_start(model, content, np.ones(N_TRACKS, bool), listeners, 3)
    assert model.base.cold_start is not None and model.base.cold_start.cold_mask.sum() == 40
    rows = np.arange(0, N_USERS, 3, dtype=np.int64)

    weekly = build_playlists(PlaylistPolicy.of(settings), model, data, rows)
    split = WeekSplit(
        user_ids=data.matrix.user_ids,
        track_ids=data.matrix.track_ids,
        train=data.matrix.user_items,
        test=sp.csr_matrix(data.matrix.shape, dtype=np.float32),
        eval_users=rows,
        track_artist=data.track_artist,
        listeners=data.track_listeners,
        pairs=data.pairs,
        description="the whole week",
    )
    measured = split_playlists(PlaylistPolicy.of(settings), model, split)

    published = [[entry.track_id for entry in p.entries] for p in weekly.playlists]
    scored = [[str(model.track_ids[c]) for c in row if c >= 0] for row in measured]
    assert [p.user_id for p in weekly.playlists] == [str(model.user_ids[r]) for r in rows]
    assert scored == published
    # Not a trivial agreement: the shipped rules were at work in both.
    assert weekly.cold_tracks > 0 and all(len(p) == settings.playlist_length for p in published)

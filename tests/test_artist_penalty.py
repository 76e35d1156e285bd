"""Repeated thumbs-down on one artist's tracks keep that artist out of the listener's playlist."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from jobs.generation import build_playlists
from jobs.week import PlaylistPolicy, Storage
from recsys.playlist import PlaylistRules, generate_playlists, mask_disliked_artists
from recsys.settings import Settings
from tests.test_playlist_quality import WEEK, quality_settings, stage_two_groups  # noqa: F401
from tests.worlds import factor_model, train_staged

#: Six tracks of three artists (0, 0, 1, 1, 2, 2).
ARTISTS = np.array([0, 0, 1, 1, 2, 2], dtype=np.int64)


def test_two_thumbs_down_on_an_artist_exclude_all_its_tracks() -> None:
    scores = np.arange(18, dtype=np.float32).reshape(3, 6)
    thumbs_down = sp.csr_matrix(
        np.array(
            [
                [1, 1, 0, 0, 0, 0],  # listener 0: twice artist 0
                [1, 0, 1, 0, 0, 0],  # listener 1: once artist 0, once artist 1
                [0, 0, 1, 1, 1, 1],  # listener 2: twice artist 1 and twice artist 2
            ],
            dtype=np.float32,
        )
    )
    excluded = mask_disliked_artists(scores, thumbs_down, ARTISTS, limit=2)
    assert excluded.tolist() == [1, 0, 2]
    assert np.isneginf(scores[0, :2]).all() and np.isfinite(scores[0, 2:]).all()
    assert np.isfinite(scores[1]).all()
    assert np.isfinite(scores[2, :2]).all() and np.isneginf(scores[2, 2:]).all()


def test_the_limit_counts_thumbs_down_and_is_validated() -> None:
    scores = np.zeros((1, 6), dtype=np.float32)
    down = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0]], dtype=np.float32))
    assert mask_disliked_artists(scores, down, ARTISTS, limit=3).tolist() == [0]
    assert np.isfinite(scores).all()
    with pytest.raises(ValueError, match="limit must be at least 1"):
        mask_disliked_artists(scores, down, ARTISTS, limit=0)
    with pytest.raises(ValueError, match="thumbs_down has shape"):
        mask_disliked_artists(scores, down[:, :3], ARTISTS, limit=2)
    with pytest.raises(ValueError, match="artist_thumbs_down_limit"):
        PlaylistRules(artist_thumbs_down_limit=-1)


def test_generation_leaves_out_the_disliked_artist_only_when_asked() -> None:
    # One listener who likes artist 0 best; they thumbed down tracks 0 and 1 (artist 0),
    # which also makes them known. Artist 0's third track (6) would otherwise lead.
    artists = np.array([0, 0, 1, 1, 2, 2, 0], dtype=np.int64)
    items = np.array([[9.0], [9.0], [2.0], [1.5], [1.0], [0.5], [8.0]], dtype=np.float32)
    scorer = factor_model(
        np.ones((1, 1), np.float32), items, np.array(["u"]), np.array(list("abcdefg"))
    )
    down = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0, 0]], dtype=np.float32))

    def playlist(limit: int) -> list[int]:
        rules = PlaylistRules(length=4, max_tracks_per_artist=2, artist_thumbs_down_limit=limit)
        (block,) = generate_playlists(scorer, down, artists, rules, thumbs_down=down)
        return block.track_columns[0].tolist()

    assert playlist(0) == [6, 2, 3, 4]
    assert playlist(2) == [2, 3, 4, 5]


def _dislike(settings: Settings, user_id: str, track_ids: list[str]) -> None:
    """Turn the listener's rows of ``track_ids`` into thumbs-down (adding missing rows)."""
    folder = Storage.of(settings).paths(WEEK).interactions
    rows = pq.read_table(folder).to_pylist()
    template = next(row for row in rows if row["user_id"] == user_id)
    existing = {(row["user_id"], row["track_id"]): row for row in rows}
    for track_id in track_ids:
        row = existing.get((user_id, track_id))
        if row is None:
            row = {**template, "track_id": track_id, "plays": 0, "completed": 0}
            rows.append(row)
        row.update({"thumb": -1, "confidence": -2.0})
    schema = pq.read_schema(next(folder.iterdir()))
    for old in folder.iterdir():
        old.unlink()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")


def test_the_weekly_playlists_drop_an_artist_after_two_thumbs_down(
    quality_settings: Settings,  # noqa: F811
) -> None:
    world = stage_two_groups(quality_settings)
    user = "auser01"
    week, model = train_staged(quality_settings, WEEK)
    data, personal = week.data, week.personal
    row = data.matrix.user_index([user])
    before = build_playlists(PlaylistPolicy.of(quality_settings), model, data, row).playlists[0]
    target = before.entries[0].track_id
    artist = world.artist_of_track[target]
    others = sorted(t for t, a in world.artist_of_track.items() if a == artist and t != target)[:2]
    _dislike(quality_settings, user, others)

    week, model = train_staged(quality_settings, WEEK)
    data = week.data
    row = data.matrix.user_index([user])
    off = quality_settings.model_copy(update={"artist_thumbs_down_limit": 0})
    kept = [
        e.track_id
        for e in build_playlists(PlaylistPolicy.of(off), model, data, row).playlists[0].entries
    ]
    assert target in kept  # without the rule the artist's last track still makes the list
    on = quality_settings.model_copy(update={"artist_thumbs_down_limit": 2})
    built = build_playlists(PlaylistPolicy.of(on), model, data, personal)
    for playlist in built.playlists:
        tracks = {entry.track_id for entry in playlist.entries}
        known = world.known.get(playlist.user_id, set())
        if playlist.user_id == user:
            known = known | set(others)
            assert not {t for t in tracks if world.artist_of_track[t] == artist}
        # Nothing played or thumbed, in any way, ever comes back.
        assert not tracks & known, playlist.user_id

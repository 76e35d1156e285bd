"""Weekly playlists with cold start, re-ranking, reasons and playlists for new listeners.

A small world with known structure is written as the week's staged aggregates (what the
Spark job leaves behind), and the weekly functions run on it without Spark: two taste groups
whose tracks have content embeddings near their group's centroid, plus brand-new tracks of
each group that nobody has played, plus a listener with no events at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from jobs.generation import build_playlists
from jobs.week import PlaylistPolicy, Storage, TrainingData
from migrations import upgrade
from recsys.als import ALSModel
from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.models import ModelVersion
from recsys.playlist import (
    POPULAR_REASON,
    PlaylistRules,
    generate_playlists,
    mask_known_tracks,
    select_with_artist_cap,
)
from recsys.settings import Settings
from tests.worlds import factor_model, publish_week_playlists, train_staged

WEEK = dt.date(2026, 11, 16)
SEEN = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
NEWBIE = "newbie"


@dataclass
class StagedWorld:
    """What was written, to check the playlists against."""

    group_of_user: dict[str, str] = field(default_factory=dict)
    group_of_track: dict[str, str] = field(default_factory=dict)
    artist_of_track: dict[str, str] = field(default_factory=dict)
    title_of_track: dict[str, str] = field(default_factory=dict)
    new_tracks: set[str] = field(default_factory=set)
    known: dict[str, set[str]] = field(default_factory=dict)
    played: dict[str, set[str]] = field(default_factory=dict)


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path / "part-0.parquet")


def stage_two_groups(
    settings: Settings,
    *,
    seed: int = 0,
    listeners_per_group: int = 40,
    artists_per_group: int = 8,
    tracks_per_artist: int = 3,
    plays_per_listener: int = 8,
    new_tracks_per_group: int = 6,
    dim: int = 16,
) -> StagedWorld:
    """Write the week's aggregates of a two-group world with content embeddings and tags.

    Every listener plays only tracks of their group and thumbs up (without playing) one or
    two more group tracks; some thumb down a track they played, a group track they never
    played, or a brand-new track of their group. Brand-new tracks (three artists per group,
    two tracks each) have embeddings near their group's centroid and no plays.
    """
    rng = np.random.default_rng(seed)
    world = StagedWorld()
    centroids = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T  # two orthonormal rows
    artists, tracks, interactions, users = [], [], [], []
    group_tracks: dict[str, list[str]] = {}
    group_new: dict[str, list[str]] = {}
    for g, group in enumerate(("a", "b")):
        genre = "dreampop" if group == "a" else "doom"
        group_tracks[group], group_new[group] = [], []
        n_artists = artists_per_group + new_tracks_per_group // 2
        for a in range(n_artists):
            artist_id = f"{group}art{a:02d}"
            new = a >= artists_per_group
            artists.append({"artist_id": artist_id, "name": f"Artist {group.upper()}{a}"})
            for t in range(2 if new else tracks_per_artist):
                track_id = f"{group}{'new' if new else 'trk'}{a:02d}{t}"
                title = f"{'New ' if new else ''}Song {group.upper()}{a}.{t}"
                embedding = centroids[g] + 0.15 * rng.standard_normal(dim) / np.sqrt(dim)
                tracks.append(
                    {
                        "track_id": track_id,
                        "title": title,
                        "artist_id": artist_id,
                        "duration_ms": 200_000,
                        "released_at": None,
                        "embedding": embedding.astype(np.float32).tolist(),
                        "tags": [genre, f"{genre}-{t}"],
                    }
                )
                world.group_of_track[track_id] = group
                world.artist_of_track[track_id] = artist_id
                world.title_of_track[track_id] = f"{title} — Artist {group.upper()}{a}"
                (group_new if new else group_tracks)[group].append(track_id)
                if new:
                    world.new_tracks.add(track_id)

    def interaction(user_id: str, track_id: str, plays: int, thumb: int) -> None:
        confidence = -2.0 if thumb == -1 else float(np.log1p(plays)) + (2.0 if thumb == 1 else 0)
        interactions.append(
            {
                "user_id": user_id,
                "track_id": track_id,
                "plays": plays,
                "completed": plays,
                "skips": 0,
                "thumb": thumb,
                "first_event_at": SEEN,
                "last_event_at": SEEN,
                "confidence": confidence,
            }
        )
        world.known.setdefault(user_id, set()).add(track_id)
        if plays > 0:
            world.played.setdefault(user_id, set()).add(track_id)

    for group in ("a", "b"):
        catalog = group_tracks[group]
        for u in range(listeners_per_group):
            user_id = f"{group}user{u:02d}"
            users.append({"user_id": user_id, "display_name": None})
            world.group_of_user[user_id] = group
            picks = rng.choice(len(catalog), size=plays_per_listener + 2, replace=False)
            played, others = picks[:plays_per_listener], picks[plays_per_listener:]
            # A few thumbs-down: played then disliked, disliked unheard, a new track disliked.
            for k, pick in enumerate(played):
                thumb = -1 if k == 0 and u % 4 == 0 else 0
                interaction(user_id, catalog[pick], int(rng.integers(1, 4)), thumb)
            interaction(user_id, catalog[others[0]], 0, -1 if u % 4 == 1 else 1)
            interaction(user_id, catalog[others[1]], 0, 1)
            if u % 3 == 0:
                interaction(user_id, group_new[group][u % len(group_new[group])], 0, -1)
    users.append({"user_id": NEWBIE, "display_name": "New here"})

    root = Storage.of(settings).paths(WEEK).root
    _write(
        root / "artists",
        artists,
        pa.schema([("artist_id", pa.string()), ("name", pa.string())]),
    )
    _write(
        root / "tracks",
        tracks,
        pa.schema(
            [
                ("track_id", pa.string()),
                ("title", pa.string()),
                ("artist_id", pa.string()),
                ("duration_ms", pa.int64()),
                ("released_at", pa.date32()),
                ("embedding", pa.list_(pa.float32())),
                ("tags", pa.list_(pa.string())),
            ]
        ),
    )
    _write(
        root / "users",
        users,
        pa.schema([("user_id", pa.string()), ("display_name", pa.string())]),
    )
    _write(
        root / "interactions",
        interactions,
        pa.schema(
            [
                ("user_id", pa.string()),
                ("track_id", pa.string()),
                ("plays", pa.int32()),
                ("completed", pa.int32()),
                ("skips", pa.int32()),
                ("thumb", pa.int32()),
                ("first_event_at", pa.timestamp("us", tz="UTC")),
                ("last_event_at", pa.timestamp("us", tz="UTC")),
                ("confidence", pa.float64()),
            ]
        ),
    )
    return world


@pytest.fixture
def quality_settings(tmp_path: Path) -> Settings:
    settings = Settings(
        data_dir=tmp_path / "state",
        database_url=f"sqlite:///{tmp_path / 'state.db'}",
        als_factors=2,
        als_iterations=15,
        playlist_length=10,
        max_tracks_per_artist=2,
        cold_slots=3,
        cold_min_plays=5,
    )
    upgrade(settings.database_url)
    return settings


def _trained(settings: Settings) -> tuple[StagedWorld, TrainingData, ALSModel]:
    world = stage_two_groups(settings)
    week, model = train_staged(settings, WEEK)
    return world, week.data, model


def test_new_tracks_enter_their_groups_playlists_within_the_cold_slots(
    quality_settings: Settings,
) -> None:
    world, data, model = _trained(quality_settings)
    cold_start = model.base.cold_start
    assert cold_start is not None
    cold_tracks = set(model.track_ids[cold_start.cold_mask])
    assert world.new_tracks <= cold_tracks

    personal, newcomers = PlaylistPolicy.of(quality_settings).plan(data)
    built = build_playlists(PlaylistPolicy.of(quality_settings), model, data, personal, newcomers)
    playlists = {p.user_id: p for p in built.playlists if p.kind == "personal"}
    assert set(playlists) == set(world.group_of_user)

    with_new = 0
    for user_id, playlist in playlists.items():
        tracks = [entry.track_id for entry in playlist.entries]
        group = world.group_of_user[user_id]
        assert len(tracks) == quality_settings.playlist_length
        assert {world.group_of_track[t] for t in tracks} == {group}, user_id
        cold_in_playlist = [t for t in tracks if t in cold_tracks]
        assert len(cold_in_playlist) <= quality_settings.cold_slots, user_id
        with_new += any(t in world.new_tracks for t in tracks)
    # Brand-new tracks reach (nearly) every listener of their group, and nobody else.
    assert with_new >= 0.9 * len(playlists)
    assert built.cold_tracks == sum(
        t.track_id in cold_tracks for p in playlists.values() for t in p.entries
    )
    assert 0 < built.cold_tracks <= quality_settings.cold_slots * len(playlists)

    # Without cold slots no cold track appears at all.
    no_cold = quality_settings.model_copy(update={"cold_slots": 0})
    plain = build_playlists(PlaylistPolicy.of(no_cold), model, data, personal)
    assert plain.cold_tracks == 0
    assert not any(e.track_id in world.new_tracks for p in plain.playlists for e in p.entries)


def test_nothing_known_repeats_and_every_reason_names_a_played_track(
    quality_settings: Settings,
) -> None:
    settings = quality_settings.model_copy(update={"mmr_diversity": 0.3})
    world, data, model = _trained(settings)
    personal, newcomers = PlaylistPolicy.of(settings).plan(data)
    built = build_playlists(PlaylistPolicy.of(settings), model, data, personal, newcomers)
    played_title_to_track = {title: track for track, title in world.title_of_track.items()}
    named = 0
    for playlist in built.playlists:
        tracks = [entry.track_id for entry in playlist.entries]
        assert len(tracks) == len(set(tracks)) == settings.playlist_length
        assert not world.known.get(playlist.user_id, set()) & set(tracks), playlist.user_id
        per_artist: dict[str, int] = {}
        for track in tracks:
            artist = world.artist_of_track[track]
            per_artist[artist] = per_artist.get(artist, 0) + 1
        assert max(per_artist.values()) <= settings.max_tracks_per_artist
        for entry in playlist.entries:
            assert isinstance(entry.reason, str) and entry.reason.strip(), entry
            for prefix in ("Because you played ", "New track similar to "):
                if entry.reason.startswith(prefix):
                    anchor = played_title_to_track[entry.reason.removeprefix(prefix)]
                    assert anchor in world.played[playlist.user_id], (playlist.user_id, entry)
                    assert anchor != entry.track_id
                    named += 1
            if entry.track_id in world.new_tracks:
                assert entry.reason.startswith("New "), entry
    # In a world this clear-cut most reasons do name a played track.
    assert named >= 0.5 * sum(len(p.entries) for p in built.playlists if p.kind == "personal")


def test_a_listener_without_events_gets_a_popular_playlist(quality_settings: Settings) -> None:
    world, data, model = _trained(quality_settings)
    personal, newcomers = PlaylistPolicy.of(quality_settings).plan(data)
    assert newcomers.tolist() == [NEWBIE]
    built = build_playlists(PlaylistPolicy.of(quality_settings), model, data, personal, newcomers)
    kinds = {p.user_id: p.kind for p in built.playlists}
    assert kinds[NEWBIE] == "popular" and built.popular == 1
    assert {kind for user, kind in kinds.items() if user != NEWBIE} == {"personal"}
    newbie = next(p for p in built.playlists if p.user_id == NEWBIE)
    tracks = [e.track_id for e in newbie.entries]
    assert len(tracks) == len(set(tracks)) == quality_settings.playlist_length
    assert {world.group_of_track[t] for t in tracks} == {"a", "b"}  # varied, not one taste
    assert not set(tracks) & world.new_tracks
    assert all(e.reason == POPULAR_REASON for e in newbie.entries)

    off = quality_settings.model_copy(update={"popular_for_new_listeners": False})
    assert len(PlaylistPolicy.of(off).plan(data)[1]) == 0
    # Listeners below the history floor get the popular playlist, without what they know.
    strict = quality_settings.model_copy(update={"min_user_interactions": 100})
    personal, newcomers = PlaylistPolicy.of(strict).plan(data)
    assert len(personal) == 0 and len(newcomers) == len(world.group_of_user) + 1
    some = newcomers[:5]
    for playlist in build_playlists(
        PlaylistPolicy.of(strict), model, data, personal, some
    ).playlists:
        assert playlist.kind == "popular"
        assert not world.known.get(playlist.user_id, set()) & {e.track_id for e in playlist.entries}


def _reference_top(
    scores: np.ndarray, known: set[int], eligible: np.ndarray, artists: np.ndarray, rules
) -> list[int]:
    """The playlist before re-ranking existed, one listener at a time: unknown eligible
    tracks by descending score (ties: lower column), at most the cap per artist."""
    chosen: list[int] = []
    per_artist: dict[int, int] = {}
    for column in sorted(range(len(scores)), key=lambda c: (-scores[c], c)):
        if column in known or not eligible[column] or not np.isfinite(scores[column]):
            continue
        if per_artist.get(artists[column], 0) >= rules.max_tracks_per_artist:
            continue
        chosen.append(column)
        per_artist[artists[column]] = per_artist.get(artists[column], 0) + 1
        if len(chosen) == rules.length:
            break
    return chosen


def test_without_diversity_penalty_or_cold_slots_the_weekly_playlists_are_unchanged(
    quality_settings: Settings,
) -> None:
    _, data, model = _trained(quality_settings)
    # The shipped defaults re-rank and drop twice-disliked artists: turn all of that off.
    plain = {
        "cold_slots": 0,
        "mmr_diversity": 0.0,
        "popularity_penalty": 0.0,
        "artist_thumbs_down_limit": 0,
    }
    settings = quality_settings.model_copy(update=plain)
    personal, _ = PlaylistPolicy.of(settings).plan(data)
    built = build_playlists(PlaylistPolicy.of(settings), model, data, personal)
    scores = model.score(personal)
    rules = PlaylistRules(settings.playlist_length, settings.max_tracks_per_artist)
    for row, playlist in zip(personal, built.playlists, strict=True):
        expected = _reference_top(
            scores[list(personal).index(row)],
            set(data.known[row].indices),
            data.track_listeners > 0,
            data.track_artist,
            rules,
        )
        assert [e.track_id for e in playlist.entries] == model.track_ids[expected].tolist()


def _random_instance(seed: int, n_users: int = 300, n_tracks: int = 400, factors: int = 6):
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((n_users, factors)).astype(np.float32)
    items = rng.standard_normal((n_tracks, factors)).astype(np.float32)
    artists = rng.integers(0, int(rng.integers(3, 120)), n_tracks).astype(np.int64)
    if seed % 2 == 0:  # one artist's tracks score best for everyone: the cap must bite
        items[artists == artists[0]] += 3 * users.mean(axis=0)
    density = rng.uniform(0.01, 0.4)
    known = sp.random(n_users, n_tracks, density=density, format="csr", random_state=seed)
    known.data[:] = rng.choice([-2.0, 1.0, 3.0], size=known.nnz)  # thumbs-down included
    eligible = rng.random(n_tracks) < 0.85
    cold = ~eligible & (rng.random(n_tracks) < 0.7)
    scorer = factor_model(
        users, items, np.arange(n_users).astype(str), np.arange(n_tracks).astype(str)
    )
    popularity = rng.integers(0, 500, n_tracks).astype(np.float64)
    return rng, scorer, known, artists, eligible, cold, popularity


@pytest.mark.parametrize("seed", range(8))
def test_without_diversity_or_penalty_generation_is_the_artist_capped_top_k(seed: int) -> None:
    rng, scorer, known, artists, eligible, _, _ = _random_instance(seed)
    rules = PlaylistRules(
        length=int(rng.integers(1, 60)),
        max_tracks_per_artist=int(rng.integers(1, 4)),
        pool_factor=int(rng.integers(1, 5)),
    )
    blocks = list(
        generate_playlists(
            scorer, known, artists, rules, eligible=eligible, block_size=int(rng.integers(1, 400))
        )
    )
    columns = np.vstack([b.track_columns for b in blocks])
    scores = scorer.score(np.arange(known.shape[0]))
    mask_known_tracks(scores, known, eligible)
    expected, expected_scores = select_with_artist_cap(scores, artists, rules)
    np.testing.assert_array_equal(columns, expected)
    np.testing.assert_array_equal(np.vstack([b.scores for b in blocks]), expected_scores)
    assert not np.vstack([b.is_cold for b in blocks]).any()
    for row in rng.choice(known.shape[0], 5, replace=False):  # and the slow reference
        reference = _reference_top(
            scorer.score(np.array([row]))[0], set(known[row].indices), eligible, artists, rules
        )
        assert [c for c in columns[row] if c >= 0] == reference


@pytest.mark.parametrize("seed", range(12))
def test_no_known_track_duplicate_or_artist_overflow_for_any_listener(seed: int) -> None:
    rng, scorer, known, artists, eligible, cold, popularity = _random_instance(seed)
    rules = PlaylistRules(
        length=int(rng.integers(5, 60)),
        max_tracks_per_artist=int(rng.integers(1, 4)),
        diversity=float(rng.choice([0.0, 0.3, 0.9])),
        popularity_penalty=float(rng.choice([0.0, 0.5])),
        pool_factor=int(rng.integers(1, 5)),
        cold_slots=int(rng.integers(0, 8)),
        cold_min_score_ratio=float(rng.choice([0.0, 0.5, 2.0])),
    )
    n_users = known.shape[0]
    total_cold = 0
    for block in generate_playlists(
        scorer,
        known,
        artists,
        rules,
        eligible=eligible,
        block_size=int(rng.integers(1, 200)),
        cold_mask=cold,
        item_factors=scorer.item_factors,
        popularity=popularity,
    ):
        for row, columns, is_cold in zip(
            block.user_rows, block.track_columns, block.is_cold, strict=True
        ):
            chosen = columns[columns >= 0]
            assert not set(chosen) & set(known[row].indices), row
            assert len(chosen) == len(set(chosen))
            assert np.all(columns[len(chosen) :] == -1)  # padding only at the end
            assert np.bincount(artists[chosen]).max(initial=0) <= rules.max_tracks_per_artist
            assert np.all(eligible[chosen] | cold[chosen])
            assert np.array_equal(cold[columns[columns >= 0]], is_cold[columns >= 0])
            assert is_cold.sum() <= rules.cold_slots
            total_cold += int(is_cold.sum())
    assert n_users > 0
    if rules.cold_slots and rules.cold_min_score_ratio == 0.0:
        assert total_cold > 0  # a cold pick with a positive score exists for someone


def test_cold_tracks_need_the_listeners_own_share_of_the_weakest_personal_score() -> None:
    # Two listeners on one axis with different scales; tracks 0-3 warm, 4-5 cold.
    users = np.array([[1.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    items = np.array(
        [[1.0, 0.0], [0.9, 0.0], [0.8, 0.0], [0.7, 0.0], [0.5, 0.0], [0.3, 0.0]],
        dtype=np.float32,
    )
    scorer = factor_model(users, items, np.array(["u0", "u1"]), np.arange(6).astype(str))
    known = sp.csr_matrix((2, 6), dtype=np.float32)
    artists = np.arange(6, dtype=np.int64)
    cold = np.array([False] * 4 + [True] * 2)
    rules = PlaylistRules(length=3, cold_slots=2, cold_min_score_ratio=0.5)
    (block,) = generate_playlists(scorer, known, artists, rules, cold_mask=cold)
    # The weakest personal pick scores 0.8 (x10 for u1): only track 4 (0.5 >= 0.4) passes,
    # for both listeners alike, and it takes the middle slot.
    assert block.track_columns.tolist() == [[0, 4, 1], [0, 4, 1]]
    assert block.is_cold.tolist() == [[False, True, False]] * 2
    strict = PlaylistRules(length=3, cold_slots=2, cold_min_score_ratio=0.7)
    (block,) = generate_playlists(scorer, known, artists, strict, cold_mask=cold)
    assert block.track_columns.tolist() == [[0, 1, 2], [0, 1, 2]]
    (block,) = generate_playlists(
        scorer, known, artists, PlaylistRules(length=3, cold_slots=0), cold_mask=cold
    )
    assert block.track_columns.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_diversity_spreads_a_playlist_over_more_styles() -> None:
    rng = np.random.default_rng(5)
    n_tracks, styles = 120, 6  # 20 tracks a style: the pool of 4 x 12 holds every style
    style = rng.integers(0, styles, n_tracks)
    centroids = np.eye(styles, dtype=np.float32)
    items = centroids[style] + 0.1 * rng.standard_normal((n_tracks, styles)).astype(np.float32)
    # Listeners love style 0 and like every other style a bit.
    users = np.full((50, styles), 0.3, dtype=np.float32)
    users[:, 0] = 1.0
    users += 0.05 * rng.standard_normal(users.shape).astype(np.float32)
    scorer = factor_model(users, items, np.arange(50).astype(str), np.arange(n_tracks).astype(str))
    known = sp.csr_matrix((50, n_tracks), dtype=np.float32)
    artists = np.arange(n_tracks, dtype=np.int64)

    def styles_per_playlist(diversity: float) -> float:
        rules = PlaylistRules(length=12, diversity=diversity)
        (block,) = generate_playlists(scorer, known, artists, rules, item_factors=items)
        return float(np.mean([len(set(style[row])) for row in block.track_columns]))

    assert styles_per_playlist(0.0) == 1.0
    assert styles_per_playlist(0.7) >= 4.0


def test_the_page_says_which_kind_of_playlist_and_shows_reasons(
    quality_settings: Settings,
) -> None:
    from recsys.db.tokens import create_token
    from webapp import create_app

    engine = make_engine(quality_settings.database_url)
    with make_session_factory(engine).begin() as session:
        repository.upsert_artists(session, [{"artist_id": "ar", "name": "Artist"}])
        repository.upsert_tracks(
            session,
            [
                {"track_id": f"t{i}", "title": f"Song {i}", "artist_id": "ar", "duration_ms": 1}
                for i in range(3)
            ],
        )
        repository.upsert_users(
            session,
            [{"user_id": "fan", "display_name": None}, {"user_id": NEWBIE, "display_name": None}],
        )
        repository.save_model_version(
            session,
            ModelVersion(
                version="v1",
                week_start=WEEK,
                fingerprint="f",
                artifact_path="/m",
                params={},
                n_users=1,
                n_tracks=3,
                n_interactions=1,
                train_seconds=0.1,
            ),
        )
        publish_week_playlists(
            session,
            WEEK,
            "v1",
            [
                repository.NewPlaylist(
                    "fan",
                    [
                        repository.PlaylistEntry("t1", 0.9, "Because you played Song 0 — Artist"),
                        repository.PlaylistEntry("t2", 0.8, "New release picked for your taste"),
                    ],
                ),
                repository.NewPlaylist(
                    NEWBIE, [repository.PlaylistEntry("t0", 1.0, POPULAR_REASON)], kind="popular"
                ),
            ],
        )
        _, operator = create_token(session, operator=True)
    engine.dispose()
    app = create_app({"TESTING": True}, settings=quality_settings)
    client = app.test_client()
    signin = client.get("/signin").get_data(as_text=True)
    csrf = signin.split('name="csrf_token" value="')[1].split('"')[0]
    client.post("/signin", data={"token": operator, "csrf_token": csrf})
    fan = client.get("/users/fan").get_data(as_text=True)
    assert "<h1>Discoveries for fan</h1>" in fan and "Popular picks" not in fan
    assert "Because you played Song 0 — Artist" in fan
    assert "New release picked for your taste" in fan
    newbie_page = client.get(f"/users/{NEWBIE}").get_data(as_text=True)
    assert f"<h1>Popular picks for {NEWBIE}</h1>" in newbie_page
    assert "Play a few tracks" in newbie_page and "Discoveries for" not in newbie_page
    document = client.get(
        f"/api/v1/users/{NEWBIE}/playlists/latest",
        headers={"Authorization": f"Bearer {operator}"},
    ).get_json()
    assert document["kind"] == "popular"
    assert document["tracks"][0]["reason"] == POPULAR_REASON
    app.extensions["cratedigger"]["engine"].dispose()


def test_the_new_settings_come_from_the_environment_with_bounds(monkeypatch) -> None:
    from recsys.settings import ConfigError, load_settings

    monkeypatch.setenv("CRATEDIGGER_COLD_SLOTS", "0")
    monkeypatch.setenv("CRATEDIGGER_MMR_DIVERSITY", "0.25")
    monkeypatch.setenv("CRATEDIGGER_POPULAR_FOR_NEW_LISTENERS", "false")
    settings = load_settings()
    assert settings.cold_slots == 0 and settings.mmr_diversity == 0.25
    assert settings.popular_for_new_listeners is False
    monkeypatch.setenv("CRATEDIGGER_MMR_DIVERSITY", "1.5")
    with pytest.raises(ConfigError, match="CRATEDIGGER_MMR_DIVERSITY"):
        load_settings()
    monkeypatch.delenv("CRATEDIGGER_MMR_DIVERSITY")
    monkeypatch.setenv("CRATEDIGGER_COLD_MIN_SCORE_RATIO", "-1")
    with pytest.raises(ConfigError, match="CRATEDIGGER_COLD_MIN_SCORE_RATIO"):
        load_settings()
    # Every setting is documented in the README's configuration table.
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert [
        name for name in Settings.model_fields if f"| `CRATEDIGGER_{name.upper()}` |" not in readme
    ] == []


def test_equal_scores_go_to_the_lower_column_even_at_the_edge_of_the_pool() -> None:
    # 100 top tracks of one artist at random columns, the other 400 tied: the cap leaves two
    # top tracks, so the playlist reaches into the tie, which the first pool of 160 cuts
    # through (which tied tracks argpartition keeps is arbitrary; the playlist must not be).
    rng = np.random.default_rng(0)
    scores = np.zeros((4, 500), dtype=np.float32)
    artists = np.tile(np.arange(1, 501, dtype=np.int64), (4, 1))
    for row, row_artists in zip(scores, artists, strict=True):
        top = rng.choice(500, 100, replace=False)
        row[top] = 1.0
        row_artists[top] = 0
    for row, row_artists in zip(scores, artists, strict=True):
        columns, _ = select_with_artist_cap(row[None, :], row_artists, PlaylistRules(length=20))
        expected = [*np.flatnonzero(row == 1.0)[:2], *np.flatnonzero(row == 0.0)[:18]]
        assert columns[0].tolist() == expected

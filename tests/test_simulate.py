"""Tests for the listening-world simulator and the HetRec converter."""

from __future__ import annotations

import datetime as dt
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lab.simulate import SimulationSummary, simulate_world
from recsys.contract import (
    ARTIST_COLUMNS,
    EARLIEST_EVENT,
    MAX_MS_PLAYED,
    PLAY_COLUMNS,
    THUMB_COLUMNS,
    TRACK_COLUMNS,
    TRACK_OPTIONAL_COLUMNS,
    USER_COLUMNS,
)

END = dt.datetime(2024, 6, 3, tzinfo=dt.UTC)
SMALL = {
    "users": 300,
    "tracks": 2000,
    "seed": 7,
    "end": END,
    "weeks": 4,
    "plays_per_user": 40.0,
    "chunk_users": 100,
    "corrupt_fraction": 0.002,
}

TS = pa.timestamp("us", tz="UTC")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulationSummary, dict]:
    out = tmp_path_factory.mktemp("world") / "data"
    summary = simulate_world(out, **SMALL)
    frames = {
        "artists": pq.read_table(out / "catalog" / "artists.parquet").to_pandas(),
        "tracks": pq.read_table(out / "catalog" / "tracks.parquet").to_pandas(),
        "users": pq.read_table(out / "catalog" / "users.parquet").to_pandas(),
        "plays": pq.read_table(out / "events" / "plays").to_pandas(),
        "thumbs": pq.read_table(out / "events" / "thumbs").to_pandas(),
    }
    return summary, frames


def _bad_play_masks(plays: pd.DataFrame, catalog: set[str]) -> dict[str, pd.Series]:
    return {
        "unknown_track": ~plays["track_id"].isin(catalog),
        "negative_ms_played": plays["ms_played"] < 0,
        "ms_played_over_24h": plays["ms_played"] > MAX_MS_PLAYED,
        "played_after_end": plays["played_at"] >= END,
        "played_in_1999": plays["played_at"] < EARLIEST_EVENT,
        "duplicate": plays.duplicated(keep="first"),
    }


# ----------------------------------------------------------------------------- determinism


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    args = {**SMALL, "users": 120, "tracks": 500, "chunk_users": 50}
    simulate_world(tmp_path / "a", **args)
    simulate_world(tmp_path / "b", **args)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert len(a) == 3 + 2 * 3
    for name in a:
        assert a[name] == b[name], name


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    args = {**SMALL, "users": 60, "tracks": 300}
    simulate_world(tmp_path / "a", **args)
    simulate_world(tmp_path / "b", **{**args, "seed": args["seed"] + 1})
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a["events/plays/part-00000.parquet"] != b["events/plays/part-00000.parquet"]
    assert a["catalog/tracks.parquet"] != b["catalog/tracks.parquet"]


# ----------------------------------------------------------------------------- schemas


def test_schemas_match_the_contract(world: tuple[SimulationSummary, dict]) -> None:
    summary, _ = world
    root = summary.out_dir
    artists = pq.read_schema(root / "catalog" / "artists.parquet")
    assert tuple(artists.names) == ARTIST_COLUMNS
    assert artists.types == [pa.string(), pa.string()]

    users = pq.read_schema(root / "catalog" / "users.parquet")
    assert tuple(users.names[:1]) == USER_COLUMNS
    assert users.names == ["user_id", "display_name"]

    tracks = pq.read_schema(root / "catalog" / "tracks.parquet")
    simulated = (*TRACK_COLUMNS, "released_at", "embedding", "tags", "album")
    assert tuple(tracks.names) == simulated
    assert set(simulated) <= set(TRACK_COLUMNS + TRACK_OPTIONAL_COLUMNS)
    assert tracks.field("album").type == pa.string()
    assert tracks.field("track_id").type == pa.string()
    assert tracks.field("title").type == pa.string()
    assert tracks.field("artist_id").type == pa.string()
    assert tracks.field("duration_ms").type == pa.int64()
    assert tracks.field("released_at").type == pa.date32()
    assert tracks.field("embedding").type == pa.list_(pa.float32(), 32)
    assert tracks.field("tags").type == pa.list_(pa.string())

    for part in sorted((root / "events" / "plays").iterdir()):
        schema = pq.read_schema(part)
        assert tuple(schema.names) == PLAY_COLUMNS
        assert schema.types == [pa.string(), pa.string(), TS, pa.int64()]
    for part in sorted((root / "events" / "thumbs").iterdir()):
        schema = pq.read_schema(part)
        assert tuple(schema.names) == THUMB_COLUMNS
        assert schema.types == [pa.string(), pa.string(), TS, pa.int32()]


def test_ids_and_summary_counts(world: tuple[SimulationSummary, dict]) -> None:
    summary, f = world
    assert summary.users == len(f["users"]) == SMALL["users"]
    assert summary.tracks == len(f["tracks"]) == SMALL["tracks"]
    assert summary.artists == len(f["artists"])
    assert summary.plays == len(f["plays"])
    assert summary.thumbs == len(f["thumbs"])
    assert summary.end == END
    assert summary.start == END - dt.timedelta(weeks=SMALL["weeks"])
    assert f["users"]["user_id"].iloc[42] == "u0000042"
    assert f["tracks"]["track_id"].iloc[42] == "t0000042"
    assert f["artists"]["artist_id"].iloc[42] == "a000042"
    assert f["users"]["user_id"].is_unique and f["tracks"]["track_id"].is_unique
    assert set(f["tracks"]["artist_id"]) <= set(f["artists"]["artist_id"])
    # Artists have several tracks each, about 8 on average.
    assert 4 <= len(f["tracks"]) / len(f["artists"]) <= 12
    # Activity is roughly plays_per_user (the small catalog caps heavy listeners).
    assert 0.6 * SMALL["plays_per_user"] <= summary.plays / summary.users <= 1.3 * 40


def test_streaming_writes_one_part_per_chunk(tmp_path: Path) -> None:
    for users, chunk in ((50, 50), (50, 20), (61, 10)):
        out = tmp_path / f"{users}-{chunk}"
        simulate_world(out, **{**SMALL, "users": users, "tracks": 200, "chunk_users": chunk})
        expected = math.ceil(users / chunk)
        plays = sorted(p.name for p in (out / "events" / "plays").iterdir())
        thumbs = sorted(p.name for p in (out / "events" / "thumbs").iterdir())
        names = [f"part-{i:05d}.parquet" for i in range(expected)]
        assert plays == names
        assert thumbs == names
        assert pq.read_metadata(out / "catalog" / "users.parquet").num_rows == users
        # Each part holds only its own chunk's listeners.
        for i, name in enumerate(names):
            ids = pq.read_table(out / "events" / "plays" / name)["user_id"].to_pylist()
            numbers = {int(u[1:]) for u in ids}
            assert min(numbers) >= i * chunk and max(numbers) < (i + 1) * chunk


# ----------------------------------------------------------------------------- content


def test_events_reference_the_catalog_except_injected_unknown_tracks(
    world: tuple[SimulationSummary, dict],
) -> None:
    _, f = world
    catalog = set(f["tracks"]["track_id"])
    users = set(f["users"]["user_id"])
    plays, thumbs = f["plays"], f["thumbs"]
    outside = plays.loc[~plays["track_id"].isin(catalog), "track_id"]
    assert len(outside) >= 1
    assert outside.str.startswith("t-unknown-").all()
    assert outside.is_unique
    assert thumbs["track_id"].isin(catalog).all()
    assert plays["user_id"].isin(users).all()
    assert thumbs["user_id"].isin(users).all()


def test_new_tracks_have_no_events(world: tuple[SimulationSummary, dict]) -> None:
    summary, f = world
    tracks = f["tracks"]
    released = pd.to_datetime(tracks["released_at"])
    new = tracks.loc[released >= pd.Timestamp(END.date() - dt.timedelta(days=7)), "track_id"]
    assert len(new) == summary.new_tracks
    assert 0.03 * len(tracks) <= len(new) <= 0.07 * len(tracks)
    assert (released < pd.Timestamp(END.date())).all()
    old = released[~tracks["track_id"].isin(new)]
    assert (old < pd.Timestamp(summary.start.date())).all()
    assert not f["plays"]["track_id"].isin(set(new)).any()
    assert not f["thumbs"]["track_id"].isin(set(new)).any()


def test_embeddings_cluster_by_genre(world: tuple[SimulationSummary, dict]) -> None:
    _, f = world
    emb = np.stack(f["tracks"]["embedding"].to_numpy()).astype(np.float64)
    assert emb.shape == (SMALL["tracks"], 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    genre = f["tracks"]["tags"].map(lambda tags: tags[0]).to_numpy()
    assert all(2 <= len(t) <= 3 for t in f["tracks"]["tags"])
    assert len(set(genre)) >= 5
    cos = emb @ emb.T
    same = genre[:, None] == genre[None, :]
    off_diagonal = ~np.eye(len(genre), dtype=bool)
    same_mean = cos[same & off_diagonal].mean()
    other_mean = cos[~same].mean()
    assert same_mean > other_mean + 0.3


def test_listeners_concentrate_on_a_few_moods(world: tuple[SimulationSummary, dict]) -> None:
    # A track's mood is the prefix of its sub-genre tag; listeners draw tracks by
    # taste[genre] x taste[mood] x popularity, so each one's plays gather in few moods,
    # far more than the catalog's own mood shares would give.
    _, f = world
    mood = f["tracks"].set_index("track_id")["tags"].map(lambda tags: tags[1].split(" ")[0])
    plays = f["plays"][f["plays"]["track_id"].isin(mood.index)]
    pairs = plays.drop_duplicates(["user_id", "track_id"])
    pairs = pairs.assign(mood=mood.loc[pairs["track_id"]].to_numpy())
    shares = pairs.groupby("user_id")["mood"].agg(lambda m: m.value_counts(normalize=True).iloc[0])
    busy = pairs.groupby("user_id").size() >= 20
    catalog_top = pairs["mood"].value_counts(normalize=True).iloc[0]
    assert shares[busy].median() > 2 * catalog_top


def test_popularity_is_skewed(world: tuple[SimulationSummary, dict]) -> None:
    _, f = world
    counts = f["plays"]["track_id"].value_counts()
    top = counts.iloc[: len(f["tracks"]) // 100].sum()
    assert top / counts.sum() > 0.1  # the top 1 % of tracks draw over 10 % of plays


def test_injected_corruption_is_counted_exactly(world: tuple[SimulationSummary, dict]) -> None:
    summary, f = world
    catalog = set(f["tracks"]["track_id"])
    masks = _bad_play_masks(f["plays"], catalog)
    for kind, mask in masks.items():
        assert mask.sum() >= 1, kind
    bad_thumbs = ~f["thumbs"]["value"].isin([1, -1])
    assert set(f["thumbs"]["value"].unique()) == {-1, 0, 1, 5}
    assert (f["thumbs"]["value"] == 0).sum() >= 1
    assert (f["thumbs"]["value"] == 5).sum() >= 1
    bad_play_count = sum(int(m.sum()) for m in masks.values())
    # Each injected row has exactly one defect, so the kinds never overlap.
    assert int(pd.concat(masks, axis=1).any(axis=1).sum()) == bad_play_count
    assert bad_play_count + int(bad_thumbs.sum()) == summary.corrupted_rows
    assert summary.corrupted_rows <= 0.01 * (summary.plays + summary.thumbs) + 8


def test_clean_events_fall_in_the_window(world: tuple[SimulationSummary, dict]) -> None:
    summary, f = world
    plays = f["plays"]
    masks = _bad_play_masks(plays, set(f["tracks"]["track_id"]))
    bad = pd.concat(masks, axis=1).any(axis=1)
    clean = plays[~bad]
    assert (clean["played_at"] < END).all()
    assert (clean["played_at"] >= summary.start).all()
    assert (plays["played_at"] >= END).sum() == masks["played_after_end"].sum()
    assert clean["ms_played"].between(1_000, MAX_MS_PLAYED).all()

    thumbs = f["thumbs"]
    assert (thumbs["rated_at"] < END).all()
    good = thumbs[thumbs["value"].isin([1, -1])]
    first = clean.groupby(["user_id", "track_id"])["played_at"].min().rename("first")
    joined = good.join(first, on=["user_id", "track_id"])
    assert joined["first"].notna().all()
    assert (joined["rated_at"] > joined["first"]).all()


def test_listening_behaviour_is_coherent(world: tuple[SimulationSummary, dict]) -> None:
    _, f = world
    plays = f["plays"]
    clean = plays[plays["ms_played"].between(0, MAX_MS_PLAYED)]
    clean = clean.merge(f["tracks"][["track_id", "duration_ms"]], on="track_id")
    completed = clean["ms_played"] >= 0.7 * clean["duration_ms"]
    skipped = clean["ms_played"] <= 25_000
    assert (completed | skipped).all()
    assert 0.5 < completed.mean() < 0.95
    # Some pairs are played more than once.
    assert clean.groupby(["user_id", "track_id"]).size().max() > 1
    rate = completed.groupby([clean["user_id"], clean["track_id"]]).mean().rename("rate")
    good = f["thumbs"][f["thumbs"]["value"].isin([1, -1])]
    rated = good.join(rate, on=["user_id", "track_id"])
    assert len(rated) >= 50
    plus = rated.loc[rated["value"] == 1, "rate"].mean()
    minus = rated.loc[rated["value"] == -1, "rate"].mean()
    assert plus > minus + 0.3
    assert len(good) < 0.1 * len(rate)


def test_no_corruption_when_fraction_is_zero(tmp_path: Path) -> None:
    summary = simulate_world(
        tmp_path / "d", **{**SMALL, "users": 40, "tracks": 200, "corrupt_fraction": 0.0}
    )
    assert summary.corrupted_rows == 0
    plays = pq.read_table(tmp_path / "d" / "events" / "plays").to_pandas()
    tracks = pq.read_table(tmp_path / "d" / "catalog" / "tracks.parquet").to_pandas()
    thumbs = pq.read_table(tmp_path / "d" / "events" / "thumbs").to_pandas()
    for kind, mask in _bad_play_masks(plays, set(tracks["track_id"])).items():
        assert not mask.any(), kind
    assert thumbs["value"].isin([1, -1]).all()


def test_every_kind_is_injected_in_a_tiny_world(tmp_path: Path) -> None:
    # 0.1 % of a few hundred plays rounds to nothing: the last chunk tops every kind up.
    summary = simulate_world(
        tmp_path / "d",
        users=6,
        tracks=10,
        seed=3,
        end=END,
        plays_per_user=60.0,
        chunk_users=4,
        corrupt_fraction=0.001,
    )
    plays = pq.read_table(tmp_path / "d" / "events" / "plays").to_pandas()
    thumbs = pq.read_table(tmp_path / "d" / "events" / "thumbs").to_pandas()
    tracks = pq.read_table(tmp_path / "d" / "catalog" / "tracks.parquet").to_pandas()
    assert len(plays) - summary.corrupted_rows >= 50
    for kind, mask in _bad_play_masks(plays, set(tracks["track_id"])).items():
        assert mask.sum() == 1, kind
    assert sorted(thumbs.loc[~thumbs["value"].isin([1, -1]), "value"]) == [0, 5]
    assert summary.corrupted_rows == 8


def test_progress_bar_and_timezone_normalisation(tmp_path: Path) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    summary = simulate_world(
        tmp_path / "d",
        **{**SMALL, "users": 10, "tracks": 50, "progress": True, "end": END.astimezone(plus_two)},
    )
    assert summary.end == END and summary.end.utcoffset() == dt.timedelta(0)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("override", "argument"),
    [
        ({"users": 0}, "users"),
        ({"users": 2.5}, "users"),
        ({"tracks": 9}, "tracks"),
        ({"seed": -1}, "seed"),
        ({"weeks": 0}, "weeks"),
        ({"corrupt_fraction": -0.1}, "corrupt_fraction"),
        ({"corrupt_fraction": 0.6}, "corrupt_fraction"),
        ({"end": dt.datetime(2024, 6, 3)}, "end"),
        ({"end": dt.date(2024, 6, 3)}, "end"),
        ({"plays_per_user": 0.0}, "plays_per_user"),
        ({"chunk_users": 0}, "chunk_users"),
    ],
)
def test_invalid_arguments_are_rejected(tmp_path: Path, override: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument} "):
        simulate_world(tmp_path / "d", **{**SMALL, **override})
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("existing", ["catalog", "events"])
def test_refuses_an_out_dir_holding_data(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).mkdir()
    (tmp_path / existing / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match=f"already contains {existing}/"):
        simulate_world(tmp_path, **{**SMALL, "users": 5, "tracks": 20})
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_writes_into_an_existing_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    simulate_world(tmp_path, **{**SMALL, "users": 5, "tracks": 20})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "events", "notes.txt"]


# ----------------------------------------------------------------------------- HetRec


def _load_converter():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "convert_hetrec.py"
    spec = importlib.util.spec_from_file_location("convert_hetrec", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_hetrec_fixture(root: Path) -> Path:
    src = root / "hetrec"
    src.mkdir()
    (src / "artists.dat").write_text(
        "id\tname\turl\tpictureURL\n"
        "1\tMALICE MIZER\thttp://x/1\thttp://y/1.jpg\n"
        '2\tDiary "of" Dreams\thttp://x/2\thttp://y/2.jpg\n'
        "3\tBjörk\thttp://x/3\t\n",
        encoding="utf-8",
    )
    # A Latin-1 byte that is not valid UTF-8, as in the real tags.dat.
    (src / "tags.dat").write_bytes(b"tagID\ttagValue\n1\tmetal\n2\tgothic\n3\tj-rock\n4\tm\xe1s\n")
    (src / "user_artists.dat").write_text(
        "userID\tartistID\tweight\n2\t1\t1\n2\t2\t1000\n3\t2\t3\n3\t3\t352698\n",
        encoding="utf-8",
    )
    (src / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n"
        "2\t1\t3\t1\t4\t2009\n"
        "3\t1\t3\t1\t5\t2009\n"
        "3\t1\t1\t1\t5\t2009\n"
        "2\t2\t2\t1\t1\t1956\n"
        "4\t3\t4\t1\t1\t2010\n",
        encoding="utf-8",
    )
    return src


def test_convert_hetrec_fixture(tmp_path: Path) -> None:
    convert = _load_converter()
    src = _write_hetrec_fixture(tmp_path)
    counts = convert.convert_hetrec(src, tmp_path / "out")
    out = tmp_path / "out"
    assert counts["users"] == 3  # 2, 3 and 4 (a tagger without plays)
    assert counts["tracks"] == counts["artists"] == 3
    # ceil(log2(1 + w)) for w = 1, 1000, 3, 352698
    assert counts["plays"] == 1 + 10 + 2 + 19
    assert counts["pairs"] == 4

    tracks = pq.read_table(out / "catalog" / "tracks.parquet").to_pandas()
    assert list(tracks["track_id"]) == ["t1", "t2", "t3"]
    assert list(tracks["artist_id"]) == ["a1", "a2", "a3"]
    assert list(tracks["title"]) == ["MALICE MIZER", 'Diary "of" Dreams', "Björk"]
    assert (tracks["duration_ms"] == 240_000).all()
    assert list(tracks["tags"][0]) == ["j-rock", "metal"]
    assert list(tracks["tags"][2]) == ["m\ufffds"]
    assert "embedding" not in tracks.columns
    users = pq.read_table(out / "catalog" / "users.parquet").to_pandas()
    assert list(users["user_id"]) == ["u2", "u3", "u4"]

    plays_table = pq.read_table(out / "events" / "plays")
    assert tuple(plays_table.schema.names) == PLAY_COLUMNS
    assert plays_table.schema.field("played_at").type == TS
    plays = plays_table.to_pandas()
    assert (plays["ms_played"] == 240_000).all()
    assert not plays.duplicated().any()
    per_pair = plays.groupby(["user_id", "track_id"]).size().to_dict()
    assert per_pair == {("u2", "t1"): 1, ("u2", "t2"): 10, ("u3", "t2"): 2, ("u3", "t3"): 19}
    days = plays.groupby(["user_id", "track_id"])["played_at"].agg(["min", "max"])
    assert (days["min"].dt.date == days["max"].dt.date).all()
    assert days.loc[("u2", "t1"), "min"].date() == dt.date(2009, 4, 1)
    assert days.loc[("u2", "t2"), "min"].date() == dt.date(2005, 1, 1)  # 1956 clamped
    for pair in (("u3", "t2"), ("u3", "t3")):
        assert dt.date(2005, 8, 1) <= days.loc[pair, "min"].date() < dt.date(2011, 5, 1)

    thumbs = pq.read_table(out / "events" / "thumbs")
    assert thumbs.num_rows == 0
    assert tuple(thumbs.schema.names) == THUMB_COLUMNS

    # Deterministic, and refuses to overwrite or to write into the repository.
    again = convert.convert_hetrec(src, tmp_path / "again")
    assert again["plays"] == counts["plays"]
    assert _files(out) == _files(tmp_path / "again")
    with pytest.raises(ValueError, match="already contains"):
        convert.convert_hetrec(src, out)
    with pytest.raises(ValueError, match="repository"):
        convert.convert_hetrec(src, Path(convert.__file__).resolve().parent / "hetrec-out")

"""End to end: data directory -> Spark -> ALS -> playlists in the database -> API."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from jobs.week import Storage
from jobs.weekly import run_in_process
from migrations import upgrade
from recsys.contract import week_start_of
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.models import Playlist, PlaylistTrack, Track
from recsys.settings import Settings
from tests.worlds import WEEK, World


def _playlists(settings: Settings) -> dict[str, list[str]]:
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        rows = session.execute(
            select(Playlist.user_id, PlaylistTrack.track_id)
            .join(PlaylistTrack, PlaylistTrack.playlist_id == Playlist.id)
            .where(Playlist.week_start == WEEK)
            .order_by(Playlist.user_id, PlaylistTrack.position)
        ).all()
    engine.dispose()
    result: dict[str, list[str]] = {}
    for user_id, track_id in rows:
        result.setdefault(user_id, []).append(track_id)
    return result


@pytest.mark.spark
def test_each_group_gets_only_its_own_tracks_and_reruns_replace(
    spark, tmp_path: Path, settings: Settings, two_groups: World
) -> None:
    data = two_groups.write(tmp_path / "world")
    settings = settings.model_copy(
        update={"playlist_length": 6, "max_tracks_per_artist": 2, "als_factors": 2}
    )
    upgrade(settings.database_url)
    report = run_in_process(settings, data, WEEK)
    playlists = _playlists(settings)

    assert report.playlists == len(two_groups.group_of_user) == len(playlists)
    heard: dict[str, set[str]] = {}
    for play in two_groups.plays:
        heard.setdefault(play["user_id"], set()).add(play["track_id"])
    artist_of = {t["track_id"]: t["artist_id"] for t in two_groups.tracks}
    for user_id, tracks in playlists.items():
        assert len(tracks) == 6
        group = two_groups.group_of_user[user_id]
        assert {two_groups.group_of_track[t] for t in tracks} == {group}, user_id
        assert not heard[user_id] & set(tracks)
        per_artist: dict[str, int] = {}
        for track in tracks:
            per_artist[artist_of[track]] = per_artist.get(artist_of[track], 0) + 1
        assert max(per_artist.values()) <= 2

    # The same week again replaces, never duplicates.
    run_in_process(settings, data, WEEK)
    assert _playlists(settings) == playlists
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Playlist)) == len(playlists)
        assert session.scalar(select(func.count()).select_from(PlaylistTrack)) == 6 * len(playlists)
        assert session.scalar(select(func.count()).select_from(Track)) == len(two_groups.tracks)
    engine.dispose()


@pytest.mark.spark
def test_run_week_command_on_a_simulated_world(spark, tmp_path: Path, monkeypatch) -> None:
    from cli.main import cli

    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CRATEDIGGER_SPARK_MASTER", "local[2]")
    monkeypatch.setenv("CRATEDIGGER_SPARK_SHUFFLE_PARTITIONS", "2")
    monkeypatch.setenv("CRATEDIGGER_ALS_ITERATIONS", "5")
    # The gate has its own tests (test_celery.py); here a small world must always publish.
    monkeypatch.setenv("CRATEDIGGER_GATE_MIN_VS_POPULAR", "0")
    monkeypatch.setenv("CRATEDIGGER_GATE_MIN_VS_PREVIOUS", "0")
    runner = CliRunner()
    world = tmp_path / "world"
    result = runner.invoke(
        cli,
        [
            "simulate",
            "--users",
            "120",
            "--tracks",
            "1500",
            "--seed",
            "3",
            "--end",
            WEEK.isoformat(),
            "--out",
            str(world),
        ],
    )
    assert result.exit_code == 0, result.output
    # One more listener in the catalog who has not played anything yet.
    users = pq.read_table(world / "catalog" / "users.parquet")
    newcomer = pa.Table.from_pylist(
        [{"user_id": "u9999999", "display_name": "Just arrived"}], schema=users.schema
    )
    pq.write_table(pa.concat_tables([users, newcomer]), world / "catalog" / "users.parquet")
    result = runner.invoke(cli, ["run-week", "--data", str(world), "--week", WEEK.isoformat()])
    assert result.exit_code == 0, result.output
    assert "121 playlists" in result.output
    assert "unknown_track=" in result.output  # the simulator's bad rows were quarantined

    from recsys.db.tokens import create_token
    from recsys.settings import load_settings
    from webapp import create_app

    app = create_app({"TESTING": True})
    with make_session_factory(app.extensions["cratedigger"]["engine"]).begin() as session:
        operator = {"Authorization": f"Bearer {create_token(session, operator=True)[1]}"}
        listener = {"Authorization": f"Bearer {create_token(session, user_id='u0000000')[1]}"}
    client = app.test_client()
    catalog = set(
        pq.read_table(world / "catalog" / "tracks.parquet").column("track_id").to_pylist()
    )
    played = set(
        pq.read_table(world / "events" / "plays", columns=["track_id"])
        .column("track_id")
        .to_pylist()
    )
    document = client.get("/api/v1/users/u0000000/playlists/latest", headers=listener).get_json()
    assert document["week_start"] == WEEK.isoformat()
    assert document["kind"] == "personal"
    assert len(document["tracks"]) == 50
    assert {t["track_id"] for t in document["tracks"]} <= catalog
    # Every track says why it is there; brand-new tracks nobody played reach playlists.
    new_tracks = 0
    for user in range(120):
        path = f"/api/v1/users/u{user:07d}/playlists/latest"
        tracks = client.get(path, headers=operator).get_json()["tracks"]
        assert all(isinstance(t["reason"], str) and t["reason"] for t in tracks)
        new_tracks += sum(t["track_id"] not in played for t in tracks)
    assert 0 < new_tracks <= 5 * 120
    document = client.get("/api/v1/users/u9999999/playlists/latest", headers=operator).get_json()
    assert document["kind"] == "popular" and len(document["tracks"]) == 50

    # Thumbs given through the API flow into the next weekly run as thumb events.
    first = client.get("/api/v1/users/u0000000/playlists/latest", headers=listener).get_json()
    disliked, liked = first["tracks"][0]["track_id"], first["tracks"][1]["track_id"]
    for track_id, value in ((disliked, "down"), (liked, "up")):
        response = client.post(
            "/api/v1/users/u0000000/feedback",
            headers=listener,
            json={"track_id": track_id, "value": value},
        )
        assert response.status_code == 201
    next_week = week_start_of(dt.datetime.now(dt.UTC)) + dt.timedelta(days=7)
    result = runner.invoke(cli, ["run-week", "--data", str(world), "--week", next_week.isoformat()])
    assert result.exit_code == 0, result.output
    settings = load_settings()
    interactions = pq.read_table(
        Storage.of(settings).paths(next_week).interactions,
        filters=[("user_id", "=", "u0000000")],
    ).to_pylist()
    thumbs = {row["track_id"]: row["thumb"] for row in interactions}
    assert thumbs[disliked] == -1 and thumbs[liked] == 1
    again = client.get("/api/v1/users/u0000000/playlists/latest", headers=listener).get_json()
    assert again["week_start"] == next_week.isoformat()
    new_ids = {t["track_id"] for t in again["tracks"]}
    assert disliked not in new_ids and liked not in new_ids  # both are known now

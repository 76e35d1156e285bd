"""The README's "Running on a cluster" sequence, run as its commands: the web app's thumbs
exported, ``spark-submit jobs/aggregate.py`` (on a Spark whose default file system is HDFS,
as on Dataproc and EMR), then ``cratedigger train`` and ``cratedigger generate``, against
PostgreSQL, for two weeks in a row with thumbs given through the API in between."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from recsys.contract import week_start_of
from recsys.db.models import Playlist, PlaylistTrack, WeekPublication
from recsys.settings import Settings
from tests.conftest import unavailable

pytestmark = [pytest.mark.spark, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Thumbs given this week count from next week's aggregation on: the test's weeks follow the
#: clock, so that the API records them (at the present time) before the second cut-off.
THIS_WEEK = week_start_of(dt.datetime.now(dt.UTC))
NEXT_WEEK = THIS_WEEK + dt.timedelta(days=7)


def _spark_submit() -> str:
    import pyspark

    found = shutil.which("spark-submit", path=str(BIN))
    return found or str(Path(pyspark.__file__).parent / "bin" / "spark-submit")


class Cluster:
    """One deployment's state directory and database, and the README's commands on them."""

    def __init__(self, tmp_path: Path, database_url: str, world: Path) -> None:
        self.state = tmp_path / "state"
        self.world = world
        self.env = {
            **os.environ,
            "CRATEDIGGER_DATA_DIR": str(self.state),
            "CRATEDIGGER_DATABASE_URL": database_url,
            "CRATEDIGGER_ALS_FACTORS": "16",
            "CRATEDIGGER_ALS_ITERATIONS": "5",
            "CRATEDIGGER_SPARK_SHUFFLE_PARTITIONS": "2",
            # A world this small is popularity-heavy: the gate runs, and lets it through.
            "CRATEDIGGER_GATE_MIN_VS_POPULAR": "0",
            "CRATEDIGGER_GATE_MIN_VS_PREVIOUS": "0",
            "PYSPARK_PYTHON": sys.executable,
        }
        self.log: list[str] = []

    def run(self, *command: str) -> str:
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=900, check=False
        )
        self.log.append(f"$ {' '.join(command)}\n{result.stdout}{result.stderr[-4000:]}")
        assert result.returncode == 0, "\n".join(self.log)
        return result.stdout

    def cratedigger(self, *arguments: str) -> str:
        return self.run(str(BIN / "cratedigger"), *arguments)

    def week(self, week: dt.date, name: str) -> Path:
        """The README's sequence for one week; returns the aggregation's folder."""
        feedback = self.state / "feedback" / f"week={week}" / name
        aggregates = self.state / "aggregates" / f"week={week}" / name
        self.cratedigger("export-feedback", "--week", str(week), "--out", str(feedback))
        self.run(
            _spark_submit(),
            *("--master", "local[2]"),
            # The cluster's default file system is HDFS (nothing listens there): the job
            # must read and write the mounted paths it is given, not HDFS paths of that name.
            *("--conf", "spark.hadoop.fs.defaultFS=hdfs://127.0.0.1:1"),
            *("--conf", "spark.hadoop.ipc.client.connect.max.retries=0"),
            str(ROOT / "jobs" / "aggregate.py"),
            *("--data", str(self.world), "--out", str(aggregates)),
            *("--quarantine", str(self.state / "quarantine" / f"week={week}" / name)),
            *("--cutoff", f"{week}T00:00:00Z", "--feedback-thumbs", str(feedback)),
        )
        self.cratedigger("train", "--week", str(week))
        self.cratedigger("generate", "--week", str(week))
        return aggregates


def _world(out: Path) -> Path:
    from lab.simulate import simulate_world

    simulate_world(
        out,
        users=40,
        tracks=600,
        seed=11,
        end=dt.datetime.combine(NEXT_WEEK, dt.time(), tzinfo=dt.UTC),
        corrupt_fraction=0.0,
    )
    return out


def _api(app: Any, token: str, method: str, path: str, **kwargs: Any) -> Any:
    response = app.test_client().open(
        "/api/v1" + path, method=method, headers={"Authorization": f"Bearer {token}"}, **kwargs
    )
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    return response.get_json()


def test_the_readmes_cluster_sequence_publishes_playlists_that_honour_web_thumbs(
    tmp_path: Path, postgres_url: str
) -> None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        unavailable("Java is not installed (spark-submit needs Java 17)")
    from recsys.db.engine import make_engine, make_session_factory
    from recsys.db.tokens import create_token
    from webapp import create_app

    world = _world(tmp_path / "world")
    cluster = Cluster(tmp_path, postgres_url, world)
    cluster.cratedigger("db", "upgrade")
    cluster.week(THIS_WEEK, "spark-1")

    settings = Settings(data_dir=cluster.state, database_url=postgres_url)
    app = create_app({"TESTING": True}, settings=settings)
    engine = make_engine(postgres_url)
    try:
        plays = pq.read_table(world / "events" / "plays")
        thumbs = pq.read_table(world / "events" / "thumbs")
        cutoff = dt.datetime.combine(NEXT_WEEK, dt.time(), tzinfo=dt.UTC)
        heard = {
            (row["user_id"], row["track_id"])
            for table, at in ((plays, "played_at"), (thumbs, "rated_at"))
            for row in table.filter(pc.less(table[at], cutoff)).to_pylist()
        }
        with_history = sorted({user for user, _ in heard})
        with make_session_factory(engine).begin() as session:
            _, operator = create_token(session, operator=True, label="test")
            listeners = {u: create_token(session, user_id=u)[1] for u in with_history[:3]}

        # Each of three listeners thumbs down, through the API, the best track of this
        # week's playlist that they never heard before next week's cut-off.
        thumbed: dict[str, str] = {}
        for user, token in listeners.items():
            playlist = _api(app, operator, "GET", f"/users/{user}/playlists/{THIS_WEEK}")
            track = next(
                t["track_id"] for t in playlist["tracks"] if (user, t["track_id"]) not in heard
            )
            _api(
                app,
                token,
                "POST",
                f"/users/{user}/feedback",
                json={"track_id": track, "value": "down"},
            )
            thumbed[user] = track

        aggregation = cluster.week(NEXT_WEEK, "spark-2")

        # The thumbs reached the aggregation...
        interactions = pq.read_table(aggregation / "interactions").to_pylist()
        thumb_of = {(r["user_id"], r["track_id"]): r["thumb"] for r in interactions}
        assert {user: thumb_of.get((user, track)) for user, track in thumbed.items()} == {
            user: -1 for user in thumbed
        }

        # ...and readers see next week's playlist of every listener with history, of
        # catalog tracks only, without the track each of them thumbed down.
        catalog = set(pq.read_table(world / "catalog" / "tracks.parquet")["track_id"].to_pylist())
        served = {
            user: _api(app, operator, "GET", f"/users/{user}/playlists/{NEXT_WEEK}")
            for user in with_history
        }
        assert [user for user, p in served.items() if not p["tracks"]] == []
        # A thumbed-down track is hidden from a served playlist: none may have been stored.
        assert {user: p["removed"] for user, p in served.items() if p["removed"]} == {}
        served_tracks = {t["track_id"] for p in served.values() for t in p["tracks"]}
        assert served_tracks <= catalog
        with engine.connect() as connection:
            stored = connection.execute(
                select(Playlist.user_id, PlaylistTrack.track_id)
                .join(PlaylistTrack, PlaylistTrack.playlist_id == Playlist.id)
                .join(WeekPublication, WeekPublication.weekly_run_id == Playlist.weekly_run_id)
                .where(WeekPublication.week_start == NEXT_WEEK)
            ).all()
        published = {user for user, _ in stored}
        assert set(with_history) <= published
        assert {track for _, track in stored} <= catalog
        assert [(u, t) for u, t in stored if thumbed.get(u) == t] == []
    finally:
        app.extensions["cratedigger"]["cache"].close()
        app.extensions["cratedigger"]["engine"].dispose()
        engine.dispose()

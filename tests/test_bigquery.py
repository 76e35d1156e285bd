"""BigQuery in and out with the real google-cloud-bigquery client against a local emulator
(bqemulator: BigQuery's REST API on DuckDB, started by :mod:`tests.bigquery_emulator`).

What the emulator does not do (../shared/TESTING.md): dry runs report 0 bytes and
``maximum_bytes_billed`` is not enforced, so the cost guard is checked on the job
configuration the client sends."""

from __future__ import annotations

import datetime as dt
import io
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from sqlalchemy import create_engine, select

from recsys.settings import Settings
from tests.conftest import unavailable

pytestmark = pytest.mark.bigquery
PROJECT = "cratedigger-test"
WEEK = dt.date(2026, 11, 16)
CUTOFF = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
EARLIEST = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The emulator's endpoint, one server for the session (each test has its dataset)."""
    try:
        import bqemulator  # noqa: F401
        import google.cloud.bigquery  # noqa: F401
    except ImportError as exc:
        unavailable(f"bqemulator or google-cloud-bigquery is not installed: {exc}")
    port = _free_port()
    log = (tmp_path_factory.mktemp("bqemulator") / "emulator.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.bigquery_emulator", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/bigquery/v2/projects/{PROJECT}/datasets"):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                unavailable(f"the BigQuery emulator did not start (log: {log.name})")
            time.sleep(0.2)
    yield endpoint
    server.terminate()
    server.wait(timeout=20)
    log.close()


@pytest.fixture
def bq(emulator: str) -> Iterator[Any]:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=emulator),
    )
    yield client
    client.close()


@pytest.fixture
def dataset(bq: Any) -> str:
    name = f"d_{uuid.uuid4().hex[:10]}"
    bq.create_dataset(name)
    return name


def _settings(tmp_path: Path, endpoint: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "state",
        "database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "spark_master": "local[2]",
        "spark_shuffle_partitions": 2,
        "als_factors": 16,
        "als_iterations": 5,
        "tune_every_weeks": 0,
        "gate_min_vs_popular": 0.0,
        "gate_min_vs_previous": 0.0,
        "earliest_event_at": EARLIEST,
        "bigquery_api_endpoint": endpoint,
        "bigquery_storage_api": False,
        "bigquery_retry_deadline_s": 3.0,
    }
    return Settings(**(values | overrides))


def _field(arrow: pa.Field) -> Any:
    from google.cloud import bigquery

    kind, mode = arrow.type, "NULLABLE"
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        kind, mode = kind.value_type, "REPEATED"
    for test, name in (
        (pa.types.is_string, "STRING"),
        (pa.types.is_integer, "INT64"),
        (pa.types.is_floating, "FLOAT64"),
        (pa.types.is_timestamp, "TIMESTAMP"),
        (pa.types.is_date, "DATE"),
        (pa.types.is_boolean, "BOOL"),
    ):
        if test(kind):
            return bigquery.SchemaField(arrow.name, name, mode=mode)
    raise TypeError(f"no BigQuery type for {arrow}")


def _source(settings: Settings, name: str) -> Any:
    from jobs.bigquery import BigQueryConfig
    from jobs.sources import open_source

    return open_source(name, BigQueryConfig.of(settings))


def _load(bq: Any, dataset: str, table: str, rows: pa.Table, partition: str | None = None) -> None:
    """Load an Arrow table into a new BigQuery table (day partitions on ``partition``)."""
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(
        source_format="PARQUET",
        write_disposition="WRITE_TRUNCATE",
        schema=[_field(f) for f in rows.schema],
    )
    if partition:
        config.time_partitioning = bigquery.TimePartitioning(field=partition)
    rows = rows.cast(  # BigQuery's ARRAY has no fixed size
        pa.schema(
            pa.field(f.name, pa.list_(f.type.value_type))
            if pa.types.is_fixed_size_list(f.type)
            else f
            for f in rows.schema
        )
    )
    buffer = io.BytesIO()
    pq.write_table(rows, buffer)
    buffer.seek(0)
    bq.load_table_from_file(buffer, f"{PROJECT}.{dataset}.{table}", job_config=config).result()


def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _catalog(bq: Any, dataset: str) -> None:
    _load(bq, dataset, "artists", pa.table({"artist_id": ["a1", "a2"], "name": ["One", "Two"]}))
    _load(
        bq,
        dataset,
        "tracks",
        pa.table(
            {
                "track_id": ["t1", "t2", "t3"],
                "title": ["First", "Second", "Third"],
                "artist_id": ["a1", "a2", "a2"],
                "duration_ms": pa.array([200_000, 180_000, 240_000], pa.int64()),
            }
        ),
    )


#: (user_id, track_id, played_at, ms_played, why it is special: None if a plain good row).
PLAYS = [
    ("u1", "t1", "2026-11-10T10:00:00", 200_000, None),
    ("u1", "t2", "2026-11-15T23:59:59", 20_000, None),
    ("u2", "t1", "2026-03-01T08:00:00", 150_000, None),
    ("u2", "t3", "2025-12-31T23:59:59", 240_000, "before the window"),
    ("u1", "t3", "2026-11-16T00:00:00", 240_000, "at the cut-off"),
    ("u2", "t2", "2026-11-20T12:00:00", 100_000, "after the cut-off"),
    ("u3", "t2", "2026-11-12T09:00:00", -5, "ms_played_out_of_range"),
    (None, "t1", "2026-11-12T09:00:00", 1000, "missing_user_id"),
    ("u3", "t'; DROP TABLE plays; --", "2026-11-12T09:00:00", 1000, "invalid_track_id"),
    ("u3", "t404", "2026-11-12T09:00:00", 1000, "unknown_track"),
]
WINDOW = ("before the window", "at the cut-off", "after the cut-off")


def _plays(bq: Any, dataset: str) -> None:
    _load(
        bq,
        dataset,
        "plays",
        pa.table(
            {
                "user_id": pa.array([r[0] for r in PLAYS], pa.string()),
                "track_id": [r[1] for r in PLAYS],
                "played_at": pa.array([_ts(r[2]) for r in PLAYS], pa.timestamp("us", tz="UTC")),
                "ms_played": pa.array([r[3] for r in PLAYS], pa.int64()),
            }
        ),
        partition="played_at",
    )
    _load(
        bq,
        dataset,
        "thumbs",
        pa.table(
            {
                "user_id": ["u1", "u2"],
                "track_id": ["t3", "t2"],
                "rated_at": pa.array(
                    [_ts("2026-11-11T10:00:00"), _ts("2026-11-11T11:00:00")],
                    pa.timestamp("us", tz="UTC"),
                ),
                "value": pa.array([-1, 3], pa.int64()),
            }
        ),
        partition="rated_at",
    )


def test_a_staged_week_holds_the_window_and_every_row_in_it(
    tmp_path: Path, emulator: str, bq: Any, dataset: str
) -> None:

    _catalog(bq, dataset)
    _plays(bq, dataset)
    source = _source(_settings(tmp_path, emulator), f"bigquery://{PROJECT}/{dataset}")
    staged = source.stage(CUTOFF, tmp_path / "staged")
    plays = pq.read_table(next((staged / "events" / "plays").glob("*.parquet"))).to_pylist()
    got = sorted((r["user_id"] or "", r["track_id"], r["played_at"]) for r in plays)
    expected = sorted((r[0] or "", r[1], _ts(r[2])) for r in PLAYS if r[4] not in WINDOW)
    assert got == expected  # nothing outside [earliest, cut-off) was read; the rest all was
    assert pq.read_table(staged / "catalog" / "tracks.parquet").num_rows == 3
    assert pq.read_table(staged / "catalog" / "artists.parquet").num_rows == 2
    names = [p.name for p in (staged / "events" / "plays").iterdir()]
    assert names == [f"bigquery-{PROJECT}.{dataset}.plays.parquet"]


@pytest.mark.spark
def test_rows_breaking_the_contract_are_quarantined_with_their_reason(
    tmp_path: Path, emulator: str, bq: Any, dataset: str, spark: Any
) -> None:
    from jobs.weekly import aggregate
    from migrations import upgrade

    _catalog(bq, dataset)
    _plays(bq, dataset)
    settings = _settings(tmp_path, emulator)
    upgrade(settings.database_url)
    summary = aggregate(settings, f"bigquery://{PROJECT}/{dataset}", WEEK)
    expected_bad = {r[4] for r in PLAYS if r[4] and r[4] not in WINDOW}
    assert summary["quarantined"]["plays"] == {reason: 1 for reason in expected_bad}
    assert summary["quarantined"]["thumbs"] == {"invalid_thumb_value": 1}
    quarantine = tmp_path / "state" / "quarantine" / f"week={WEEK}"
    rows = pa.concat_tables(
        [pq.read_table(p) for p in quarantine.rglob("*.parquet")], promote_options="default"
    ).to_pylist()
    assert {r["reason"] for r in rows} == expected_bad | {"invalid_thumb_value"}
    assert all(f"{dataset}.plays" in r["source_file"] for r in rows if r["kind"] == "plays")
    hostile = next(r for r in rows if r["reason"] == "invalid_track_id")
    assert "DROP TABLE" in hostile["record"]  # kept whole, as data, for the operator
    # Good rows: u1 (t1 completed, t2 a skip), u2 (t1), u1's thumbs-down on t3.
    assert summary["interactions"] == 4
    assert not (tmp_path / "state" / "staging" / f"week={WEEK}").exists() or not any(
        (tmp_path / "state" / "staging" / f"week={WEEK}").iterdir()
    )


def test_a_missing_table_or_column_is_named(
    tmp_path: Path, emulator: str, bq: Any, dataset: str
) -> None:
    from jobs.bigquery import BigQueryError

    settings = _settings(tmp_path, emulator)
    source = _source(settings, f"bigquery://{PROJECT}/{dataset}")
    with pytest.raises(BigQueryError, match=rf"{dataset}\.artists \(artists\) does not exist"):
        source.stage(CUTOFF, tmp_path / "staged")
    _catalog(bq, dataset)
    _load(bq, dataset, "plays", pa.table({"user_id": ["u1"], "track_id": ["t1"]}))
    with pytest.raises(BigQueryError, match=r"plays \(plays\) has no column played_at, ms_played"):
        source.stage(CUTOFF, tmp_path / "staged")


def test_hostile_names_are_refused_before_any_query(tmp_path: Path, emulator: str) -> None:
    from jobs.sources import SourceError

    with pytest.raises(ValidationError, match="bigquery_plays_table"):
        _settings(tmp_path, emulator, bigquery_plays_table="plays` WHERE 1=1; DROP TABLE x; --")
    with pytest.raises(ValidationError, match="bigquery_export_table"):
        _settings(tmp_path, emulator, bigquery_export_table="p.d.t`; DELETE")
    settings = _settings(tmp_path, emulator)
    for name in ("bigquery://Bad_Project/d", "bigquery://proj-1/d`x", "bigquery://p/d/e/f"):
        with pytest.raises(SourceError, match="bigquery://PROJECT/DATASET"):
            _source(settings, name)


def test_the_service_unreachable_is_one_clear_error(tmp_path: Path) -> None:
    from jobs.bigquery import BigQueryError, is_transient

    dead = f"http://127.0.0.1:{_free_port()}"
    source = _source(_settings(tmp_path, dead), f"bigquery://{PROJECT}/listening")
    started = time.monotonic()
    with pytest.raises(BigQueryError, match="BigQuery table artists") as caught:
        source.stage(CUTOFF, tmp_path / "staged")
    assert is_transient(caught.value)
    assert time.monotonic() - started < 60  # bounded by the retry deadline, not 10 minutes


def test_every_job_carries_the_labels_and_the_byte_cap(
    tmp_path: Path, emulator: str, bq: Any, dataset: str
) -> None:
    from jobs.bigquery import BigQueryConfig, BigQuerySource, client

    _catalog(bq, dataset)
    _plays(bq, dataset)
    settings = _settings(
        tmp_path,
        emulator,
        bigquery_labels={"app": "cratedigger", "team": "discovery"},
        bigquery_maximum_bytes_billed=10**9,
    )
    source = BigQuerySource(BigQueryConfig.of(settings), PROJECT, dataset)
    sent: list[Any] = []
    own = client(BigQueryConfig.of(settings), PROJECT)
    original = own.query

    def recording(sql: str, job_config: Any = None, **kwargs: Any) -> Any:
        sent.append(job_config)
        return original(sql, job_config=job_config, **kwargs)

    own.query = recording  # type: ignore[method-assign]
    for query in source.queries(CUTOFF, own):
        source._stage_one(own, query, tmp_path / "staged")
    own.close()
    assert len(sent) == 4
    for config in sent:
        assert config.labels == {"app": "cratedigger", "team": "discovery"}
        assert config.maximum_bytes_billed == 10**9


def test_estimate_prints_each_query_of_the_week(
    tmp_path: Path, emulator: str, bq: Any, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.main import cli

    _catalog(bq, dataset)
    _plays(bq, dataset)
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CRATEDIGGER_BIGQUERY_API_ENDPOINT", emulator)
    monkeypatch.setenv("CRATEDIGGER_BIGQUERY_MAXIMUM_BYTES_BILLED", str(5 * 2**30))
    result = CliRunner().invoke(
        cli,
        ["bigquery", "estimate", "--week", str(WEEK), "--data", f"bigquery://{PROJECT}/{dataset}"],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["artists", "tracks", "plays", "thumbs"]
    assert "cap 5.00 GiB per query" in lines[-1]
    bad = CliRunner().invoke(cli, ["bigquery", "estimate", "--data", "bigquery://x/y"])
    assert bad.exit_code == 2 and "bigquery://PROJECT/DATASET" in bad.output
    assert "Traceback" not in bad.output


def _visible(database_url: str) -> dict[str, list[str]]:
    from recsys.db.models import Playlist, PlaylistTrack, WeekPublication

    engine = create_engine(database_url)
    statement = (
        select(Playlist.user_id, PlaylistTrack.track_id)
        .join(PlaylistTrack, PlaylistTrack.playlist_id == Playlist.id)
        .join(
            WeekPublication,
            (WeekPublication.week_start == Playlist.week_start)
            & (WeekPublication.weekly_run_id == Playlist.weekly_run_id),
        )
        .order_by(Playlist.user_id, PlaylistTrack.position)
    )
    result: dict[str, list[str]] = {}
    with engine.connect() as connection:
        for user_id, track_id in connection.execute(statement):
            result.setdefault(user_id, []).append(track_id)
    engine.dispose()
    return result


def _exported(bq: Any, table: str) -> list[tuple[Any, ...]]:
    rows = bq.query(
        f"SELECT week_start, user_id, position, track_id FROM `{table}` ORDER BY 1, 2, 3"
    ).result()
    return [tuple(row) for row in rows]


@pytest.mark.spark
def test_a_week_from_bigquery_publishes_and_exports_what_its_files_would(
    tmp_path: Path, emulator: str, bq: Any, dataset: str, spark: Any
) -> None:
    """The round trip: a simulated world's files loaded into BigQuery give the same
    published playlists as the files themselves; the export holds them once, however often
    it runs; with BigQuery away the export fails and the week stays published."""
    from cli.main import cli
    from jobs.weekly import export_published, run_in_process
    from lab.simulate import simulate_world
    from recsys.db.models import PlaylistExport

    world = tmp_path / "world"
    simulate_world(world, users=40, tracks=400, seed=5, end=CUTOFF, corrupt_fraction=0.0)
    for name in ("artists", "tracks", "users"):
        _load(bq, dataset, name, pq.read_table(world / "catalog" / f"{name}.parquet"))
    for kind, column in (("plays", "played_at"), ("thumbs", "rated_at")):
        files = sorted((world / "events" / kind).rglob("*.parquet"))
        _load(bq, dataset, kind, pa.concat_tables(pq.read_table(f) for f in files), column)
    export_table = f"{PROJECT}.{dataset}.weekly_playlists"
    common = {"earliest_event_at": dt.datetime(2000, 1, 1, tzinfo=dt.UTC)}
    from_files = _settings(tmp_path / "files", emulator, **common)
    from_bigquery = _settings(
        tmp_path / "bq",
        emulator,
        **common,
        bigquery_users_table="users",
        bigquery_export_table=export_table,
    )
    from migrations import upgrade

    for settings in (from_files, from_bigquery):
        settings.data_dir.mkdir(parents=True)
        upgrade(settings.database_url)
    run_in_process(from_files, world, WEEK, trigger="test")
    report = run_in_process(from_bigquery, f"bigquery://{PROJECT}/{dataset}", WEEK, trigger="test")
    published = _visible(from_bigquery.database_url)
    assert published and published == _visible(from_files.database_url)
    rows = _exported(bq, export_table)
    assert report.export == {"rows": len(rows)}
    assert [(r[1], r[3]) for r in rows] == [(u, t) for u, ts in published.items() for t in ts]

    # BigQuery away: the export fails with the reason, the week stays published.
    down = from_bigquery.model_copy(
        update={"bigquery_api_endpoint": f"http://127.0.0.1:{_free_port()}"}
    )
    outcome = export_published(down, WEEK)
    assert "BigQuery" in outcome["error"]
    assert _visible(from_bigquery.database_url) == published
    engine = create_engine(from_bigquery.database_url)
    with engine.connect() as connection:
        status, attempts = connection.execute(
            select(PlaylistExport.status, PlaylistExport.attempts)
        ).one()
    assert status == "failed" and attempts >= 2

    # Exported again by hand: the week's partition is replaced, never duplicated.
    env = {
        "CRATEDIGGER_DATA_DIR": str(from_bigquery.data_dir),
        "CRATEDIGGER_DATABASE_URL": from_bigquery.database_url,
        "CRATEDIGGER_BIGQUERY_API_ENDPOINT": emulator,
        "CRATEDIGGER_BIGQUERY_EXPORT_TABLE": export_table,
    }
    result = CliRunner().invoke(cli, ["bigquery", "export", "--week", str(WEEK)], env=env)
    assert result.exit_code == 0, result.output
    assert f"exported {len(rows):,} playlist rows" in result.output
    assert _exported(bq, export_table) == rows
    with engine.connect() as connection:
        assert connection.execute(select(PlaylistExport.status)).scalar() == "succeeded"
    engine.dispose()
    status_output = CliRunner().invoke(cli, ["status"], env=env).output
    assert f"exported {len(rows):,} rows" in status_output

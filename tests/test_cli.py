"""The command line: help everywhere, and bad arguments answered with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli

COMMANDS = [
    ["simulate"],
    ["aggregate"],
    ["train"],
    ["generate"],
    ["run-week"],
    ["serve"],
    ["demo"],
    ["db"],
    ["db", "upgrade"],
    ["db", "downgrade"],
    ["db", "current"],
    ["tokens"],
    ["tokens", "create"],
    ["tokens", "list"],
    ["tokens", "revoke"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert len(result.output.splitlines()) > 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["run-week", "--data", "{tmp}", "--week", "2026-11-18"],
            "Monday of that week is 2026-11-16",
        ),
        (["run-week", "--data", "{tmp}", "--week", "soon"], "YYYY-MM-DD"),
        (["run-week", "--data", "{tmp}/missing"], "does not exist"),
        (["run-week", "--data", "{tmp}", "--week", "2026-11-16"], "events/plays"),
        (["simulate", "--users", "0", "--out", "{tmp}/w"], "0 is not in the range"),
        (["simulate", "--users", "many", "--out", "{tmp}/w"], "is not a valid integer"),
        (["generate", "--week", "2026-11-16"], "no model trained"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path: Path, monkeypatch, arguments, message) -> None:
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [a.replace("{tmp}", str(tmp_path)) for a in arguments])
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_configuration_is_reported_not_raised(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CRATEDIGGER_ALS_FACTORS", "lots")
    result = CliRunner().invoke(cli, ["db", "current"])
    assert result.exit_code == 1
    assert "CRATEDIGGER_ALS_FACTORS" in result.output


def test_db_commands_migrate_up_and_down(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    assert "empty" in runner.invoke(cli, ["db", "current"]).output
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    from migrations import head_revision

    head = head_revision()
    assert head is not None and head >= "0002"
    assert runner.invoke(cli, ["db", "current"]).stdout.strip() == head
    assert runner.invoke(cli, ["db", "downgrade", "base"]).exit_code == 0
    assert "empty" in runner.invoke(cli, ["db", "current"]).output


def test_tokens_create_list_revoke(tmp_path: Path, monkeypatch) -> None:
    from recsys.db import repository
    from recsys.db.engine import make_engine, make_session_factory
    from recsys.db.tokens import authenticate

    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'cratedigger.db'}")
    with make_session_factory(engine).begin() as session:
        repository.upsert_users(session, [{"user_id": "u1", "display_name": None}])

    created = runner.invoke(cli, ["tokens", "create", "--user", "u1", "--label", "phone"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("cd_") and len(token) > 40
    operator = runner.invoke(cli, ["tokens", "create", "--operator"]).stdout.strip()
    with make_session_factory(engine)() as session:
        listener = authenticate(session, token)
        assert listener is not None and listener.user_id == "u1" and not listener.is_operator
        principal = authenticate(session, operator)
        assert principal is not None and principal.is_operator
    listing = runner.invoke(cli, ["tokens", "list"]).output
    assert token[:10] in listing and "phone" in listing and token not in listing
    revoked = runner.invoke(cli, ["tokens", "revoke", "1"])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    with make_session_factory(engine)() as session:
        assert authenticate(session, token) is None
    engine.dispose()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["tokens", "create"], "exactly one of --user U and --operator"),
        (["tokens", "create", "--user", "u1", "--operator"], "exactly one of"),
        (["tokens", "create", "--user", "<bad>"], "is not a listener id"),
        (["tokens", "create", "--user", "ghost"], "no listener 'ghost'"),
        (["tokens", "revoke", "99"], "no token #99"),
        (["tokens", "revoke", "x"], "is not a valid integer"),
    ],
)
def test_tokens_bad_arguments(tmp_path: Path, monkeypatch, arguments, message) -> None:
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def _cratedigger(
    arguments: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``cratedigger ARGUMENTS`` in a new process."""
    command = [sys.executable, "-c", "from cli.main import main; main()", *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRATEDIGGER_")}
    env["CRATEDIGGER_DATA_DIR"] = str(tmp_path / "state")
    return env


@pytest.mark.parametrize("command", ["aggregate", "run-week"])
@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([], "events/plays not found: a data directory needs events/plays/"),
        (["plays/"], "holds no file of plays (.parquet, .csv or .jsonl)"),
        (["thumbs/t.csv"], "events/plays not found"),
        (["plays/notes.txt"], "notes.txt: unsupported file type"),
        (["plays/p.csv"], "catalog/tracks.{parquet,csv,jsonl} not found"),
    ],
    ids=["no-events", "empty-plays", "thumbs-only", "unsupported-file", "no-tracks"],
)
def test_a_data_directory_without_events_is_refused_before_spark_and_writes_nothing(
    tmp_path: Path, command: str, events: list[str], message: str
) -> None:
    from tests.worlds import write_rows

    data = tmp_path / "data"
    (data / "catalog").mkdir(parents=True)
    write_rows(data / "catalog" / "artists", [{"artist_id": "a", "name": "A"}], "csv")
    if message != "catalog/tracks.{parquet,csv,jsonl} not found":
        tracks = [{"track_id": "t", "title": "T", "artist_id": "a", "duration_ms": 1000}]
        write_rows(data / "catalog" / "tracks", tracks, "csv")
    (data / "events").mkdir()
    for name in events:
        if name.endswith("/"):
            (data / "events" / name).mkdir(parents=True)
            continue
        (data / "events" / name).parent.mkdir(parents=True, exist_ok=True)
        (data / "events" / name).write_text("user_id,track_id,played_at,ms_played\n")
    env = _clean_env(tmp_path)
    # Spark cannot start here: had the command started it, it would fail on Java instead.
    env["JAVA_HOME"] = str(tmp_path / "no-java")
    started = time.perf_counter()
    result = _cratedigger([command, "--data", str(data), "--week", "2026-11-16"], env)
    seconds = time.perf_counter() - started
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"Error: {result.stderr[7:].strip()}"]
    assert message in result.stderr and str(data) in result.stderr
    assert result.stdout == ""
    # Nothing written: no feedback export, no database, no run, no report.
    assert not (tmp_path / "state").exists()
    assert seconds < 20, seconds


def test_flask_commands_that_do_not_serve_need_no_secret_key_and_run_says_why(
    tmp_path: Path,
) -> None:
    """``flask --app webapp routes`` lists the routes without a secret key; ``flask run``
    refuses in one line, as the flask CLI reports errors, not with a traceback."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CRATEDIGGER_")}
    env["CRATEDIGGER_DATA_DIR"] = str(tmp_path / "state")
    flask = [sys.executable, "-m", "flask", "--app", "webapp"]
    routes = subprocess.run(
        [*flask, "routes"], capture_output=True, text=True, env=env, timeout=120
    )
    assert routes.returncode == 0, routes.stderr
    assert "/api/v1/health" in routes.stdout and "Traceback" not in routes.stderr
    run = subprocess.run(
        [*flask, "run", "--port", "0"], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode != 0
    assert "Error: CRATEDIGGER_SECRET_KEY is not set" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_summary_says_what_ran_with_counts_timings_and_where_to_look(tmp_path: Path) -> None:
    from cli.main import summary_lines
    from jobs.weekly import WeekReport
    from recsys.settings import Settings

    settings = Settings(data_dir=tmp_path / "state")
    report = WeekReport(
        week_start="2026-11-16",
        data_dir=str(tmp_path / "world"),
        run_id=3,
        status="succeeded",
        stages={"aggregate": 30.25, "tune": 0.01, "train": 4.5, "gate": 1.0, "generate": 2.0},
        aggregation={
            "events_read": {"plays": 12000, "thumbs": 300},
            "duplicates_dropped": {"plays": 4, "thumbs": 1},
            "quarantined": {"plays": {"unknown_track": 2}},
            "quarantined_total": 2,
            "interactions": 8000,
            "users": 100,
        },
        tuning={"searched": False, "reason": "self-tuning is off"},
        gate={"reason": "passed", "model": {"ndcg": 0.2}, "popular": {"ndcg": 0.1}},
        model_version="20261116-abc",
        listeners=100,
        playlists=100,
        playlist_tracks=5000,
        cold_tracks=40,
        popular_playlists=3,
    )
    lines = summary_lines(report, settings)
    assert lines[0] == "week 2026-11-16: run #3 succeeded, model 20261116-abc"
    text = "\n".join(lines)
    assert "aggregate   30.2 s  read 12,000 plays, 300 thumbs; 5 duplicates dropped" in text
    assert "quarantined plays: unknown_track=2" in text
    assert "8,000 (listener, track) pairs of 100 listeners" in text
    assert "tune         0.0 s  self-tuning is off" in text
    assert "gate         1.0 s  passed\n" + " " * 20 + "holdout model: ndcg 0.2000\n" in text
    assert "holdout popularity: ndcg 0.1000" in text
    assert "generate     2.0 s  100 listeners: 5,000 tracks" in text
    assert "40 cold-start tracks, 3 popular playlists" in text
    assert "publish        -   100 playlists visible" in text
    assert "total       37.8 s" in text
    assert f"data dir:  {tmp_path / 'state'}" in lines
    assert f"database:  sqlite:///{tmp_path / 'state' / 'cratedigger.db'}" in lines
    assert f"report:    {tmp_path / 'state' / 'runs' / 'run-3.json'}" in lines
    assert len(lines) <= 24  # one screen


@pytest.mark.spark
def test_the_demo_keeps_its_own_state_and_its_next_step_serves_it(tmp_path: Path) -> None:
    import json
    import re
    import shlex
    import socket
    import urllib.request

    from tests.test_logs import NOISE, parse_logfmt

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _clean_env(tmp_path) | {"TMPDIR": str(tmp_path)}
    result = _cratedigger(
        ["demo", "--users", "10", "--tracks", "200", "--no-serve", "--port", str(port)],
        env,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    state = tmp_path / "state"
    demo_dir = state / "demo"
    out = result.stdout
    # Its own data directory and database: nothing of the configured data directory's.
    assert f"demo state in {demo_dir}" in out
    assert sorted(p.name for p in state.iterdir()) == ["demo"]
    assert (demo_dir / "cratedigger.db").is_file() and (demo_dir / "aggregates").is_dir()
    assert f"data dir:  {demo_dir}\n" in out
    assert f"database:  sqlite:///{demo_dir / 'cratedigger.db'}\n" in out
    assert re.search(r"^week \d{4}-\d\d-\d\d: run #1 succeeded, model \S+$", out, re.M)
    assert (demo_dir / "runs" / "run-1.json").is_file()
    # Quiet: nothing but key=value lines on standard error, and none of Spark's noise.
    for line in result.stderr.splitlines():
        assert parse_logfmt(line) is not None, line
        assert not any(noise in line for noise in NOISE), line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("spark-", "blockmgr-"))]

    listener, token = re.search(r"as listener (\S+): (\S+)", out).groups()  # type: ignore[union-attr]
    next_step = re.search(r"next: `(cratedigger demo --serve-only [^`]+)`", out)
    assert next_step is not None, out
    arguments = shlex.split(next_step.group(1))[1:]
    assert arguments == ["demo", "--serve-only", "--state-dir", str(demo_dir), "--port", str(port)]
    command = [sys.executable, "-c", "from cli.main import main; main()", *arguments]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        url = f"http://127.0.0.1:{port}/api/v1/users/{listener}/playlists/latest"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        while True:
            try:
                with urllib.request.urlopen(request) as answer:
                    playlist = json.load(answer)
                break
            except OSError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.5)
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert playlist["user_id"] == listener and len(playlist["tracks"]) > 0

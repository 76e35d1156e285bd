"""The command line: help everywhere, and bad arguments answered with a clear message."""

from __future__ import annotations

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


def test_a_data_directory_without_plays_is_refused_before_spark_starts(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.worlds import write_rows

    data = tmp_path / "data"
    (data / "events" / "plays").mkdir(parents=True)
    (data / "catalog").mkdir()
    write_rows(data / "catalog" / "artists", [{"artist_id": "a", "name": "A"}], "csv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRATEDIGGER_")}
    env["CRATEDIGGER_DATA_DIR"] = str(tmp_path / "state")
    command = [sys.executable, "-c", "from cli.main import main; main()", "aggregate", "--data"]
    command.append(str(data))
    result = subprocess.run(
        [*command, "--week", "2026-11-16"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "holds no file of plays" in result.stderr and "Traceback" not in result.stderr
    # Refused before the JVM started and before the web thumbs were exported.
    assert "log4j" not in result.stderr and not (tmp_path / "state" / "feedback").exists()
    (data / "events" / "plays" / "p.csv").write_text("user_id,track_id,played_at,ms_played\n")
    again = subprocess.run(
        [*command, "--week", "2026-11-16"], capture_output=True, text=True, env=env, timeout=120
    )
    assert "catalog/tracks.{parquet,csv,jsonl} not found" in again.stderr, again.stderr
    assert "log4j" not in again.stderr


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

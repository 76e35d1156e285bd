"""Logs as the README says: one ``key=value`` (console) or JSON line per record, whatever
its source (ours, Spark's JVM, werkzeug, gunicorn), quiet by default and verbose with -v;
and the in-process Spark session leaves neither its JVM nor its temporary folders behind."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from recsys.logs import Formatter, logfmt_value

ROOT = Path(__file__).resolve().parents[1]
WEEK = "2026-11-16"
#: What Spark and the JVM said on every run before their logs went through ours.
NOISE = (
    "resolves to a loopback address",
    "SPARK_LOCAL_IP",
    "native-hadoop",
    "incubator modules",
    "log4j",
    "Setting default log level",
    "setLogLevel",
)
_PAIR = re.compile(r'([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|[^\s"=\\]+)(?: |$)')


def parse_logfmt(line: str) -> dict[str, Any] | None:
    """The pairs of a logfmt line, or None when the line is not made of pairs only."""
    pairs: dict[str, Any] = {}
    position = 0
    while position < len(line):
        match = _PAIR.match(line, position)
        if match is None:
            return None
        key, value = match.groups()
        pairs[key] = json.loads(value) if value.startswith('"') else value
        position = match.end()
    return pairs if pairs else None


def _record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("jobs.weekly", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    record.created = dt.datetime(2026, 11, 16, 0, 0, 1, 250000, tzinfo=dt.UTC).timestamp()
    return record


def test_a_console_line_is_key_value_pairs() -> None:
    record = _record("stage %s started", "train", run_id=7, note='say "hi" = 1')
    line = Formatter().format(record)
    assert line == (
        "ts=2026-11-16T00:00:01.250Z level=info logger=jobs.weekly "
        'event="stage train started" run_id=7 note="say \\"hi\\" = 1"'
    )
    assert parse_logfmt(line) == {
        "ts": "2026-11-16T00:00:01.250Z",
        "level": "info",
        "logger": "jobs.weekly",
        "event": "stage train started",
        "run_id": "7",
        "note": 'say "hi" = 1',
    }


def test_terminal_colours_are_removed_and_an_exception_stays_on_the_line() -> None:
    record = _record("\x1b[31m\x1b[1mWARNING: This is a development server.\x1b[0m")
    try:
        raise ValueError("bad")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = Formatter().format(record)
    assert "\x1b" not in line and "\n" not in line
    parsed = parse_logfmt(line)
    assert parsed is not None
    assert parsed["event"] == "WARNING: This is a development server."
    assert parsed["exception"].endswith("ValueError: bad")


def test_a_json_line_holds_the_same_fields() -> None:
    line = Formatter(as_json=True).format(_record("%d cold tracks", 3, week="2026-11-16"))
    assert json.loads(line) == {
        "ts": "2026-11-16T00:00:01.250Z",
        "level": "info",
        "logger": "jobs.weekly",
        "event": "3 cold tracks",
        "week": "2026-11-16",
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [("plain", "plain"), ("", '""'), ("a b", '"a b"'), ("k=v", '"k=v"'), (3, "3"), (None, "null")],
)
def test_logfmt_values(value: Any, text: str) -> None:
    assert logfmt_value(value) == text


def test_the_jvm_lines_become_records_of_the_spark_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from jobs.spark import _forward_jvm_log

    stream = io.BytesIO(
        b"WARNING: Using incubator modules: jdk.incubator.vector\n"
        b"WARN org.apache.spark.SparkConf: Note that spark.local.dir will be overridden\n"
        b"\n"
        b"ERROR org.apache.spark.executor.Executor: Exception in task 0.0 java.io.IOException\n"
    )
    with caplog.at_level(logging.DEBUG, logger="spark"):
        _forward_jvm_log(stream)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("spark", logging.DEBUG, "WARNING: Using incubator modules: jdk.incubator.vector"),
        ("spark", logging.WARNING, "Note that spark.local.dir will be overridden"),
        ("spark", logging.ERROR, "Exception in task 0.0 java.io.IOException"),
    ]
    assert caplog.records[1].source == "org.apache.spark.SparkConf"  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRATEDIGGER_")}
    env.update(CRATEDIGGER_DATA_DIR=str(tmp_path / "state"), CRATEDIGGER_TUNE_EVERY_WEEKS="0")
    env.update(extra)
    return env


def test_gunicorn_lines_take_the_format_too(tmp_path: Path) -> None:
    """gunicorn's error and access lines, with the shipped configuration
    (``webapp/gunicorn_conf.py``, whose ``logconfig_dict`` is ``gunicorn_logconfig``)."""
    pytest.importorskip("gunicorn", reason="gunicorn comes with the `server` extra")
    port = _free_port()
    env = _env(tmp_path, CRATEDIGGER_SECRET_KEY="k" * 40, CRATEDIGGER_LOG_FORMAT="json")
    command = [sys.executable, "-m", "gunicorn", "-c", "python:webapp.gunicorn_conf"]
    server = subprocess.Popen(
        [*command, "--bind", f"127.0.0.1:{port}", "--workers", "1", "webapp:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health") as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    lines = (out + err).splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    loggers = {event["logger"] for event in events}
    assert {"gunicorn.error", "gunicorn.access"} <= loggers, lines
    assert any(
        "GET /api/v1/health" in e["event"] for e in events if e["logger"] == "gunicorn.access"
    )


# ------------------------------------------------------------------------ with Spark


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lab.simulate import simulate_world

    out = tmp_path_factory.mktemp("world") / "data"
    simulate_world(
        out,
        users=30,
        tracks=200,
        seed=3,
        weeks=1,
        end=dt.datetime(2026, 11, 16, tzinfo=dt.UTC),
    )
    return out


def _cratedigger(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from cli.main import main; main()", *arguments]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False
    )


def _spark_leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name.startswith(("spark-", "blockmgr-", "cratedigger"))
    )


@pytest.mark.spark
def test_aggregate_logs_key_value_lines_without_sparks_noise_and_leaves_no_temp_folders(
    tmp_path: Path, small_world: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = _env(tmp_path, TMPDIR=str(temp))
    quiet = _cratedigger(["aggregate", "--data", str(small_world), "--week", WEEK], env)
    assert quiet.returncode == 0, quiet.stderr
    assert "interactions of 30 listeners" in quiet.stdout
    assert quiet.stderr == ""  # quiet by default: the command's own line says what it did

    verbose = _cratedigger(["-v", "aggregate", "--data", str(small_world), "--week", WEEK], env)
    assert verbose.returncode == 0, verbose.stderr
    lines = verbose.stderr.splitlines()
    records = [parse_logfmt(line) for line in lines]
    assert all(records), [line for line, r in zip(lines, records, strict=True) if not r]
    assert any(
        r["logger"] == "jobs.aggregate" and r["event"].startswith("aggregated ")
        for r in records
        if r
    ), lines
    assert [line for line in lines if any(n in line for n in NOISE)] == []
    # Neither run left Spark's scratch folders in the temporary folder, nor in its own.
    assert _spark_leftovers(temp) == []
    assert list((tmp_path / "state" / "tmp" / "spark").iterdir()) == []


@pytest.mark.spark
def test_json_logs_carry_the_jvms_lines_too(tmp_path: Path, small_world: Path) -> None:
    env = _env(tmp_path, CRATEDIGGER_LOG_FORMAT="json")
    result = _cratedigger(["-vv", "aggregate", "--data", str(small_world), "--week", WEEK], env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert {"spark", "jobs.aggregate"} <= {e["logger"] for e in events}
    # The JVM's own notice, which no log4j setting reaches, is a DEBUG record.
    incubator = [e for e in events if "incubator modules" in e["event"]]
    assert [e["level"] for e in incubator] in ([], ["debug"])


@pytest.mark.spark
def test_the_session_and_its_jvm_end_with_the_aggregation_and_the_next_starts_anew(
    tmp_path: Path, small_world: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = f"""
import datetime as dt, io, json, os, subprocess
from tqdm import tqdm
from pyspark import SparkContext
from pyspark.sql import SparkSession
from migrations import upgrade
from jobs.weekly import aggregate
from recsys.settings import load_settings

settings = load_settings()
upgrade(settings.database_url)
runs = []
bars = []


def progress(total, name):
    bars.append(tqdm(total=total, desc=name, file=io.StringIO()))
    return bars[-1]


for shown in (progress, None):
    summary = aggregate(settings, {str(small_world)!r}, dt.date(2026, 11, 16), progress=shown)
    children = subprocess.run(
        ["ps", "-o", "comm=", "--ppid", str(os.getpid())], capture_output=True, text=True
    ).stdout.split()
    runs.append(
        {{
            "interactions": summary["interactions"],
            "jvm": SparkContext._gateway is not None,
            "session": SparkSession.getActiveSession() is not None,
            "java_children": [c for c in children if c == "java"],
        }}
    )
print(json.dumps({{"runs": runs, "bars": [[b.desc, b.n, b.total, b.postfix] for b in bars]}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_env(tmp_path, TMPDIR=str(temp)),
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.splitlines()[-1])
    runs = printed["runs"]
    # The first aggregation showed its Spark tasks: all of them done at the end.
    [(name, done, total, postfix)] = printed["bars"]
    assert name == "aggregate (Spark tasks)" and done == total > 0
    assert re.fullmatch(r"\d+ stages", postfix) and int(postfix.split()[0]) > 1
    assert len(runs) == 2 and runs[0]["interactions"] == runs[1]["interactions"] > 0
    assert [(r["jvm"], r["session"], r["java_children"]) for r in runs] == [(False, False, [])] * 2
    assert _spark_leftovers(temp) == []
    assert list((tmp_path / "state" / "tmp" / "spark").iterdir()) == []

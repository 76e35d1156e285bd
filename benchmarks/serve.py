"""Serving throughput: the latest-playlist endpoint against a trivial health endpoint, one run.

Usage::

    python benchmarks/serve.py [--duration 60] [--quick] [--database postgresql|sqlite]
        [--workers 5] [--connections 16] [--threads 1] [--listeners 2000] [--tracks 20000]

What it measures: requests per second, p50 and p99 latency and errors (non-2xx responses
plus socket errors) of ``GET /api/v1/users/<id>/playlists/latest`` (bearer token, full 200
responses: no If-None-Match is ever sent) next to ``GET /api/v1/health`` (no token, no
database), both served by the same gunicorn server, measured one after the other in the
same run with the same duration, connections and load-generator threads.

Targets (issue 15): a hit at least 0.8x the health endpoint's throughput, the miss
pattern at least 0.5x, zero errors over 60 s, in one run.

On PostgreSQL each web worker caches tokens and playlist answers (:mod:`webapp.cache`), so
after the first request for a listener a worker answers from memory until a change is
announced. The round robin below asks for each listener again about every
``--listeners / req/s`` seconds, so nearly every request after the warm-up is a cache hit:
the *hit pattern*. A listener who opens the app once a day misses every worker's cache:
the *miss pattern* is the same round robin on a server whose worker cache holds nothing
(``CRATEDIGGER_API_CACHE_ENTRIES=0``), so each request is a different listener, unknown to
the worker. After health and the hit pattern on the shipped defaults (Redis off), the
playlist endpoint is measured on three more servers, one after the other: the miss pattern
with Redis off (the token and playlist from the database, one round trip), then, after the
answers were published to ``--redis`` as the weekly run's publish step does
(:mod:`recsys.db.published`), the hit and the miss pattern with
``CRATEDIGGER_SERVING_REDIS_URL`` set (a miss: one Redis round trip). The targets are
checked on the Redis-on rows (Redis-off rows when ``--redis ''``).

How:

1. A fresh database (PostgreSQL ``cratedigger_bench_serve`` created on ``--postgres``, or a
   SQLite file in a temporary folder) is upgraded to the newest schema and seeded directly
   through :mod:`recsys.db.repository`: ``--tracks`` tracks by ``--tracks / 10`` artists,
   ``--listeners`` listeners, two published weeks (the newest is 2026-11-16) of
   ``--length``-track playlists each, four thumbs per listener (three up, one down, so every
   response also filters a thumbed-down track) and one API token per listener; then, on
   PostgreSQL, ANALYZE (the statistics autovacuum would keep; ``--skip-analyze``: none).
2. gunicorn serves ``webapp:create_app()`` on 127.0.0.1 with the project's
   ``webapp/gunicorn_conf.py`` (sync workers, preload, max_requests 10,000), except the bind
   address, ``--workers`` (default 2 x cores + 1, as in that file), the error log (a file)
   and the access log, which is turned off entirely (``accesslog = None``, not merely sent
   to /dev/null) so that it costs nothing on either endpoint.
3. `wrk <https://github.com/wg/wrk>`_ (C; ``apt-get install wrk``) drives the server with a
   generated Lua script. For the playlist endpoint each request goes to the next listener,
   round robin over all of them, with that listener's own token (``--auth operator``: one
   operator token for all). Each endpoint is warmed up for ``--warmup`` seconds first
   (not counted), then measured for ``--duration`` seconds: health, then playlist.
   wrk is a closed loop (each connection waits for its response), so the latency
   percentiles are those of a saturated server, without coordinated-omission correction.
   wrk, the server and PostgreSQL share the machine's cores.

Besides the wrk numbers it reports CPU time per request of the gunicorn master and workers
and of the PostgreSQL backends (from /proc), which depends much less than requests per
second on what else the machine runs, the share of the whole machine's CPU that was busy
during each phase, and the errors of the warm-up right after the server started.

Prints the setup and a table, and writes the same to ``--results``
(default ``benchmarks/results/serve.md``). Exits 1 if the target was not met. The server
is stopped and the benchmark database dropped at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WEEK = dt.date(2026, 11, 16)
WEEKS = (WEEK - dt.timedelta(days=7), WEEK)
BENCH_DATABASE = "cratedigger_bench_serve"
HEALTH_PATH = "/api/v1/health"
MISS_OFF = "playlist latest, miss pattern, Redis off"
HIT_ON = "playlist latest, hit pattern, Redis on"
MISS_ON = "playlist latest, miss pattern, Redis on"
TARGET_RATIO = 0.5
#: issue 15: a miss at least half the health endpoint, a hit at least 0.8 of it
TARGET_MISS_RATIO = 0.5
TARGET_HIT_RATIO = 0.8
TARGET_DURATION = 60.0
JSON_MARKER = "BENCH_JSON "


# ----------------------------------------------------------------------------- database


def create_database(args: argparse.Namespace, work: Path) -> str:
    """A fresh, empty database; returns its SQLAlchemy URL."""
    if args.database == "sqlite":
        return f"sqlite:///{work / 'state' / 'cratedigger.db'}"
    from sqlalchemy import create_engine, text

    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            # A database left behind by an interrupted run of this benchmark.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{BENCH_DATABASE}"'))
    finally:
        admin.dispose()
    return args.postgres.rsplit("/", 1)[0] + f"/{BENCH_DATABASE}"


def drop_database(args: argparse.Namespace) -> None:
    if args.database != "postgresql":
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass(frozen=True)
class Seeded:
    #: (listener id, bearer token) of every listener
    listeners: list[tuple[str, str]]
    operator_token: str
    playlist_tracks: int
    seconds: float
    server_version: str


def seed(database_url: str, args: argparse.Namespace) -> Seeded:
    """Schema at head, a catalog, listeners, two published weeks of playlists, thumbs and
    tokens, written through the repository functions the weekly run uses."""
    from sqlalchemy import insert, text

    from migrations import upgrade
    from recsys.db import repository
    from recsys.db.engine import make_engine, make_session_factory
    from recsys.db.models import Feedback, ModelVersion
    from recsys.db.tokens import create_token

    started = time.perf_counter()
    upgrade(database_url)
    rng = np.random.default_rng(args.seed)
    n_artists = max(1, args.tracks // 10)
    artists = [f"a{i:06d}" for i in range(n_artists)]
    tracks = [f"t{i:07d}" for i in range(args.tracks)]
    users = [f"u{i:06d}" for i in range(args.listeners)]
    engine = make_engine(database_url)
    written = 0
    try:
        with make_session_factory(engine).begin() as session:
            version_query = (
                "SHOW server_version"
                if engine.dialect.name == "postgresql"
                else "SELECT sqlite_version()"
            )
            server_version = str(session.execute(text(version_query)).scalar())
            repository.upsert_artists(
                session, [{"artist_id": a, "name": f"Artist {i}"} for i, a in enumerate(artists)]
            )
            repository.upsert_tracks(
                session,
                [
                    {
                        "track_id": track,
                        "title": f"Song number {i}",
                        "artist_id": artists[i % n_artists],
                        "duration_ms": 120_000 + int(rng.integers(0, 240_000)),
                        "released_at": None,
                    }
                    for i, track in enumerate(tracks)
                ],
            )
            repository.upsert_users(
                session, [{"user_id": user, "display_name": f"Listener {user}"} for user in users]
            )
            current: list[np.ndarray] = []
            for week in WEEKS:
                version = f"{week.isoformat()}-bench"
                repository.save_model_version(
                    session,
                    ModelVersion(
                        version=version,
                        week_start=week,
                        fingerprint="0" * 64,
                        artifact_path="/nowhere",
                        params={"factors": 32},
                        n_users=len(users),
                        n_tracks=len(tracks),
                        n_interactions=len(users) * 100,
                        train_seconds=1.0,
                        status="published",
                        metrics=None,
                    ),
                )
                playlists = []
                current = []
                for user in users:
                    picks = rng.choice(len(tracks), size=args.length, replace=False)
                    anchors = rng.integers(0, len(tracks), size=args.length)
                    current.append(picks)
                    entries = [
                        repository.PlaylistEntry(
                            tracks[pick],
                            2.0 - rank / 100,
                            f"Because you played Song number {anchor}",
                        )
                        for rank, (pick, anchor) in enumerate(zip(picks, anchors, strict=True))
                    ]
                    playlists.append(repository.NewPlaylist(user, entries))
                run = repository.start_weekly_run(session, week, "benchmark", "/nowhere")
                run.model_version = version
                session.flush()
                written += repository.replace_week_playlists(
                    session, week, version, playlists, run.id
                )
                repository.publish_week(session, run.id)
                repository.end_weekly_run(session, run.id, "succeeded")
            # Thumbs on the newest week's tracks: three up, one down (left out of responses).
            rated = dt.datetime(2026, 11, 17, tzinfo=dt.UTC)
            thumbs = [
                {
                    "user_id": user,
                    "track_id": tracks[picks[k]],
                    "value": -1 if k == 3 else 1,
                    "rated_at": rated,
                    "source": "api",
                }
                for user, picks in zip(users, current, strict=True)
                for k in range(min(4, args.length))
            ]
            for start in range(0, len(thumbs), 2000):
                session.execute(insert(Feedback), thumbs[start : start + 2000])
            listeners = [
                (user, create_token(session, user_id=user, label="benchmark")[1]) for user in users
            ]
            operator_token = create_token(session, operator=True, label="benchmark")[1]
        if engine.dialect.name == "postgresql" and not args.skip_analyze:
            # Planner statistics, as autovacuum would have them on a production server.
            # Without them PostgreSQL hash-joins the whole tracks table into every playlist
            # read (a seq scan per request), which is not what this benchmark is about.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return Seeded(listeners, operator_token, written, time.perf_counter() - started, server_version)


# ----------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    args: argparse.Namespace,
    database_url: str,
    work: Path,
    port: int,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    # The project's configuration with the access log off altogether (not just sent to
    # /dev/null, which would still format a line per request).
    config = work / "gunicorn_bench_conf.py"
    config.write_text(
        "from webapp.gunicorn_conf import *  # noqa: F403\n"
        "accesslog = None\n"
        f"errorlog = {str(work / 'gunicorn.log')!r}\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CRATEDIGGER_") and key != "GUNICORN_CMD_ARGS"
    }
    env.update(
        {
            "CRATEDIGGER_SECRET_KEY": "b" * 64,
            "CRATEDIGGER_DATABASE_URL": database_url,
            "CRATEDIGGER_DATA_DIR": str(work / "state"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            **(extra_env or {}),
        }
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(config),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "webapp:create_app()",
    ]
    # The app's own log (unhandled errors) goes to stderr: keep it with gunicorn's.
    output = (work / "server-output.log").open("wb")
    server = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
    )
    output.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.returncode}:\n{server_log(work)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=2):
                break
        except OSError:
            time.sleep(0.2)
    else:
        raise RuntimeError(f"gunicorn did not answer within 60 s:\n{server_log(work)}")
    # Every worker is up: the master forks them all before the first answer, but give the
    # slower ones a moment to import nothing (preload) and enter their loop.
    time.sleep(1.0)
    return server


def stop_server(server: subprocess.Popen[bytes] | None) -> None:
    if server is None or server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=40)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def server_log(work: Path) -> str:
    """gunicorn's error log and the server's stdout and stderr."""
    paths = (work / "gunicorn.log", work / "server-output.log")
    return "".join(path.read_text(errors="replace") for path in paths if path.exists())


_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    return raw[raw.rindex(")") + 2 :].split()


def server_cpu_seconds(master: int) -> float:
    """CPU time of the gunicorn master, its live workers and its reaped workers."""
    fields = _stat_fields(master)
    if fields is None:
        return 0.0
    # After ")": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = sum(int(value) for value in fields[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        child = _stat_fields(int(entry.name))
        if child is not None and child[1] == str(master):
            ticks += int(child[11]) + int(child[12])
    return ticks / _TICK


def database_cpu_ticks(args: argparse.Namespace) -> dict[int, int]:
    """CPU time (clock ticks) of each PostgreSQL backend serving the benchmark database
    (none for SQLite, which runs inside the workers)."""
    ticks: dict[int, int] = {}
    if args.database != "postgresql":
        return ticks
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"postgres:") and BENCH_DATABASE.encode() in title:
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


def database_cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU time the backends used between two readings. A backend that exited in between
    (its worker was restarted) is missing from ``after``: its share is not counted."""
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) / _TICK


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def publish_to_redis(database_url: str, redis_url: str) -> int:
    """Empty the benchmark's Redis database and write the answers as the weekly run's
    publish step does (:func:`recsys.db.published.publish_latest`)."""
    import redis

    from recsys.db import published
    from recsys.db.engine import make_engine, make_session_factory

    redis.Redis.from_url(redis_url).flushdb()
    store = published.store(redis_url)
    assert store is not None
    engine = make_engine(database_url)
    try:
        return published.publish_latest(make_session_factory(engine), store)
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- load


LUA_TEMPLATE = """-- generated by benchmarks/serve.py
local paths = {PATHS}
local tokens = {TOKENS}
local reqs = {{}}
local threads = {{}}
local n = 0
non2xx = 0
counter = 0

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  for i = 1, #paths do
    local headers = {{}}
    if tokens[i] ~= "" then headers["Authorization"] = "Bearer " .. tokens[i] end
    reqs[i] = wrk.format("GET", paths[i], headers)
  end
  n = #reqs
  -- Threads start at different listeners.
  counter = (thread_index * 7919) % n
end

function request()
  counter = counter % n + 1
  return reqs[counter]
end

function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + (thread:get("non2xx") or 0) end
  local e = summary.errors
  io.write(string.format(
    '{MARKER}{{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "status_ge_400": %d, "non2xx": %d, "p50_us": %d, ' ..
    '"p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.timeout, e.status, bad, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def lua_list(values: list[str]) -> str:
    return "{" + ", ".join(json.dumps(value) for value in values) + "}"


def write_script(path: Path, requests: list[tuple[str, str]]) -> Path:
    path.write_text(
        LUA_TEMPLATE.format(
            PATHS=lua_list([p for p, _ in requests]),
            TOKENS=lua_list([t for _, t in requests]),
            MARKER=JSON_MARKER,
        )
    )
    return path


@dataclass(frozen=True)
class Phase:
    endpoint: str
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    bytes_per_response: float
    server_cpu_ms_per_request: float
    database_cpu_ms_per_request: float
    wrk_cpu_seconds: float
    machine_busy: float

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors


def run_wrk(
    args: argparse.Namespace, port: int, script: Path, seconds: float, master: int, name: str
) -> Phase:
    command = [
        "wrk",
        "--threads",
        str(args.threads),
        "--connections",
        str(args.connections),
        "--duration",
        f"{max(1, round(seconds))}s",
        "--timeout",
        f"{args.timeout}s",
        "--script",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    cpu_before = server_cpu_seconds(master)
    db_before = database_cpu_ticks(args)
    busy_before, total_before = machine_cpu()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_after, total_after = machine_cpu()
    cpu_after = server_cpu_seconds(master)
    db_after = database_cpu_ticks(args)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")
    line = next((row for row in result.stdout.splitlines() if row.startswith(JSON_MARKER)), None)
    if line is None:
        raise RuntimeError(f"no summary from wrk:\n{result.stdout}\n{result.stderr}")
    data = json.loads(line[len(JSON_MARKER) :])
    duration = data["duration_us"] / 1e6
    requests = int(data["requests"])
    return Phase(
        endpoint=name,
        seconds=duration,
        requests=requests,
        rps=requests / duration,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        non2xx=int(data["non2xx"]),
        socket_errors=sum(int(data[key]) for key in ("connect", "read", "write", "timeout")),
        bytes_per_response=data["bytes"] / max(1, requests),
        server_cpu_ms_per_request=1000 * (cpu_after - cpu_before) / max(1, requests),
        database_cpu_ms_per_request=1000
        * database_cpu_seconds(db_before, db_after)
        / max(1, requests),
        wrk_cpu_seconds=(children_after.ru_utime + children_after.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
        machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
    )


def preflight(port: int, seeded: Seeded, args: argparse.Namespace) -> dict[str, Any]:
    """One real response of each endpoint, checked, before any load."""
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(base + HEALTH_PATH, timeout=10) as response:
        health = json.load(response)
    if health != {"status": "ok"}:
        raise RuntimeError(f"unexpected health answer {health!r}")
    user, token = seeded.listeners[0]
    request = urllib.request.Request(
        f"{base}/api/v1/users/{user}/playlists/latest",
        headers={"Authorization": f"Bearer {token_for(args, seeded, token)}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        status = response.status
        document = json.load(response)
    expected = args.length - (1 if args.length >= 4 else 0)
    if (
        status != 200
        or document["week_start"] != WEEK.isoformat()
        or len(document["tracks"]) != expected
    ):
        raise RuntimeError(f"unexpected playlist answer ({status}): {str(document)[:300]}")
    return document


def token_for(args: argparse.Namespace, seeded: Seeded, own: str) -> str:
    return seeded.operator_token if args.auth == "operator" else own


# ----------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    import gunicorn

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (wrk.stdout or wrk.stderr).splitlines()
    return {
        "python": platform.python_version(),
        "gunicorn": gunicorn.__version__,
        "wrk": first[0].split(" [")[0].removeprefix("wrk ") if first else "?",
    }


def render(
    args: argparse.Namespace,
    setup: list[tuple[str, str]],
    phases: list[Phase],
    warmups: list[Phase],
    verdict: list[tuple[str, str, str, str]],
    notes: list[str],
) -> str:
    command = shlex.join(["python", "benchmarks/serve.py", *sys.argv[1:]])
    lines = [
        "# Serving benchmark",
        "",
        f"`{command}`",
        "",
        "Setup:",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in setup]
    lines += [
        "",
        f"Measured ({args.duration:.0f} s per endpoint):",
        "",
        "| endpoint | seconds | requests | req/s | p50 ms | p99 ms | errors (non-2xx + socket) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for phase in phases:
        lines.append(
            f"| {phase.endpoint} | {phase.seconds:.1f} | {phase.requests} | {phase.rps:.1f} "
            f"| {phase.p50_ms:.2f} | {phase.p99_ms:.2f} "
            f"| {phase.errors} ({phase.non2xx} + {phase.socket_errors}) |"
        )
    lines += [
        "",
        "Where the time goes, and the warm-up right after the server started (not measured):",
        "",
        "| phase | p90 ms | max ms | bytes/response | gunicorn CPU ms/request "
        "| database CPU ms/request | machine CPU busy | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, group in (("", phases), ("warm-up: ", warmups)):
        for phase in group:
            lines.append(
                f"| {label}{phase.endpoint} | {phase.p90_ms:.2f} | {phase.max_ms:.1f} "
                f"| {phase.bytes_per_response:.0f} | {phase.server_cpu_ms_per_request:.3f} "
                f"| {phase.database_cpu_ms_per_request:.3f} | {100 * phase.machine_busy:.0f} % "
                f"| {phase.errors} |"
            )
    lines += [
        "",
        "| check | value | target | verdict |",
        "|---|---:|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in verdict],
        "",
        *[f"- {note}" for note in notes],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per endpoint")
    parser.add_argument(
        "--quick", action="store_true", help="10 s per endpoint, 2 s warm-up (a trial run)"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds per endpoint")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help=f"server on which the database {BENCH_DATABASE} is created and dropped",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2 * (os.cpu_count() or 1) + 1,
        help="gunicorn sync workers; default: 2 x cores + 1, as webapp/gunicorn_conf.py",
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--timeout", type=int, default=5, help="wrk request timeout, s")
    parser.add_argument("--listeners", type=int, default=2000)
    parser.add_argument("--tracks", type=int, default=20000, help="catalog size")
    parser.add_argument("--length", type=int, default=50, help="tracks per playlist")
    parser.add_argument(
        "--auth",
        choices=("listener", "operator"),
        default="listener",
        help="each listener's own token, or one operator token for every request",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/7",
        help="Redis database for the serving store's phases (emptied first); '' for none",
    )
    parser.add_argument(
        "--skip-analyze",
        action="store_true",
        help="PostgreSQL: do not ANALYZE after seeding (planner statistics of a database "
        "autovacuum has not visited yet)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / "benchmarks" / "results" / "serve.md",
        help="Markdown report; '' for none",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 10.0, 2.0
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    if args.listeners < 1 or args.tracks < args.length or args.length < 1:
        parser.error("need at least one listener and --tracks >= --length >= 1")

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="cratedigger-bench-serve-"))
    server: subprocess.Popen[bytes] | None = None
    created = False
    try:
        database_url = create_database(args, work)
        created = True
        print(f"seeding {args.database} ({args.listeners} listeners) ...", flush=True)
        seeded = seed(database_url, args)
        print(f"seeded in {seeded.seconds:.1f} s; starting gunicorn ...", flush=True)
        port = free_port()
        server = start_server(args, database_url, work, port)
        document = preflight(port, seeded, args)

        playlist_requests = [
            (f"/api/v1/users/{user}/playlists/latest", token_for(args, seeded, token))
            for user, token in seeded.listeners
        ]
        health_script = write_script(work / "health.lua", [(HEALTH_PATH, "")])
        playlist_script = write_script(work / "playlist.lua", playlist_requests)
        scripts = {"health": health_script, "playlist latest": playlist_script}
        warmups: list[Phase] = []
        for name, script in scripts.items():
            print(f"warming up {name} for {args.warmup:.0f} s ...", flush=True)
            warmups.append(run_wrk(args, port, script, args.warmup, server.pid, name))
        phases = []
        for name, script in scripts.items():
            print(f"measuring {name} for {args.duration:.0f} s ...", flush=True)
            phases.append(run_wrk(args, port, script, args.duration, server.pid, name))
        servers: list[tuple[str, dict[str, str]]] = []
        if args.database == "postgresql":
            # Every request misses the worker's own cache (entries 0), as a listener who
            # opens the app once a day does among a population far larger than the cache.
            servers.append((MISS_OFF, {"CRATEDIGGER_API_CACHE_ENTRIES": "0"}))
            if args.redis:
                written = publish_to_redis(database_url, args.redis)
                print(f"published {written} answers to {args.redis}", flush=True)
                on = {"CRATEDIGGER_SERVING_REDIS_URL": args.redis}
                servers.append((HIT_ON, on))
                servers.append((MISS_ON, {**on, "CRATEDIGGER_API_CACHE_ENTRIES": "0"}))
        for name, extra in servers:
            stop_server(server)
            server = start_server(args, database_url, work, port, extra)
            print(f"warming up and measuring {name} ...", flush=True)
            warmups.append(run_wrk(args, port, playlist_script, args.warmup, server.pid, name))
            phases.append(run_wrk(args, port, playlist_script, args.duration, server.pid, name))
        load_after = os.getloadavg()
        log = server_log(work)
    finally:
        stop_server(server)
        if created:
            drop_database(args)
        shutil.rmtree(work, ignore_errors=True)

    health, playlist = phases[:2]
    by_name = {phase.endpoint: phase for phase in phases}
    hit = by_name.get(HIT_ON, playlist)
    miss = by_name.get(MISS_ON, by_name.get(MISS_OFF))

    def ratio_of(phase: Phase | None) -> float:
        return phase.rps / health.rps if phase is not None and health.rps else 0.0

    errors = sum(phase.errors for phase in phases)
    long_enough = min(phase.seconds for phase in phases) >= TARGET_DURATION - 0.5
    met = ratio_of(hit) >= TARGET_HIT_RATIO and ratio_of(miss) >= TARGET_MISS_RATIO and errors == 0
    verdict = [
        *[
            (
                f"{phase.endpoint}: req/s / health req/s (p99 {phase.p99_ms:.1f} ms)",
                f"{ratio_of(phase):.3f}",
                "-",
                "-",
            )
            for phase in phases[1:]
        ],
        (
            f"hit: {hit.endpoint}",
            f"{ratio_of(hit):.3f}",
            f">= {TARGET_HIT_RATIO}",
            "met" if ratio_of(hit) >= TARGET_HIT_RATIO else "NOT met",
        ),
        (
            f"miss: {miss.endpoint if miss else 'not measured (SQLite)'}",
            f"{ratio_of(miss):.3f}",
            f">= {TARGET_MISS_RATIO}",
            "met" if ratio_of(miss) >= TARGET_MISS_RATIO else "NOT met",
        ),
        (
            "errors, every phase",
            str(errors),
            f"0 over {TARGET_DURATION:.0f} s",
            ("met" if errors == 0 else "NOT met")
            + ("" if long_enough else f" (only {args.duration:.0f} s: indicative)"),
        ),
        (
            "errors in the warm-up right after start (not measured)",
            str(sum(phase.errors for phase in warmups)),
            "not part of the target",
            "see the server log line",
        ),
    ]
    log_events = {
        marker: log.count(marker)
        for marker in ("WORKER TIMEOUT", "unhandled error", "Traceback", "[ERROR]")
    }
    cores = os.cpu_count()
    setup = [
        ("machine", f"{platform.machine()}, {cores} cores (shared with other work)"),
        (
            "load average (1 min) before / after",
            f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        ),
        ("software", ", ".join(f"{k} {v}" for k, v in versions().items())),
        (
            "database",
            f"{args.database} {seeded.server_version} on loopback"
            if args.database == "postgresql"
            else f"sqlite {seeded.server_version} (WAL) in a temporary folder",
        ),
        (
            "data",
            f"{args.listeners} listeners x {args.length} tracks x {len(WEEKS)} published weeks "
            f"({seeded.playlist_tracks} playlist rows), catalog {args.tracks} tracks by "
            f"{max(1, args.tracks // 10)} artists, 4 thumbs per listener; "
            f"seeded in {seeded.seconds:.1f} s"
            + (
                ", then ANALYZE"
                if args.database == "postgresql" and not args.skip_analyze
                else ", no ANALYZE"
            ),
        ),
        (
            "server",
            f"gunicorn, webapp/gunicorn_conf.py: {args.workers} sync workers, preload, "
            "max_requests 10,000 (+ jitter), access log off; 127.0.0.1",
        ),
        (
            "load",
            f"wrk, {args.threads} thread(s), {args.connections} connections, "
            f"{args.duration:.0f} s per endpoint after {args.warmup:.0f} s warm-up each, "
            f"timeout {args.timeout} s; health first, then playlist",
        ),
        (
            "playlist requests",
            f"round robin over {args.listeners} listeners, "
            + (
                "each with its own token"
                if args.auth == "listener"
                else "one operator token for all"
            )
            + f"; full 200 responses ({len(document['tracks'])} tracks, no If-None-Match)",
        ),
        (
            "server log (whole run, warm-up included)",
            ", ".join(f"{count} x {marker!r}" for marker, count in log_events.items()),
        ),
    ]
    notes = [
        "errors = responses outside 2xx (counted by the wrk script) + wrk's socket errors "
        "(connect, read, write, timeout).",
        "gunicorn CPU ms/request: CPU time of the gunicorn master and workers (including "
        "workers restarted by max_requests) over the phase, divided by its requests; "
        "database CPU ms/request: the same for the PostgreSQL backends of the benchmark "
        "database (0 for SQLite, whose work is in the workers' CPU time); a backend that "
        "exits during a phase (its worker restarted) is left out, so this is a lower bound.",
        "machine CPU busy: share of all cores busy during the phase, whatever ran there "
        "(wrk used "
        + ", ".join(f"{phase.wrk_cpu_seconds:.1f} s" for phase in phases)
        + " of CPU in the measured phases).",
        "miss pattern: a server started with CRATEDIGGER_API_CACHE_ENTRIES=0, so that no "
        "request is answered from the worker's own cache, as for a listener who opens the "
        "app once a day among far more listeners than the cache holds; Redis off: the token "
        "and playlist from the database (one round trip); Redis on "
        "(CRATEDIGGER_SERVING_REDIS_URL): from the answers the weekly run publishes there "
        "(recsys/db/published.py, written before the server starts; tokens written back on "
        "their first use, in the warm-up) - one Redis round trip.",
        "hit pattern: the round robin over the listeners on a server with the worker cache "
        "on (the default 2048 entries), so nearly every request is a hit.",
        "wrk is a closed loop: latencies are those of a saturated server, without "
        "coordinated-omission correction.",
    ]
    report = render(args, setup, phases, warmups, verdict, notes)
    print()
    print(report)
    verdict_line = "target met" if met and long_enough else "target NOT met"
    if met and not long_enough:
        verdict_line = "target met in this short run (the target asks for 60 s)"
    print(verdict_line)
    if str(args.results) not in ("", "."):
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(report + f"\n**{verdict_line}**\n")
        print(f"wrote {args.results}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

"""Publishing a chunk of playlists: ``repository.replace_week_playlists`` against a bare
``COPY`` of the same rows, in the same run (issue 15: at least 0.8x the bare COPY).

Usage::

    python benchmarks/publish.py [--listeners 5000] [--tracks 20000] [--length 50]
        [--chunk 500] [--repeats 3] [--database postgresql|sqlite] [--json FILE]

What it measures: the weekly run writes each chunk of listeners' playlists with
``replace_week_playlists`` (delete what a retried chunk wrote, read the catalog of the
chunk's tracks, render each playlist's JSON, write the headers and the track rows). The
reference writes the same rows, already rendered, with nothing but PostgreSQL's ``COPY``
into the same tables (headers with ids taken from the sequence, then the track rows): the
least a client can do to put them there. Both run in one transaction per chunk, the same
chunks in the same order, alternating, ``--repeats`` times into fresh weeks; the table
prints the median seconds and CPU seconds of this process and the ratio
``copy / ours`` (1.0: as fast as the bare COPY). On SQLite the reference is one
``executemany`` per table instead of COPY.

A fresh database (``cratedigger_bench_publish`` on ``--postgres``) is created, upgraded,
seeded with the catalog and dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BENCH_DATABASE = "cratedigger_bench_publish"
FIRST_WEEK = dt.date(2026, 1, 5)


def _database(args: argparse.Namespace, work: Path) -> str:
    if args.database == "sqlite":
        return f"sqlite:///{work / 'publish.db'}"
    from sqlalchemy import create_engine, text

    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{BENCH_DATABASE}"'))
    admin.dispose()
    return args.postgres.rsplit("/", 1)[0] + f"/{BENCH_DATABASE}"


def _drop(args: argparse.Namespace) -> None:
    if args.database != "postgresql":
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
    admin.dispose()


def _playlists(args: argparse.Namespace, tracks: list[str]) -> list[Any]:
    from recsys.db import repository

    rng = np.random.default_rng(args.seed)
    playlists = []
    for u in range(args.listeners):
        picks = rng.choice(len(tracks), size=args.length, replace=False)
        playlists.append(
            repository.NewPlaylist(
                f"u{u:07d}",
                [
                    repository.PlaylistEntry(
                        tracks[pick], 2.0 - rank / 100, f"Because you played Song {pick}"
                    )
                    for rank, pick in enumerate(picks)
                ],
            )
        )
    return playlists


def _seed(url: str, args: argparse.Namespace) -> list[str]:
    from migrations import upgrade
    from recsys.db import repository
    from recsys.db.engine import make_engine, make_session_factory

    upgrade(url)
    n_artists = max(1, args.tracks // 10)
    tracks = [f"t{i:07d}" for i in range(args.tracks)]
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        repository.upsert_artists(
            session, [{"artist_id": f"a{i:06d}", "name": f"Artist {i}"} for i in range(n_artists)]
        )
        repository.upsert_tracks(
            session,
            [
                {
                    "track_id": track,
                    "title": f"Song {i}",
                    "artist_id": f"a{i % n_artists:06d}",
                    "duration_ms": 180_000 + i % 97_000,
                    "released_at": None,
                }
                for i, track in enumerate(tracks)
            ],
        )
        repository.upsert_users(
            session,
            [{"user_id": f"u{u:07d}", "display_name": None} for u in range(args.listeners)],
        )
    engine.dispose()
    return tracks


def _run_for(session: Any, week: dt.date) -> int:
    from recsys.db import repository
    from recsys.db.models import ModelVersion

    version = f"{week}-bench"
    repository.save_model_version(
        session,
        ModelVersion(
            version=version,
            week_start=week,
            fingerprint="0" * 64,
            artifact_path="/nowhere",
            params={},
            n_users=0,
            n_tracks=0,
            n_interactions=0,
            train_seconds=0.0,
            status="trained",
            metrics=None,
        ),
    )
    run = repository.start_weekly_run(session, week, "benchmark", "/nowhere")
    run.model_version = version
    session.flush()
    return int(run.id)


def _ours(sessions: Any, week: dt.date, run_id: int, chunks: list[list[Any]]) -> None:
    from recsys.db import repository

    for chunk in chunks:
        with sessions.begin() as session:
            repository.replace_week_playlists(session, week, f"{week}-bench", chunk, run_id)


def _rendered(sessions: Any, week: dt.date, chunks: list[list[Any]]) -> list[list[Any]]:
    """The rows a chunk puts in the two tables, rendered by the repository's own code
    (outside the timing): (header rows, track rows by header)."""
    from recsys.db import repository

    out = []
    with sessions() as session:
        for chunk in chunks:
            ids = {e.track_id for p in chunk for e in p.entries}
            catalog = repository._catalog_rows(session, ids)
            headers = [
                (
                    p.user_id,
                    repository.render_tracks(p.entries, catalog),
                    sum(catalog[e.track_id]["duration_ms"] for e in p.entries),
                    [(i, e.track_id, float(e.score), e.reason) for i, e in enumerate(p.entries, 1)],
                )
                for p in chunk
            ]
            out.append(headers)
    return out


def _copy(engine: Any, week: dt.date, run_id: int, rendered: list[list[Any]]) -> None:
    """The bare reference: ids from the sequence, then COPY of headers and of tracks."""
    now = dt.datetime.now(dt.UTC)
    version = f"{week}-bench"
    for headers in rendered:
        raw = engine.raw_connection()
        try:
            connection = raw.driver_connection
            if engine.dialect.name == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT nextval(pg_get_serial_sequence('playlists', 'id'))"
                        " FROM generate_series(1, %s)",
                        (len(headers),),
                    )
                    ids = [row[0] for row in cursor.fetchall()]
                    with cursor.copy(
                        "COPY playlists (id, user_id, week_start, weekly_run_id, model_version,"
                        " kind, created_at, tracks_json, duration_ms, new_releases) FROM STDIN"
                    ) as copy:
                        for pid, (user, text, duration, _rows) in zip(ids, headers, strict=True):
                            copy.write_row(
                                (
                                    pid,
                                    user,
                                    week,
                                    run_id,
                                    version,
                                    "personal",
                                    now,
                                    text,
                                    duration,
                                    0,
                                )
                            )
                    with cursor.copy(
                        "COPY playlist_tracks (playlist_id, position, track_id, score, reason)"
                        " FROM STDIN"
                    ) as copy:
                        for pid, (_user, _text, _duration, rows) in zip(ids, headers, strict=True):
                            for row in rows:
                                copy.write_row((pid, *row))
            else:
                cursor = connection.cursor()
                start = cursor.execute("SELECT coalesce(max(id), 0) FROM playlists").fetchone()[0]
                ids = list(range(start + 1, start + 1 + len(headers)))
                cursor.executemany(
                    "INSERT INTO playlists (id, user_id, week_start, weekly_run_id, model_version,"
                    " kind, created_at, tracks_json, duration_ms, new_releases)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            pid,
                            user,
                            week.isoformat(),
                            run_id,
                            version,
                            "personal",
                            now.isoformat(),
                            text,
                            duration,
                            0,
                        )
                        for pid, (user, text, duration, _rows) in zip(ids, headers, strict=True)
                    ],
                )
                cursor.executemany(
                    "INSERT INTO playlist_tracks VALUES (?, ?, ?, ?, ?)",
                    [
                        (pid, *row)
                        for pid, (_u, _t, _d, rows) in zip(ids, headers, strict=True)
                        for row in rows
                    ],
                )
            connection.commit()
        finally:
            raw.close()


def _timed(fn: Any, *args: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--listeners", type=int, default=5000)
    parser.add_argument("--tracks", type=int, default=20000)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=500, help="listeners per transaction")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    for name in ("listeners", "tracks", "length", "chunk", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.length > args.tracks:
        parser.error("--length cannot exceed --tracks")

    from recsys.db.engine import make_engine, make_session_factory

    with tempfile.TemporaryDirectory() as work:
        url = _database(args, Path(work))
        try:
            tracks = _seed(url, args)
            playlists = _playlists(args, tracks)
            chunks = [playlists[i : i + args.chunk] for i in range(0, len(playlists), args.chunk)]
            engine = make_engine(url)
            sessions = make_session_factory(engine)
            ours: list[tuple[float, float]] = []
            bare: list[tuple[float, float]] = []
            for repeat in range(args.repeats):
                week_ours = FIRST_WEEK + dt.timedelta(weeks=2 * repeat)
                week_copy = week_ours + dt.timedelta(weeks=1)
                with sessions.begin() as session:
                    run_ours, run_copy = _run_for(session, week_ours), _run_for(session, week_copy)
                rendered = _rendered(sessions, week_copy, chunks)
                ours.append(_timed(_ours, sessions, week_ours, run_ours, chunks))
                bare.append(_timed(_copy, engine, week_copy, run_copy, rendered))
            engine.dispose()
        finally:
            _drop(args)
    rows = len(playlists) * args.length
    figures = {
        "database": args.database,
        "listeners": args.listeners,
        "playlist_tracks": rows,
        "chunk": args.chunk,
        "publish_s": statistics.median(w for w, _ in ours),
        "publish_cpu_s": statistics.median(c for _, c in ours),
        "copy_publish_s": statistics.median(w for w, _ in bare),
        "copy_publish_cpu_s": statistics.median(c for _, c in bare),
    }
    figures["ratio"] = figures["copy_publish_s"] / figures["publish_s"]
    print(
        f"{args.database}: {args.listeners} playlists x {args.length} tracks in chunks of "
        f"{args.chunk}, median of {args.repeats}"
    )
    print("| writer | s | CPU s (this process) | rows/s |")
    print("|---|---:|---:|---:|")
    for name, wall, cpu in (
        ("replace_week_playlists", figures["publish_s"], figures["publish_cpu_s"]),
        ("bare COPY of the same rows", figures["copy_publish_s"], figures["copy_publish_cpu_s"]),
    ):
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rows / wall:,.0f} |")
    print(f"ours reaches {figures['ratio']:.2f}x the bare COPY (target 0.8)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

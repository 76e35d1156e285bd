"""Small hand-built worlds with a known answer, written in the data contract's format."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

BASE_TIME = dt.datetime(2026, 10, 5, 12, 0, tzinfo=dt.UTC)
WEEK = dt.date(2026, 11, 16)


@dataclass
class World:
    artists: list[dict[str, Any]]
    tracks: list[dict[str, Any]]
    plays: list[dict[str, Any]]
    thumbs: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] | None = None
    group_of_user: dict[str, str] = field(default_factory=dict)
    group_of_track: dict[str, str] = field(default_factory=dict)

    def write(self, root: Path, fmt: str = "parquet") -> Path:
        """Write the world under ``root`` as ``parquet``, ``csv`` or ``jsonl`` files."""
        (root / "catalog").mkdir(parents=True, exist_ok=True)
        tables = {
            root / "catalog" / "artists": self.artists,
            root / "catalog" / "tracks": self.tracks,
            root / "events" / "plays" / "part-0": self.plays,
            root / "events" / "thumbs" / "part-0": self.thumbs,
        }
        if self.users is not None:
            tables[root / "catalog" / "users"] = self.users
        for stem, rows in tables.items():
            stem.parent.mkdir(parents=True, exist_ok=True)
            write_rows(stem, rows, fmt)
        return root


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def write_rows(stem: Path, rows: list[dict[str, Any]], fmt: str) -> Path:
    path = stem.with_suffix(f".{fmt}")
    if fmt == "jsonl":
        path.write_text(
            "".join(json.dumps({k: _plain(v) for k, v in r.items()}) + "\n" for r in rows)
        )
        return path
    if fmt == "csv":
        plain = [{k: _plain(v) for k, v in r.items() if not isinstance(v, list)} for r in rows]
        if plain:
            pacsv.write_csv(pa.Table.from_pylist(plain), path)
        else:
            path.write_text("user_id,track_id,rated_at,value\n")
        return path
    table = (
        pa.Table.from_pylist(rows)
        if rows
        else pa.table(
            {
                "user_id": pa.array([], pa.string()),
                "track_id": pa.array([], pa.string()),
                "rated_at": pa.array([], pa.timestamp("us", tz="UTC")),
                "value": pa.array([], pa.int32()),
            }
        )
    )
    pq.write_table(table, path)
    return path


def two_taste_groups(
    listeners_per_group: int = 60,
    artists_per_group: int = 10,
    tracks_per_artist: int = 2,
    plays_per_listener: int = 6,
    seed: int = 0,
) -> World:
    """Two listener groups with disjoint tastes: group A only plays A artists, B only B.

    The known answer: every playlist holds only tracks of the listener's own group. The
    world has rank 2, so a 2-factor model finds it; with many more factors than a group has
    tracks, ALS can memorise each listener and the answer is no longer clean.
    """
    rng = np.random.default_rng(seed)
    world = World(artists=[], tracks=[], plays=[])
    for group in ("A", "B"):
        group_tracks = []
        for a in range(artists_per_group):
            artist_id = f"{group.lower()}rt{a:02d}"
            world.artists.append({"artist_id": artist_id, "name": f"Artist {group}{a}"})
            for t in range(tracks_per_artist):
                track_id = f"{group.lower()}{a:02d}{t}"
                world.tracks.append(
                    {
                        "track_id": track_id,
                        "title": f"Song {group}{a}.{t}",
                        "artist_id": artist_id,
                        "duration_ms": 200_000,
                    }
                )
                world.group_of_track[track_id] = group
                group_tracks.append(track_id)
        for u in range(listeners_per_group):
            user_id = f"{group.lower()}user{u:02d}"
            world.group_of_user[user_id] = group
            # Popularity inside the group is skewed so that ALS has structure to learn.
            weights = 1.0 / np.arange(1, len(group_tracks) + 1)
            picks = rng.choice(
                len(group_tracks), size=plays_per_listener, replace=False, p=weights / weights.sum()
            )
            for k, pick in enumerate(picks):
                world.plays.append(
                    {
                        "user_id": user_id,
                        "track_id": group_tracks[pick],
                        "played_at": BASE_TIME + dt.timedelta(hours=int(k) + u),
                        "ms_played": 180_000,
                    }
                )
    return world


def publish_week_playlists(session: Any, week: dt.date, model_version: str, playlists: list) -> int:
    """Write ``playlists`` (repository.NewPlaylist) as a finished, published weekly run."""
    from recsys.db import repository

    run = repository.start_weekly_run(session, week, "test", "/nowhere")
    run.model_version = model_version
    session.flush()
    repository.replace_week_playlists(session, week, model_version, playlists, run.id)
    repository.publish_week(session, run.id)
    repository.end_weekly_run(session, run.id, "succeeded")
    return int(run.id)


def factor_model(user_factors: Any, item_factors: Any, user_ids: Any, track_ids: Any) -> Any:
    """An :class:`recsys.als.ALSModel` of given factors (a known-answer recommender)."""
    from recsys.als import ALSModel, ALSParams

    items = np.asarray(item_factors, dtype=np.float32)
    return ALSModel(
        np.asarray(user_factors, dtype=np.float32),
        items,
        np.asarray(user_ids, dtype=str),
        np.asarray(track_ids, dtype=str),
        ALSParams(factors=items.shape[1]),
        fingerprint="given factors",
    )


def fresh_week(settings: Any, week_start: dt.date) -> Any:
    """The staged week's newest aggregation read afresh (tests rewrite aggregates in place,
    which the per-process cache of :func:`jobs.week.open_week` would not notice)."""
    from jobs.week import PlaylistPolicy, Storage, read_week

    storage = Storage.of(settings)
    key = storage.resolve(week_start)
    return read_week(storage.paths(week_start, key), PlaylistPolicy.of(settings), week_start, key)


def train_staged(settings: Any, week_start: dt.date) -> tuple[Any, Any]:
    """(week, model): the staged week trained and recorded as the weekly run's train step does."""
    from jobs.db import sessions
    from jobs.training import ResolvedParams, train_week

    week = fresh_week(settings, week_start)
    resolved = ResolvedParams.of(settings)
    return week, train_week(week, resolved, sessions(settings), settings.models_dir)

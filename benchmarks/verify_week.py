"""Check a week's playlists through the JSON API against the raw data directory.

    python benchmarks/verify_week.py --data DIR --week YYYY-MM-DD

Uses the same CRATEDIGGER_* settings as the service. For every listener with at least one
valid event before the week it asks `GET /api/v1/users/<id>/playlists/latest` (Flask test
client) and counts violations: not exactly the playlist length, a track the listener played
or thumbed before the week, more than the artist cap, a track missing from the catalog, a
playlist of another week. Prints one line per check and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from recsys.contract import parse_week
from recsys.db.tokens import create_token, revoke_token
from recsys.settings import load_settings
from webapp import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--week", type=parse_week, required=True)
    args = parser.parse_args(argv)
    settings = load_settings()
    # What each listener knew before the week, read from the raw event files themselves
    # (Parquet), independently of the pipeline's aggregates.
    cutoff = dt.datetime.combine(args.week, dt.time(), tzinfo=dt.UTC)
    known: dict[str, set[str]] = {}
    for kind, column in (("plays", "played_at"), ("thumbs", "rated_at")):
        folder = args.data / "events" / kind
        if not folder.exists():
            continue
        events = ds.dataset(folder, format="parquet").to_table(
            columns=["user_id", "track_id"], filter=pc.field(column) < cutoff
        )
        users, tracks = events.column("user_id").to_pylist(), events.column("track_id").to_pylist()
        for user_id, track_id in zip(users, tracks, strict=True):
            known.setdefault(user_id, set()).add(track_id)
    catalog = pq.read_table(sorted((args.data / "catalog").glob("tracks.*"))[0]).to_pylist()
    artist_of = {row["track_id"]: row["artist_id"] for row in catalog}

    # Read as an operator (operators may read every listener's playlists), with a token
    # that is revoked when the check ends.
    app = create_app(dev=True)
    with app.extensions["cratedigger"]["sessions"].begin() as session:
        token_row, token = create_token(session, operator=True, label="verify_week")
        token_id = token_row.id
    client = app.test_client()
    failures: Counter[str] = Counter()
    listeners = 0
    for user_id in sorted(known):
        if not any(track in artist_of for track in known[user_id]):
            continue  # only events of unknown tracks: no valid history
        listeners += 1
        response = client.get(
            f"/api/v1/users/{user_id}/playlists/latest",
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code != 200:
            failures["no playlist"] += 1
            continue
        document = response.get_json()
        tracks = [t["track_id"] for t in document["tracks"]]
        failures["wrong week"] += document["week_start"] != args.week.isoformat()
        failures["not exactly the playlist length"] += len(tracks) != settings.playlist_length
        failures["duplicate track"] += len(set(tracks)) != len(tracks)
        failures["played or thumbed before"] += bool(known[user_id] & set(tracks))
        failures["not in catalog"] += any(t not in artist_of for t in tracks)
        per_artist = Counter(artist_of.get(t) for t in tracks)
        failures["over the artist cap"] += (
            max(per_artist.values(), default=0) > settings.max_tracks_per_artist
        )
    with app.extensions["cratedigger"]["sessions"].begin() as session:
        revoke_token(session, token_id)
    print(f"{listeners} listeners with history checked through the API, week {args.week}")
    for check in (
        "no playlist",
        "wrong week",
        "not exactly the playlist length",
        "duplicate track",
        "played or thumbed before",
        "not in catalog",
        "over the artist cap",
    ):
        print(f"  {check}: {failures[check]} listeners")
    return 1 if sum(failures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Convert HetRec 2011 Last.fm 2K into a data directory of the contract (``recsys.contract``).

Usage::

    python benchmarks/convert_hetrec.py --source ../shared/datasets/hetrec2011-lastfm-2k \\
        --out /tmp/hetrec-data

HetRec's items are artists, not tracks, and it has play *counts*, not play events. The
mapping is:

* every artist ``<id>`` becomes artist ``a<id>`` (its name, or ``artist <id>`` when the
  name is blank) and one track ``t<id>`` by it: title = the artist's name,
  ``duration_ms`` = 240000, ``tags`` = the artist's most-used tag names (by number of
  tag assignments, ties by tag id; at most 20; empty when untagged); no ``released_at``
  and no ``embedding``;
* every listener ``<id>`` becomes ``u<id>`` in ``catalog/users.parquet``;
* every (listener, artist, weight) of ``user_artists.dat`` becomes
  ``ceil(log2(1 + weight))`` play rows, all completed (``ms_played`` = 240000). The
  mapping is compressive on purpose: the raw counts sum to about 69 M plays (max
  352,698 for one pair), which would swamp the aggregation with a handful of heavy
  pairs; the logarithm keeps the ordering of a listener's artists while bounding one
  pair to at most 19 rows (about 0.78 M rows in all);
* the plays of a pair fall on one day: the earliest day the listener tagged that artist
  (``user_taggedartists.dat``), clamped to 2005-01-01..2011-12-31, or otherwise a
  pseudo-random day in [2005-08-01, 2011-05-01) drawn from a fixed seed. Within the
  day the plays are spread over distinct, increasing times, so no two rows are
  duplicates;
* there are no thumbs: ``events/thumbs/part-00000.parquet`` is written empty with the
  right schema.

The output is deterministic. Files are read as UTF-8 with undecodable bytes replaced
(``tags.dat`` holds some Latin-1). The dataset is licensed for non-commercial use and
must not be copied into the project, so the script refuses to write inside the
repository.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.contract import PLAYS, THUMBS

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 20110501
DURATION_MS = 240_000
MAX_TAGS = 20
DAY_US = 86_400 * 1_000_000
_EPOCH = dt.date(1970, 1, 1)
TAG_DAY_MIN = (dt.date(2005, 1, 1) - _EPOCH).days
TAG_DAY_MAX = (dt.date(2011, 12, 31) - _EPOCH).days
RANDOM_DAY_MIN = (dt.date(2005, 8, 1) - _EPOCH).days
RANDOM_DAY_END = (dt.date(2011, 5, 1) - _EPOCH).days  # exclusive

TRACK_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("title", pa.string()),
        ("artist_id", pa.string()),
        ("duration_ms", pa.int64()),
        ("tags", pa.list_(pa.string())),
    ]
)


def _read(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    """Read one tab-separated HetRec file with a header line."""
    frame = pd.read_csv(
        path,
        sep="\t",
        encoding="utf-8",
        encoding_errors="replace",
        quoting=csv.QUOTE_NONE,
        usecols=list(dtypes),
        dtype=dtypes,
        keep_default_na=False,
    )
    return frame


def _check_out(out: Path) -> Path:
    resolved = out.resolve()
    if resolved == REPO_ROOT or REPO_ROOT in resolved.parents:
        raise ValueError(
            f"refusing to write into the repository tree ({resolved} is inside {REPO_ROOT}): "
            "the HetRec licence forbids copying the dataset into the project"
        )
    if resolved.exists() and not resolved.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    for sub in ("catalog", "events"):
        if (resolved / sub).exists():
            raise ValueError(f"{out} already contains {sub}/; choose an empty directory")
    return resolved


def _bit_length(values: np.ndarray) -> np.ndarray:
    """``ceil(log2(1 + v))`` for non-negative integers, computed exactly."""
    powers = np.left_shift(np.int64(1), np.arange(63, dtype=np.int64))
    return np.searchsorted(powers, values, side="right").astype(np.int64)


def convert_hetrec(source: Path, out: Path) -> dict[str, int | str]:
    """Convert the HetRec 2011 Last.fm 2K folder ``source`` into a data directory ``out``.

    Parameters
    ----------
    source : Path
        Folder holding ``artists.dat``, ``tags.dat``, ``user_artists.dat`` and
        ``user_taggedartists.dat``.
    out : Path
        Output data directory, outside the repository; created if missing, must not
        already hold ``catalog/`` or ``events/``.

    Returns
    -------
    dict
        Counts: ``users``, ``artists``, ``tracks``, ``tagged_tracks``, ``pairs``,
        ``pairs_with_tag_date``, ``plays``, ``raw_play_count``, ``thumbs`` and ``out``.

    Raises
    ------
    FileNotFoundError
        If a source file is missing.
    ValueError
        If ``out`` is inside the repository or already holds a data directory.
    """
    source = Path(source)
    out = _check_out(Path(out))
    for name in ("artists.dat", "tags.dat", "user_artists.dat", "user_taggedartists.dat"):
        if not (source / name).is_file():
            raise FileNotFoundError(f"{source / name} not found")

    artists = _read(source / "artists.dat", {"id": "int64", "name": "string"})
    tags = _read(source / "tags.dat", {"tagID": "int64", "tagValue": "string"})
    listens = _read(
        source / "user_artists.dat", {"userID": "int64", "artistID": "int64", "weight": "int64"}
    )
    tagged = _read(
        source / "user_taggedartists.dat",
        {
            "userID": "int64",
            "artistID": "int64",
            "tagID": "int64",
            "day": "int64",
            "month": "int64",
            "year": "int64",
        },
    )

    # Catalog: every artist named in artists.dat or listened to; one track per artist.
    names = dict(zip(artists["id"].tolist(), artists["name"].str.strip().tolist(), strict=True))
    artist_ids = sorted(set(names) | set(listens["artistID"].tolist()))
    artist_names = [names.get(a) or f"artist {a}" for a in artist_ids]

    tag_names = dict(
        zip(tags["tagID"].tolist(), tags["tagValue"].str.strip().tolist(), strict=True)
    )
    counts = (
        tagged[tagged["tagID"].isin(tag_names)]
        .groupby(["artistID", "tagID"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["artistID", "n", "tagID"], ascending=[True, False, True])
    )
    counts = counts[counts.groupby("artistID").cumcount() < MAX_TAGS]
    counts["tag"] = counts["tagID"].map(tag_names)
    counts = counts[counts["tag"] != ""]
    top_tags: dict[int, list[str]] = (
        counts.groupby("artistID", sort=False)["tag"].agg(list).to_dict()
    )
    track_tags = [top_tags.get(a, []) for a in artist_ids]

    a_ids = [f"a{a}" for a in artist_ids]
    t_ids = [f"t{a}" for a in artist_ids]
    catalog = out / "catalog"
    plays_dir = out / "events" / "plays"
    thumbs_dir = out / "events" / "thumbs"
    for folder in (catalog, plays_dir, thumbs_dir):
        folder.mkdir(parents=True, exist_ok=False)
    pq.write_table(
        pa.table({"artist_id": a_ids, "name": artist_names}), catalog / "artists.parquet"
    )
    pq.write_table(
        pa.table(
            [
                pa.array(t_ids, pa.string()),
                pa.array(artist_names, pa.string()),
                pa.array(a_ids, pa.string()),
                pa.array(np.full(len(t_ids), DURATION_MS, dtype=np.int64)),
                pa.array(track_tags, pa.list_(pa.string())),
            ],
            schema=TRACK_SCHEMA,
        ),
        catalog / "tracks.parquet",
    )
    user_ids = sorted(set(listens["userID"].tolist()) | set(tagged["userID"].tolist()))
    pq.write_table(
        pa.table({"user_id": pa.array([f"u{u}" for u in user_ids], pa.string())}),
        catalog / "users.parquet",
    )

    # Pair day: the earliest tag day (clamped), else a seeded pseudo-random day.
    tag_day = pd.to_datetime(tagged[["year", "month", "day"]], errors="coerce")
    tagged = tagged.assign(epoch_day=(tag_day - pd.Timestamp("1970-01-01")).dt.days)
    first_day = (
        tagged.dropna(subset=["epoch_day"]).groupby(["userID", "artistID"])["epoch_day"].min()
    )
    pairs = (
        listens.merge(first_day.reset_index(), on=["userID", "artistID"], how="left")
        .sort_values(["userID", "artistID"], kind="stable")
        .reset_index(drop=True)
    )
    day = pairs["epoch_day"].to_numpy(dtype=float)
    has_tag = ~np.isnan(day)
    rng = np.random.default_rng(SEED)
    random_day = rng.integers(RANDOM_DAY_MIN, RANDOM_DAY_END, size=len(pairs))
    pair_day = np.where(
        has_tag, np.clip(np.nan_to_num(day), TAG_DAY_MIN, TAG_DAY_MAX), random_day
    ).astype(np.int64)

    weight = pairs["weight"].to_numpy(dtype=np.int64)
    n_rows = _bit_length(np.maximum(weight, 0))
    row_pair = np.repeat(np.arange(len(pairs)), n_rows)
    starts = np.concatenate(([0], np.cumsum(n_rows)[:-1]))
    k = np.arange(len(row_pair)) - starts[row_pair]
    slot = DAY_US // max(int(n_rows.max(initial=1)), 1)
    played_us = pair_day[row_pair] * DAY_US + k * slot + rng.integers(0, slot, size=len(k))

    user_col = pa.array(["u" + str(u) for u in pairs["userID"].tolist()], pa.string())
    track_col = pa.array(["t" + str(a) for a in pairs["artistID"].tolist()], pa.string())
    order = np.lexsort((played_us, pairs["userID"].to_numpy()[row_pair]))
    plays = pa.table(
        [
            user_col.take(pa.array(row_pair[order])),
            track_col.take(pa.array(row_pair[order])),
            pa.array(played_us[order].astype("datetime64[us]"), pa.timestamp("us", tz="UTC")),
            pa.array(np.full(len(order), DURATION_MS, dtype=np.int64)),
        ],
        schema=PLAYS.schema,
    )
    pq.write_table(plays, plays_dir / "part-00000.parquet")
    pq.write_table(THUMBS.schema.empty_table(), thumbs_dir / "part-00000.parquet")

    return {
        "users": len(user_ids),
        "artists": len(artist_ids),
        "tracks": len(t_ids),
        "tagged_tracks": sum(1 for t in track_tags if t),
        "pairs": len(pairs),
        "pairs_with_tag_date": int(has_tag.sum()),
        "plays": plays.num_rows,
        "raw_play_count": int(weight.sum()),
        "thumbs": 0,
        "out": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, required=True, help="folder of the HetRec 2011 Last.fm 2K .dat files"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output data directory (outside the repository)"
    )
    args = parser.parse_args(argv)
    try:
        counts = convert_hetrec(args.source, args.out)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    print(
        f"hetrec -> {counts['out']}: {counts['users']} users, {counts['tracks']} tracks "
        f"({counts['tagged_tracks']} tagged), {counts['pairs']} listener-artist pairs "
        f"({counts['pairs_with_tag_date']} dated by tags), {counts['plays']} play rows "
        f"from {counts['raw_play_count']} raw plays, 0 thumbs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

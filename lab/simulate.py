"""A seeded listening-world simulator that writes a data directory in the contract's format.

The simulated world has genres, artists, tracks with content embeddings and tags,
and listeners with a latent taste over genres who play and rate tracks during the
``weeks`` before ``end``. Everything is vectorised numpy and streams listeners in
chunks, so memory is bounded by the chunk size rather than the number of events.

Layout written (all Parquet, see :mod:`recsys.contract`)::

    catalog/artists.parquet        artist_id, name
    catalog/tracks.parquet         track_id, title, artist_id, duration_ms, released_at,
                                   embedding (fixed_size_list<float32, 32>), tags
    catalog/users.parquet          user_id, display_name
    events/plays/part-NNNNN.parquet    one file per chunk of listeners
    events/thumbs/part-NNNNN.parquet   one file per chunk of listeners (maybe empty)
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from recsys.contract import MAX_MS_PLAYED, PLAYS, THUMBS

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 32
#: Fraction of the catalog released in the last 7 days before ``end`` (never played).
NEW_TRACK_FRACTION = 0.05
#: Zipf exponent of track popularity.
ZIPF_EXPONENT = 1.0
#: Dirichlet concentration of a listener's taste over genres (small = focused).
TASTE_ALPHA = 0.25
#: Share of a listener's taste spread uniformly over all genres (lets off-taste picks happen).
TASTE_FLOOR = 0.05
#: Dirichlet concentration of a listener's taste over moods (the sub-genre prefixes, shared
#: across genres: a listener who likes "dark" music likes dark techno and dark folk).
MOOD_ALPHA = 0.2
#: Share of a listener's mood taste spread uniformly over all moods.
MOOD_FLOOR = 0.05
#: Mean number of tracks per artist.
MEAN_TRACKS_PER_ARTIST = 8
#: Average plays per distinct (listener, track) pair; converts activity into picks.
MEAN_PLAYS_PER_PAIR = 1.95
#: Share of listened pairs that get a thumb.
THUMB_RATE = 0.04

ARTIST_SCHEMA = pa.schema([("artist_id", pa.string()), ("name", pa.string())])
USER_SCHEMA = pa.schema([("user_id", pa.string()), ("display_name", pa.string())])
TRACK_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("title", pa.string()),
        ("artist_id", pa.string()),
        ("duration_ms", pa.int64()),
        ("released_at", pa.date32()),
        ("embedding", pa.list_(pa.float32(), EMBEDDING_DIM)),
        ("tags", pa.list_(pa.string())),
        ("album", pa.string()),
    ]
)

#: Kinds of bad play rows, injected round-robin (see :func:`simulate_world`).
PLAY_CORRUPTIONS = (
    "unknown_track",
    "negative_ms_played",
    "ms_played_over_24h",
    "played_after_end",
    "played_in_1999",
    "duplicate",
)
#: Kinds of bad thumb rows, injected round-robin.
THUMB_CORRUPTIONS = ("thumb_value_0", "thumb_value_5")

GENRE_WORDS = (
    "ambient", "blues", "bossa nova", "breakbeat", "chiptune", "classical", "country",
    "cumbia", "dancehall", "disco", "drum and bass", "dub", "dubstep", "electro", "emo",
    "folk", "funk", "garage", "gospel", "grime", "grunge", "hip hop", "house", "indie pop",
    "jazz", "k-pop", "metal", "new wave", "noise", "post-rock", "punk", "r&b", "reggae",
    "reggaeton", "shoegaze", "ska", "soul", "synthwave", "techno", "trance",
)  # fmt: skip
SUBGENRE_PREFIXES = (
    "dark", "lo-fi", "melodic", "experimental", "classic", "modern", "acoustic",
    "psychedelic", "minimal", "progressive", "atmospheric", "raw",
)  # fmt: skip
SUBGENRES_PER_GENRE = 4
ADJECTIVES = (
    "Amber", "Broken", "Crimson", "Distant", "Electric", "Fading", "Golden", "Hollow",
    "Ivory", "Jagged", "Lunar", "Midnight", "Neon", "Opal", "Paper", "Quiet", "Restless",
    "Silver", "Tender", "Velvet", "Wild", "Young", "Cold", "Burning", "Secret", "Little",
    "Endless", "Northern", "Sleeping", "Wandering",
)  # fmt: skip
NOUNS = (
    "Harbor", "Echo", "Garden", "Horizon", "Mirror", "Ocean", "Signal", "Thunder", "River",
    "Satellite", "Window", "Forest", "Lantern", "Engine", "Desert", "Avenue", "Comet",
    "Fever", "Island", "Machine", "Orchard", "Parade", "Season", "Tide", "Valley", "Wolves",
    "Cathedral", "Motel", "Static", "Heart",
)  # fmt: skip

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)
_DAY_US = 86_400 * 1_000_000
_Y1999_US = (dt.datetime(1999, 1, 1, tzinfo=dt.UTC) - _EPOCH) // _US
_Y2000_US = (dt.datetime(2000, 1, 1, tzinfo=dt.UTC) - _EPOCH) // _US

# Independent random streams: SeedSequence(seed, spawn_key=(stream, ...)).
_STREAM_CATALOG = 0
_STREAM_CHUNK = 1


@dataclass(frozen=True)
class SimulationSummary:
    """What :func:`simulate_world` wrote.

    Attributes
    ----------
    out_dir : Path
        The data directory.
    users, artists, tracks : int
        Catalog sizes.
    new_tracks : int
        Tracks released in the 7 days before ``end``; they have no events.
    plays, thumbs : int
        Rows written to ``events/plays`` and ``events/thumbs``, corrupted rows included.
    corrupted_rows : int
        Injected bad rows over plays and thumbs (duplicates included).
    start, end : datetime
        The simulated window ``[start, end)`` in UTC; clean events fall inside it.
    """

    out_dir: Path
    users: int
    artists: int
    tracks: int
    new_tracks: int
    plays: int
    thumbs: int
    corrupted_rows: int
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class _Catalog:
    """The in-memory catalog the listener chunks sample from.

    A *style* is a (genre, mood) pair, numbered ``genre * len(SUBGENRE_PREFIXES) + mood``;
    a track's mood is the prefix of its artist's sub-genre (its second tag).
    """

    track_ids: pa.Array
    track_genre: np.ndarray  # int64 per track
    duration_ms: np.ndarray  # int64 per track
    n_genres: int
    # Sampling structures over the playable (not new) tracks, ordered by style.
    active_styles: np.ndarray  # style ids with playable tracks
    style_mass: np.ndarray  # popularity mass of each active style
    style_lo: np.ndarray  # first position of each active style in the sorted arrays
    style_hi: np.ndarray  # one past the last position
    sorted_tracks: np.ndarray  # playable track indices ordered by style
    sorted_cumpop: np.ndarray  # cumulative popularity along sorted_tracks
    playable: int


# --------------------------------------------------------------------------- helpers


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _ids(prefix: str, start: int, stop: int, width: int) -> pa.Array:
    """``prefix`` + zero-padded numbers ``start..stop-1`` as an Arrow string array."""
    numbers = pc.cast(pa.array(np.arange(start, stop, dtype=np.int64)), pa.string())
    padded = pc.utf8_lpad(numbers, width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), padded, "")


def _words(
    first: tuple[str, ...], second: tuple[str, ...], i: np.ndarray, j: np.ndarray, sep: str = " "
) -> pa.Array:
    return pc.binary_join_element_wise(
        pa.array(first).take(pa.array(i)), pa.array(second).take(pa.array(j)), sep
    )


def _albums(track_artist: np.ndarray, release_us: np.ndarray) -> pa.Array:
    """An album name per track: one album per artist and release year, named from the
    artist and the year (no random draws: the rest of the world stays as it was)."""
    year = release_us // (_DAY_US * 365)
    key = track_artist.astype(np.int64) * 7919 + year.astype(np.int64) * 104729
    return _words(ADJECTIVES, NOUNS, key % len(ADJECTIVES), (key // 31) % len(NOUNS))


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype("datetime64[us]"), type=pa.timestamp("us", tz="UTC"))


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="snappy")


# --------------------------------------------------------------------------- catalog


def _build_catalog(
    root: Path, *, tracks: int, seed: int, start_us: int, end_us: int
) -> tuple[_Catalog, int, int]:
    """Write ``catalog/artists.parquet`` and ``catalog/tracks.parquet``.

    Returns the sampling catalog, the number of artists and the number of new tracks.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_CATALOG,)))
    n_genres = min(len(GENRE_WORDS), max(8, tracks // 1000))

    # Artists and their track counts: 1 + geometric, mean MEAN_TRACKS_PER_ARTIST.
    sizes_parts: list[np.ndarray] = []
    total = 0
    while total < tracks:
        part = rng.geometric(1.0 / MEAN_TRACKS_PER_ARTIST, size=tracks // 4 + 8)
        sizes_parts.append(part)
        total += int(part.sum())
    sizes = np.concatenate(sizes_parts)
    n_artists = int(np.searchsorted(np.cumsum(sizes), tracks)) + 1
    sizes = sizes[:n_artists].copy()
    sizes[-1] -= int(sizes.sum()) - tracks
    track_artist = np.repeat(np.arange(n_artists), sizes)

    genre_share = rng.dirichlet(np.full(n_genres, 3.0))
    artist_genre = rng.choice(n_genres, size=n_artists, p=genre_share)
    artist_sub = rng.integers(0, SUBGENRES_PER_GENRE, size=n_artists)
    track_genre = artist_genre[track_artist]

    # Content embeddings: genre centroid + artist offset + track noise, L2-normalised.
    centroids = rng.standard_normal((n_genres, EMBEDDING_DIM))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    scale = 1.0 / math.sqrt(EMBEDDING_DIM)
    artist_offset = rng.standard_normal((n_artists, EMBEDDING_DIM)) * (0.5 * scale)
    noise = rng.standard_normal((tracks, EMBEDDING_DIM)) * (0.35 * scale)
    emb = centroids[track_genre] + artist_offset[track_artist] + noise
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb.astype(np.float32)

    # Tags: genre name, the artist's sub-genre, and sometimes a second sub-genre.
    sub_prefix = np.stack(
        [
            rng.choice(len(SUBGENRE_PREFIXES), SUBGENRES_PER_GENRE, replace=False)
            for _ in range(n_genres)
        ]
    )
    genre_words = np.array(GENRE_WORDS[:n_genres], dtype=object)
    vocab = list(genre_words) + [
        f"{SUBGENRE_PREFIXES[sub_prefix[g, s]]} {genre_words[g]}"
        for g in range(n_genres)
        for s in range(SUBGENRES_PER_GENRE)
    ]
    first_sub = artist_sub[track_artist]
    extra = rng.random(tracks) < 0.5
    second_sub = (first_sub + rng.integers(1, SUBGENRES_PER_GENRE, size=tracks)) % (
        SUBGENRES_PER_GENRE
    )
    n_tags = 2 + extra.astype(np.int64)
    offsets = np.zeros(tracks + 1, dtype=np.int32)
    np.cumsum(n_tags, out=offsets[1:])
    tag_idx = np.empty(int(offsets[-1]), dtype=np.int64)
    tag_idx[offsets[:-1]] = track_genre
    tag_idx[offsets[:-1] + 1] = n_genres + track_genre * SUBGENRES_PER_GENRE + first_sub
    tag_idx[offsets[:-1][extra] + 2] = (
        n_genres + track_genre[extra] * SUBGENRES_PER_GENRE + second_sub[extra]
    )
    tags = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(vocab, pa.string()).take(pa.array(tag_idx))
    )

    duration = np.clip(rng.lognormal(math.log(215_000), 0.25, size=tracks), 60_000, 600_000).astype(
        np.int64
    )

    # Release dates: NEW_TRACK_FRACTION in the 7 days before end, the rest before the window.
    n_new = max(1, round(NEW_TRACK_FRACTION * tracks))
    is_new = np.zeros(tracks, dtype=bool)
    is_new[rng.choice(tracks, size=n_new, replace=False)] = True
    release_us = start_us - _DAY_US - rng.integers(0, 3650 * _DAY_US, size=tracks)
    release_us[is_new] = end_us - 1 - rng.integers(0, 7 * _DAY_US, size=n_new)
    released = (release_us // _DAY_US).astype("datetime64[D]")

    # Zipf popularity over a random permutation; new tracks are never sampled.
    rank = rng.permutation(tracks)
    popularity = 1.0 / np.power(rank + 1.0, ZIPF_EXPONENT)
    popularity[is_new] = 0.0

    track_ids = _ids("t", 0, tracks, 7)
    artist_ids = _ids("a", 0, n_artists, 6)
    titles = _words(
        ADJECTIVES,
        NOUNS,
        rng.integers(0, len(ADJECTIVES), tracks),
        rng.integers(0, len(NOUNS), tracks),
    )
    names = pc.binary_join_element_wise(
        pa.scalar("The"),
        _words(
            ADJECTIVES,
            NOUNS,
            rng.integers(0, len(ADJECTIVES), n_artists),
            rng.integers(0, len(NOUNS), n_artists),
        ),
        " ",
    )
    _write(
        pa.table([artist_ids, names], schema=ARTIST_SCHEMA), root / "catalog" / "artists.parquet"
    )
    track_table = pa.table(
        [
            track_ids,
            titles,
            artist_ids.take(pa.array(track_artist)),
            pa.array(duration, pa.int64()),
            pa.array(released, pa.date32()),
            pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), EMBEDDING_DIM),
            tags,
            _albums(np.asarray(track_artist), release_us),
        ],
        schema=TRACK_SCHEMA,
    )
    _write(track_table, root / "catalog" / "tracks.parquet")

    track_mood = sub_prefix[track_genre, first_sub]
    track_style = track_genre * len(SUBGENRE_PREFIXES) + track_mood
    playable_idx = np.flatnonzero(~is_new)
    order = playable_idx[np.argsort(track_style[playable_idx], kind="stable")]
    sorted_style = track_style[order]
    styles_present = np.unique(sorted_style)
    lo = np.searchsorted(sorted_style, styles_present, side="left")
    hi = np.searchsorted(sorted_style, styles_present, side="right")
    cumpop = np.cumsum(popularity[order])
    before = np.where(lo > 0, cumpop[np.maximum(lo - 1, 0)], 0.0)
    mass = cumpop[hi - 1] - before
    catalog = _Catalog(
        track_ids=track_ids,
        track_genre=track_genre,
        duration_ms=duration,
        n_genres=n_genres,
        active_styles=styles_present,
        style_mass=mass,
        style_lo=lo,
        style_hi=hi,
        sorted_tracks=order,
        sorted_cumpop=cumpop,
        playable=len(order),
    )
    return catalog, n_artists, n_new


# --------------------------------------------------------------------------- listeners


@dataclass
class _Chunk:
    """Clean events of one chunk of listeners, as index arrays (user index is chunk-local)."""

    play_user: np.ndarray
    play_track: np.ndarray
    play_us: np.ndarray
    play_ms: np.ndarray
    thumb_user: np.ndarray
    thumb_track: np.ndarray
    thumb_us: np.ndarray
    thumb_value: np.ndarray


def draw_tastes(
    rng: np.random.Generator, n_users: int, n_genres: int
) -> tuple[np.ndarray, np.ndarray]:
    """Listeners' tastes, the first draws of each chunk's random stream.

    Returns
    -------
    (genre_taste, mood_taste)
        float64 arrays (n_users, n_genres) and (n_users, len(SUBGENRE_PREFIXES)), rows
        summing to 1: Dirichlet(TASTE_ALPHA) and Dirichlet(MOOD_ALPHA) with a uniform
        floor of TASTE_FLOOR and MOOD_FLOOR.
    """
    taste = rng.dirichlet(np.full(n_genres, TASTE_ALPHA), size=n_users)
    taste = (1.0 - TASTE_FLOOR) * taste + TASTE_FLOOR / n_genres
    n_moods = len(SUBGENRE_PREFIXES)
    mood = rng.dirichlet(np.full(n_moods, MOOD_ALPHA), size=n_users)
    mood = (1.0 - MOOD_FLOOR) * mood + MOOD_FLOOR / n_moods
    return taste, mood


def _simulate_chunk(
    rng: np.random.Generator,
    cat: _Catalog,
    n_users: int,
    *,
    plays_per_user: float,
    start_us: int,
    end_us: int,
) -> _Chunk:
    """Draw the clean plays and thumbs of ``n_users`` listeners."""
    n_active = len(cat.active_styles)
    taste, mood = draw_tastes(rng, n_users, cat.n_genres)
    on_taste_threshold = 1.0 / cat.n_genres

    sigma = 0.9
    activity = rng.lognormal(math.log(plays_per_user) - sigma * sigma / 2, sigma, size=n_users)
    distinct = np.clip(np.rint(activity / MEAN_PLAYS_PER_PAIR), 1, cat.playable).astype(np.int64)
    draws = np.ceil(distinct * 2.0).astype(np.int64) + 8

    # Two-stage draw with replacement: style ∝ genre taste × mood taste × style mass, then
    # track ∝ popularity within the style.
    n_moods = len(SUBGENRE_PREFIXES)
    style_genre, style_mood = np.divmod(cat.active_styles, n_moods)
    gprob = taste[:, style_genre] * mood[:, style_mood] * cat.style_mass
    gcum = np.cumsum(gprob / gprob.sum(axis=1, keepdims=True), axis=1)
    gcum[:, -1] = 1.0
    draw_user = np.repeat(np.arange(n_users), draws)
    flat = (gcum + np.arange(n_users)[:, None]).ravel()
    pos = np.searchsorted(flat, draw_user + rng.random(len(draw_user)), side="right")
    g = np.minimum(pos - draw_user * n_active, n_active - 1)
    lo, hi = cat.style_lo[g], cat.style_hi[g]
    base = np.where(lo > 0, cat.sorted_cumpop[np.maximum(lo - 1, 0)], 0.0)
    target = base + rng.random(len(g)) * cat.style_mass[g]
    k = np.clip(np.searchsorted(cat.sorted_cumpop, target, side="right"), lo, hi - 1)
    draw_track = cat.sorted_tracks[k]

    # Keep the first `distinct` different tracks of each listener, in draw order.
    keys = draw_user * np.int64(len(cat.track_genre)) + draw_track
    _, first = np.unique(keys, return_index=True)
    first.sort()
    pair_user = draw_user[first]
    pair_track = draw_track[first]
    rank = np.arange(len(first)) - np.searchsorted(pair_user, pair_user, side="left")
    keep = rank < distinct[pair_user]
    pair_user, pair_track = pair_user[keep], pair_track[keep]
    n_pairs = len(pair_user)

    # Liking, repeats and skips: off-taste tracks are liked less, repeated less, skipped more.
    on_taste = taste[pair_user, cat.track_genre[pair_track]] >= on_taste_threshold
    liked = rng.random(n_pairs) < np.where(on_taste, 0.85, 0.3)
    repeats = rng.random(n_pairs) < np.where(liked, 0.5, 0.1)
    n_plays = 1 + repeats * rng.geometric(0.4, size=n_pairs)
    play_pair = np.repeat(np.arange(n_pairs), n_plays)
    n = len(play_pair)
    play_us = rng.integers(start_us, end_us, size=n)
    # No two clean plays of one pair share a timestamp (so exact duplicates are all injected).
    while True:
        order = np.lexsort((play_us, play_pair))
        same = (np.diff(play_pair[order]) == 0) & (np.diff(play_us[order]) == 0)
        if not same.any():
            break
        clash = order[1:][same]
        play_us[clash] = rng.integers(start_us, end_us, size=len(clash))
    completed = rng.random(n) < np.where(liked[play_pair], 0.9, 0.2)
    duration = cat.duration_ms[pair_track[play_pair]]
    full = (rng.uniform(0.7, 1.0, size=n) * duration).astype(np.int64)
    skip = rng.integers(1_000, 25_001, size=n)
    play_ms = np.where(completed, full, skip)

    # Thumbs on a few % of pairs: +1 mostly when the plays completed, -1 mostly on skips.
    starts = np.concatenate(([0], np.cumsum(n_plays)[:-1]))
    first_us = np.minimum.reduceat(play_us, starts)
    completion = np.add.reduceat(completed.astype(np.float64), starts) / n_plays
    rated = rng.random(n_pairs) < THUMB_RATE
    p_plus = 0.05 + 0.9 * completion[rated]
    value = np.where(rng.random(int(rated.sum())) < p_plus, 1, -1).astype(np.int32)
    span = end_us - first_us[rated] - 1
    thumb_us = first_us[rated] + 1 + (rng.random(len(span)) * span).astype(np.int64)
    thumb_us = np.minimum(thumb_us, end_us - 1)

    return _Chunk(
        play_user=pair_user[play_pair],
        play_track=pair_track[play_pair],
        play_us=play_us,
        play_ms=play_ms,
        thumb_user=pair_user[rated],
        thumb_track=pair_track[rated],
        thumb_us=thumb_us,
        thumb_value=value,
    )


def _write_chunk_events(
    root: Path,
    index: int,
    chunk: _Chunk,
    cat: _Catalog,
    user_ids: pa.Array,
    play_bad: np.ndarray,
    thumb_bad: np.ndarray,
    bad_offset: int,
    rng: np.random.Generator,
    start_us: int,
    end_us: int,
) -> tuple[int, int]:
    """Spoil copies of clean rows as asked, write the chunk's part files; return row counts.

    ``play_bad`` and ``thumb_bad`` hold corruption kinds (indices into
    :data:`PLAY_CORRUPTIONS` and :data:`THUMB_CORRUPTIONS`) of the rows to add.
    """
    n_clean = len(chunk.play_user)
    src = rng.integers(0, n_clean, size=len(play_bad))
    b_user = chunk.play_user[src]
    b_track = chunk.play_track[src].copy()
    b_us = chunk.play_us[src].copy()
    b_ms = chunk.play_ms[src].copy()
    fresh = rng.integers(start_us, end_us, size=len(play_bad))
    kind = play_bad
    unknown = kind == PLAY_CORRUPTIONS.index("unknown_track")
    n_tracks = len(cat.track_genre)
    b_track[unknown] = n_tracks + np.arange(int(unknown.sum()))
    for name in ("unknown_track", "negative_ms_played", "ms_played_over_24h"):
        mask = kind == PLAY_CORRUPTIONS.index(name)
        b_us[mask] = fresh[mask]
    mask = kind == PLAY_CORRUPTIONS.index("negative_ms_played")
    b_ms[mask] = -rng.integers(1, 300_000, size=int(mask.sum()))
    mask = kind == PLAY_CORRUPTIONS.index("ms_played_over_24h")
    b_ms[mask] = MAX_MS_PLAYED + rng.integers(1, 7 * MAX_MS_PLAYED, size=int(mask.sum()))
    mask = kind == PLAY_CORRUPTIONS.index("played_after_end")
    b_us[mask] = end_us + 1 + rng.integers(0, 30 * _DAY_US, size=int(mask.sum()))
    mask = kind == PLAY_CORRUPTIONS.index("played_in_1999")
    b_us[mask] = rng.integers(_Y1999_US, _Y2000_US, size=int(mask.sum()))

    unknown_names = [f"t-unknown-{bad_offset + i:06d}" for i in np.flatnonzero(unknown)]
    vocab = pa.concat_arrays([cat.track_ids, pa.array(unknown_names, pa.string())])

    user = np.concatenate([chunk.play_user, b_user])
    track = np.concatenate([chunk.play_track, b_track])
    us = np.concatenate([chunk.play_us, b_us])
    ms = np.concatenate([chunk.play_ms, b_ms])
    order = np.lexsort((track, us, user))
    plays = pa.table(
        [
            user_ids.take(pa.array(user[order])),
            vocab.take(pa.array(track[order])),
            _timestamps(us[order]),
            pa.array(ms[order], pa.int64()),
        ],
        schema=PLAYS.schema,
    )
    _write(plays, root / "events" / "plays" / f"part-{index:05d}.parquet")

    # Bad thumbs: a clean play's listener, track and time with a value of 0 or 5.
    tsrc = rng.integers(0, n_clean, size=len(thumb_bad))
    t_user = np.concatenate([chunk.thumb_user, chunk.play_user[tsrc]])
    t_track = np.concatenate([chunk.thumb_track, chunk.play_track[tsrc]])
    t_us = np.concatenate([chunk.thumb_us, chunk.play_us[tsrc]])
    bad_value = np.where(thumb_bad == THUMB_CORRUPTIONS.index("thumb_value_0"), 0, 5)
    t_value = np.concatenate([chunk.thumb_value, bad_value.astype(np.int32)])
    order = np.lexsort((t_track, t_us, t_user))
    thumbs = pa.table(
        [
            user_ids.take(pa.array(t_user[order], pa.int64())),
            cat.track_ids.take(pa.array(t_track[order], pa.int64())),
            _timestamps(t_us[order]),
            pa.array(t_value[order], pa.int32()),
        ],
        schema=THUMBS.schema,
    )
    _write(thumbs, root / "events" / "thumbs" / f"part-{index:05d}.parquet")
    return plays.num_rows, thumbs.num_rows


# --------------------------------------------------------------------------- public API


def simulate_world(
    out_dir: Path,
    *,
    users: int,
    tracks: int,
    seed: int,
    end: dt.datetime,
    weeks: int = 8,
    plays_per_user: float = 120.0,
    corrupt_fraction: float = 0.001,
    chunk_users: int = 5000,
    progress: bool = False,
) -> SimulationSummary:
    """Simulate a listening world and write it to ``out_dir`` in the contract's layout.

    Parameters
    ----------
    out_dir : Path
        Directory to write into; created if missing. It must not already hold
        ``catalog/`` or ``events/``.
    users : int
        Number of listeners (>= 1).
    tracks : int
        Number of tracks (>= 10).
    seed : int
        Seed (>= 0). The same arguments give byte-identical files; nothing depends on the
        wall clock.
    end : datetime
        Timezone-aware end of the simulated window (exclusive), e.g. a week's cut-off.
    weeks : int
        Length of the window in weeks (>= 1).
    plays_per_user : float
        Mean number of plays per listener (> 0).
    corrupt_fraction : float
        Share of bad rows to add, in ``[0, 0.5]``.
    chunk_users : int
        Listeners per chunk (>= 1); each chunk is one part file in ``events/plays`` and
        ``events/thumbs``, and bounds memory.
    progress : bool
        Show a tqdm progress bar over the chunks.

    Returns
    -------
    SimulationSummary
        Counts and the window.

    Raises
    ------
    ValueError
        If an argument is out of range or ``out_dir`` already holds a data directory.

    Notes
    -----
    **Generative model.**

    * ``min(40, max(8, tracks // 1000))`` genres named from a word list; artists have a
      primary genre and sub-genre and 1 + Geometric tracks (mean 8); tracks inherit the
      artist's genre. Ids are ``a000042``, ``t0000042`` and ``u0000042`` (0-based).
    * Track popularity is Zipf (exponent 1) over a random permutation of the tracks.
    * Embeddings (32 float32, L2-normalised) are genre centroid + artist offset + noise;
      tags are the genre name plus one or two of the genre's sub-genre tags.
    * About 5 % of tracks (at least one) are new: released in the 7 days before ``end``
      and never played or rated. The others were released before the window.
    * Listeners have a Dirichlet(0.25) taste over genres and a Dirichlet(0.2) taste over
      the 12 moods (the sub-genre prefixes, shared across genres: "dark", "lo-fi", ...;
      5 % of each spread uniformly), and a lognormal activity with mean
      ``plays_per_user``. A track's mood is its artist's sub-genre prefix. Each listener
      picks distinct tracks with probability ∝ taste[genre] × taste[mood] × popularity,
      so listeners with the same genres still differ, as real listeners do, and
      collaborative filtering has more to find than popularity. Liked pairs (on-taste
      genres mostly) get geometric repeat plays and mostly complete (U(0.7, 1.0) ×
      duration), other pairs mostly skip (1 s to 25 s). Clean plays are uniform in
      ``[end - weeks, end)``.
    * About 4 % of listened pairs get a thumb, +1 mostly when the pair's plays completed,
      -1 mostly when they were skipped, rated after the pair's first play and before
      ``end``.

    **Injected corruption.**

    Bad rows are *added* to the clean rows (removing them recovers the clean data),
    ``round(corrupt_fraction × clean rows)`` of them in plays and in thumbs, each a spoiled
    copy of a clean play of the same chunk, with kinds taken round-robin:

    * plays: ``unknown_track`` (track id ``t-unknown-NNNNNN``, not in the catalog),
      ``negative_ms_played`` (ms_played < 0), ``ms_played_over_24h`` (ms_played >
      24 h), ``played_after_end`` (played_at > ``end``, up to 30 days after),
      ``played_in_1999`` (played_at during 1999) and ``duplicate`` (an exact copy of a
      clean play row; clean plays never duplicate each other);
    * thumbs: ``thumb_value_0`` and ``thumb_value_5`` (value 0 or 5 on a clean play's
      listener, track and time).

    Every bad row has exactly one defect: the first three play kinds get a fresh time
    inside the window and keep the source's other valid fields, the two time kinds keep
    the source's track and ``ms_played``. Thumbs' bad rows reference catalog tracks.

    When ``corrupt_fraction > 0`` and there are at least 50 clean plays, every kind above
    appears at least once (missing kinds are topped up in the last chunk). All bad rows
    stay type-valid Parquet.
    """
    users = _check_int("users", users, 1)
    tracks = _check_int("tracks", tracks, 10)
    seed = _check_int("seed", seed, 0)
    weeks = _check_int("weeks", weeks, 1)
    chunk_users = _check_int("chunk_users", chunk_users, 1)
    if not isinstance(end, dt.datetime) or end.tzinfo is None or end.utcoffset() is None:
        raise ValueError(f"end must be a timezone-aware datetime, got {end!r}")
    if (
        isinstance(plays_per_user, bool)
        or not isinstance(plays_per_user, int | float)
        or not math.isfinite(plays_per_user)
        or plays_per_user <= 0
    ):
        raise ValueError(f"plays_per_user must be a positive number, got {plays_per_user!r}")
    if (
        isinstance(corrupt_fraction, bool)
        or not isinstance(corrupt_fraction, int | float)
        or not 0.0 <= corrupt_fraction <= 0.5
    ):
        raise ValueError(f"corrupt_fraction must be between 0 and 0.5, got {corrupt_fraction!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} exists and is not a directory")
    for sub in ("catalog", "events"):
        if (out_dir / sub).exists():
            raise ValueError(
                f"out_dir {out_dir} already contains {sub}/; refusing to mix two data "
                "directories (choose an empty directory or remove it first)"
            )

    end = end.astimezone(dt.UTC)
    start = end - dt.timedelta(weeks=weeks)
    end_us = (end - _EPOCH) // _US
    start_us = (start - _EPOCH) // _US
    n_chunks = math.ceil(users / chunk_users)
    logger.info(
        "simulating %d listeners and %d tracks over [%s, %s) in %d chunk(s) into %s",
        users,
        tracks,
        start.isoformat(),
        end.isoformat(),
        n_chunks,
        out_dir,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".simulate-", dir=out_dir))
    try:
        for sub in ("catalog", "events/plays", "events/thumbs"):
            (work / sub).mkdir(parents=True)
        cat, n_artists, n_new = _build_catalog(
            work, tracks=tracks, seed=seed, start_us=start_us, end_us=end_us
        )
        logger.info(
            "catalog: %d artists, %d tracks (%d new), %d genres",
            n_artists,
            tracks,
            n_new,
            cat.n_genres,
        )

        clean_plays = clean_thumbs = 0
        bad_plays = bad_thumbs = 0
        play_kinds = np.zeros(len(PLAY_CORRUPTIONS), dtype=np.int64)
        thumb_kinds = np.zeros(len(THUMB_CORRUPTIONS), dtype=np.int64)
        total_plays = total_thumbs = 0
        bar = tqdm(range(n_chunks), desc="simulate", unit="chunk", disable=not progress)
        with pq.ParquetWriter(
            work / "catalog" / "users.parquet", USER_SCHEMA, compression="snappy"
        ) as users_writer:
            for index in bar:
                lo = index * chunk_users
                hi = min(users, lo + chunk_users)
                rng = np.random.default_rng(
                    np.random.SeedSequence(seed, spawn_key=(_STREAM_CHUNK, index))
                )
                user_ids = _ids("u", lo, hi, 7)
                names = _words(
                    ADJECTIVES,
                    NOUNS,
                    (np.arange(lo, hi) * 7) % len(ADJECTIVES),
                    (np.arange(lo, hi) * 13 + 5) % len(NOUNS),
                    "_",
                )
                names = pc.binary_join_element_wise(
                    pc.utf8_lower(names), pc.cast(pa.array(np.arange(lo, hi)), pa.string()), ""
                )
                users_writer.write_table(pa.table([user_ids, names], schema=USER_SCHEMA))

                chunk = _simulate_chunk(
                    rng,
                    cat,
                    hi - lo,
                    plays_per_user=plays_per_user,
                    start_us=start_us,
                    end_us=end_us,
                )
                clean_plays += len(chunk.play_user)
                clean_thumbs += len(chunk.thumb_user)
                n_bad_p = round(corrupt_fraction * clean_plays) - bad_plays
                n_bad_t = round(corrupt_fraction * clean_thumbs) - bad_thumbs
                p_kinds = (bad_plays + np.arange(n_bad_p)) % len(PLAY_CORRUPTIONS)
                t_kinds = (bad_thumbs + np.arange(n_bad_t)) % len(THUMB_CORRUPTIONS)
                if index == n_chunks - 1 and corrupt_fraction > 0 and clean_plays >= 50:
                    seen_p = play_kinds + np.bincount(p_kinds, minlength=len(PLAY_CORRUPTIONS))
                    seen_t = thumb_kinds + np.bincount(t_kinds, minlength=len(THUMB_CORRUPTIONS))
                    p_kinds = np.concatenate([p_kinds, np.flatnonzero(seen_p == 0)])
                    t_kinds = np.concatenate([t_kinds, np.flatnonzero(seen_t == 0)])
                n_plays, n_thumbs = _write_chunk_events(
                    work,
                    index,
                    chunk,
                    cat,
                    user_ids,
                    p_kinds,
                    t_kinds,
                    bad_plays,
                    rng,
                    start_us,
                    end_us,
                )
                play_kinds += np.bincount(p_kinds, minlength=len(PLAY_CORRUPTIONS))
                thumb_kinds += np.bincount(t_kinds, minlength=len(THUMB_CORRUPTIONS))
                bad_plays += len(p_kinds)
                bad_thumbs += len(t_kinds)
                total_plays += n_plays
                total_thumbs += n_thumbs
                logger.debug(
                    "chunk %d: %d listeners, %d plays, %d thumbs", index, hi - lo, n_plays, n_thumbs
                )
        bar.close()
        for sub in ("catalog", "events"):
            (work / sub).rename(out_dir / sub)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = SimulationSummary(
        out_dir=out_dir,
        users=users,
        artists=n_artists,
        tracks=tracks,
        new_tracks=n_new,
        plays=total_plays,
        thumbs=total_thumbs,
        corrupted_rows=bad_plays + bad_thumbs,
        start=start,
        end=end,
    )
    logger.info(
        "wrote %d plays and %d thumbs (%d corrupted rows: plays %s, thumbs %s)",
        total_plays,
        total_thumbs,
        bad_plays + bad_thumbs,
        dict(zip(PLAY_CORRUPTIONS, play_kinds.tolist(), strict=True)),
        dict(zip(THUMB_CORRUPTIONS, thumb_kinds.tolist(), strict=True)),
    )
    return summary

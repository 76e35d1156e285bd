"""Data sets for the quality benchmark, as interaction arrays split for evaluation.

Two sources, both turned into a :class:`BenchmarkDataset` with a *test* fold (what the
reported numbers use) and a *validation* fold carved out of the test fold's training data
(what tuning may look at):

* :func:`load_hetrec` reads HetRec 2011 Last.fm 2K from its raw ``.dat`` files (never
  copied into the repository: the licence is non-commercial). Items are artists; the data
  are listener-artist play counts without timestamps, so both folds hold out 10 random
  artists per listener (:func:`recsys.evaluation.leave_k_out`, seeded). Listener tags on
  artists become the item x tag matrix for content models.
* :func:`load_simulated` runs :func:`lab.simulate.simulate_world` into a temporary folder,
  reads the Parquet files with pyarrow, drops the simulator's bad rows with the contract's
  rules as the Spark job does (:func:`validate_events`, checked against it by
  ``tests/test_contract.py``), and splits in time like the weekly run: train on events
  before a Monday cut-off two weeks before the end, test on the tracks each listener first
  played after it (:func:`recsys.evaluation.time_split`). The validation fold repeats this
  two weeks earlier on the events before the test cut-off.

Each fold carries the raw per-pair training features (plays, completed plays, skips, latest
thumb, raw count) so that confidence formulas can be compared on the same split.

Run ``python benchmarks/datasets.py`` to print a summary of both data sets.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make recsys and jobs importable
    sys.path.insert(0, str(REPO_ROOT))

from recsys.contract import (  # noqa: E402
    EARLIEST_EVENT,
    ID_COLUMNS,
    ID_PATTERN,
    TABLES,
    Check,
    Rule,
    is_completed,
)
from recsys.evaluation import Split, leave_k_out, time_split  # noqa: E402

DEFAULT_HETREC = REPO_ROOT.parent / "shared" / "datasets" / "hetrec2011-lastfm-2k"
HETREC_SEED = 20110501
HETREC_HOLDOUT = 10
SIMULATED_END = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)  # a Monday
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class PairFeatures:
    """Raw training features of every (listener, item) pair stored in ``pattern``.

    Attributes
    ----------
    pattern : scipy.sparse.csr_matrix
        float32 (n_users, n_items), sorted indices: the training pairs. The feature arrays
        follow the order of ``pattern.data``.
    plays, completed, skips : numpy.ndarray
        float64 (nnz,): plays of the pair before the cut-off, of which completed and skipped
        (HetRec: plays = completed = the play count, no skips).
    thumb : numpy.ndarray
        int8 (nnz,): the latest thumb before the cut-off, +1, -1 or 0.
    raw_count : numpy.ndarray
        float64 (nnz,): the count a team would feed a library as is (HetRec's play count,
        the simulator's plays).
    """

    pattern: sp.csr_matrix
    plays: npt.NDArray[np.float64]
    completed: npt.NDArray[np.float64]
    skips: npt.NDArray[np.float64]
    thumb: npt.NDArray[np.int8]
    raw_count: npt.NDArray[np.float64]

    def matrix(self, values: npt.ArrayLike) -> sp.csr_matrix:
        """A float32 CSR matrix with the pattern's structure and ``values`` (nnz,)."""
        data = np.asarray(values, dtype=np.float32)
        if data.shape != self.pattern.data.shape:
            raise ValueError(f"values has shape {data.shape}, pattern {self.pattern.data.shape}")
        return sp.csr_matrix(
            (data, self.pattern.indices.copy(), self.pattern.indptr.copy()),
            shape=self.pattern.shape,
        )


@dataclass(frozen=True)
class Fold:
    """One evaluation split with its training features.

    Attributes
    ----------
    split : recsys.evaluation.Split
        ``train`` (raw counts), ``test`` (binary) and the split's own ``eval_users``.
    features : PairFeatures
        Features of the pairs of ``split.train``.
    eval_users : numpy.ndarray
        int64: listeners evaluated, ``split.eval_users`` restricted to listeners with at
        least one training pair (the product gives no playlist to listeners without history).
    cold_items : numpy.ndarray
        int64: items nobody had in training that are test items of an evaluated listener.
    cutoff : str
        The cut-off (time split) or the hold-out rule (leave-k-out).
    """

    split: Split
    features: PairFeatures
    eval_users: npt.NDArray[np.int64]
    cold_items: npt.NDArray[np.int64]
    cutoff: str

    @property
    def test_rows(self) -> sp.csr_matrix:
        """Test items of the evaluated listeners, rows aligned with ``eval_users``."""
        rows: sp.csr_matrix = self.split.test[self.eval_users]
        return rows


@dataclass(frozen=True)
class BenchmarkDataset:
    """A data set ready for :mod:`benchmarks.quality`.

    Attributes
    ----------
    item_artist : numpy.ndarray
        int64 (n_items,): dense artist number of each item (HetRec: the item itself).
    item_tags : scipy.sparse.csr_matrix
        float32 (n_items, n_tags): tag assignment counts (content for cold start).
    item_embeddings : numpy.ndarray or None
        float32 (n_items, d) content embeddings when the source has them (simulator).
    user_ids, item_ids : list of str
        Source identifiers of rows and columns.
    """

    name: str
    user_ids: list[str]
    item_ids: list[str]
    item_artist: npt.NDArray[np.int64]
    item_tags: sp.csr_matrix
    tag_names: list[str]
    item_embeddings: npt.NDArray[np.float32] | None
    test: Fold
    validation: Fold
    info: dict[str, Any] = field(default_factory=dict)
    #: Simulator only: genre number of each item (from its genre tag), int64 (n_items,).
    item_genre: npt.NDArray[np.int64] | None = None
    #: Simulator only: each listener's true taste over genres, float64 (n_users, n_genres),
    #: rebuilt from the simulator's seeds (see :func:`simulated_taste`); for a ceiling only.
    true_taste: npt.NDArray[np.float64] | None = None
    #: Simulator only: mood (sub-genre prefix) number of each item, int64 (n_items,).
    item_mood: npt.NDArray[np.int64] | None = None
    #: Simulator only: each listener's true taste over moods, float64 (n_users, n_moods).
    true_mood_taste: npt.NDArray[np.float64] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.user_ids), len(self.item_ids))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "users": self.shape[0], "items": self.shape[1]}
        for label, fold in (("test", self.test), ("validation", self.validation)):
            out[label] = {
                "cutoff": fold.cutoff,
                "train_pairs": int(fold.split.train.nnz),
                "test_pairs": int(fold.split.test.nnz),
                "eval_users": len(fold.eval_users),
                "eval_test_pairs": int(fold.test_rows.nnz),
                "cold_items": len(fold.cold_items),
            }
        out.update(self.info)
        return out


def _fold(split: Split, features: PairFeatures, cutoff: str) -> Fold:
    has_train = np.diff(split.train.indptr) > 0
    eval_users = split.eval_users[has_train[split.eval_users]]
    listeners = np.bincount(split.train.indices, minlength=split.train.shape[1])
    tested = np.unique(split.test[eval_users].indices)
    cold = tested[listeners[tested] == 0].astype(np.int64)
    return Fold(split, features, eval_users.astype(np.int64), cold, cutoff)


# ------------------------------------------------------------------------------- HetRec


def _read_dat(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    return pd.read_csv(
        path,
        sep="\t",
        encoding="utf-8",
        encoding_errors="replace",  # tags.dat holds some Latin-1
        quoting=csv.QUOTE_NONE,
        usecols=list(dtypes),
        dtype=dtypes,
        keep_default_na=False,
    )


def _count_features(train: sp.csr_matrix) -> PairFeatures:
    counts = train.data.astype(np.float64)
    return PairFeatures(
        pattern=train,
        plays=counts,
        completed=counts.copy(),
        skips=np.zeros_like(counts),
        thumb=np.zeros(len(counts), dtype=np.int8),
        raw_count=counts.copy(),
    )


def load_hetrec(
    source: Path = DEFAULT_HETREC, *, k: int = HETREC_HOLDOUT, seed: int = HETREC_SEED
) -> BenchmarkDataset:
    """HetRec 2011 Last.fm 2K: listener x artist play counts, leave-``k``-out folds.

    Parameters
    ----------
    source : Path
        Folder with ``user_artists.dat``, ``artists.dat``, ``tags.dat`` and
        ``user_taggedartists.dat``.
    k : int
        Artists held out per listener (listeners with more than ``k`` artists) in each fold.
    seed : int
        Seed of the test fold; the validation fold uses ``seed + 1`` on the test fold's
        training matrix.
    """
    source = Path(source)
    listens = _read_dat(
        source / "user_artists.dat", {"userID": "int64", "artistID": "int64", "weight": "int64"}
    )
    artists = _read_dat(source / "artists.dat", {"id": "int64", "name": "string"})
    tags = _read_dat(source / "tags.dat", {"tagID": "int64", "tagValue": "string"})
    tagged = _read_dat(
        source / "user_taggedartists.dat",
        {"userID": "int64", "artistID": "int64", "tagID": "int64"},
    )
    user_ids = np.unique(listens["userID"].to_numpy())
    artist_ids = np.union1d(artists["id"].to_numpy(), listens["artistID"].to_numpy())
    rows = np.searchsorted(user_ids, listens["userID"].to_numpy())
    cols = np.searchsorted(artist_ids, listens["artistID"].to_numpy())
    weights = listens["weight"].to_numpy().astype(np.float32)
    keep = weights > 0
    counts = sp.csr_matrix(
        (weights[keep], (rows[keep], cols[keep])), shape=(len(user_ids), len(artist_ids))
    )
    counts.sort_indices()

    tag_ids = tags["tagID"].to_numpy()
    order = np.argsort(tag_ids)
    tag_ids = tag_ids[order]
    tag_names = tags["tagValue"].to_numpy()[order].tolist()
    known = np.isin(tagged["artistID"].to_numpy(), artist_ids) & np.isin(
        tagged["tagID"].to_numpy(), tag_ids
    )
    item_tags = sp.csr_matrix(
        (
            np.ones(int(known.sum()), dtype=np.float32),
            (
                np.searchsorted(artist_ids, tagged["artistID"].to_numpy()[known]),
                np.searchsorted(tag_ids, tagged["tagID"].to_numpy()[known]),
            ),
        ),
        shape=(len(artist_ids), len(tag_ids)),
    )
    item_tags.sum_duplicates()

    test_split = leave_k_out(counts, k, seed)
    validation_split = leave_k_out(test_split.train, k, seed + 1)
    rule = f"leave-{k}-out"
    return BenchmarkDataset(
        name="hetrec",
        user_ids=[f"u{u}" for u in user_ids.tolist()],
        item_ids=[f"a{a}" for a in artist_ids.tolist()],
        item_artist=np.arange(len(artist_ids), dtype=np.int64),
        item_tags=item_tags,
        tag_names=tag_names,
        item_embeddings=None,
        test=_fold(test_split, _count_features(test_split.train), f"{rule}, seed {seed}"),
        validation=_fold(
            validation_split,
            _count_features(validation_split.train),
            f"{rule} of the test fold's train, seed {seed + 1}",
        ),
        info={
            "source": str(source),
            "pairs": int(counts.nnz),
            "raw_plays": int(counts.sum()),
            "tagged_items": int(np.sum(np.diff(item_tags.indptr) > 0)),
        },
    )


# ---------------------------------------------------------------------------- simulator


def _us(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _read_table(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("*.parquet"))
    frames = [pq.read_table(f).to_pandas(timestamp_as_object=False) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------- the contract's event rules, in pandas
#
# A copy of the Spark job's validation for the frames pyarrow reads from the contract's
# Parquet files, and for text in the forms the contract writes; tests/test_contract.py
# checks that both give every row the same reason.

#: What Spark's casts trim from text before parsing it: ASCII control characters and space.
_CAST_BLANKS = "".join(map(chr, range(33)))
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
#: A decimal number as Java's Double.parseDouble (Spark's cast of text) reads it.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?")
#: An ISO 8601 date, or date and time; an offset only after the seconds, as Spark reads it.
_TIME_TEXT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:\.([0-9]*))?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?"
)


def _text(series: pd.Series) -> pd.Series:
    return series.astype(pd.StringDtype("python"))


def _is_text(series: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)


def _time_text_us(text: str) -> int | None:
    """Microseconds since the epoch of a text time (UTC without an offset), or None."""
    match = _TIME_TEXT.fullmatch(text.strip(_CAST_BLANKS))
    if match is None:
        return None
    *parts, fraction, zone = match.groups()
    try:
        year, month, day, hour, minute, second = (int(p or 0) for p in parts)
        moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
        offset = dt.timedelta(0)
        if zone not in (None, "Z"):
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if minutes > 59 or hours * 60 + minutes > 18 * 60:  # Java's offsets: +-18:00
                return None
            offset = (1 if zone[0] == "+" else -1) * dt.timedelta(hours=hours, minutes=minutes)
        return _us(moment - offset) + int((fraction or "").ljust(6, "0")[:6])
    except (ValueError, OverflowError):
        return None


def _times_us(series: pd.Series) -> pd.Series:
    """Int64 microseconds since the epoch; NA where ``series`` holds no time."""
    if pd.api.types.is_datetime64_any_dtype(series):
        utc = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
        us = utc.dt.tz_localize(None).to_numpy("datetime64[us]").astype(np.int64)
        return pd.Series(pd.array(us, dtype="Int64"), index=series.index).mask(series.isna())
    times = [None if text is pd.NA else _time_text_us(text) for text in _text(series)]
    return pd.Series(pd.array(times, dtype="Int64"), index=series.index)


def _whole_float(number: float, low: int, high: int) -> int | None:
    """``number`` if it is whole and (as a float) within [low, high], as Spark casts it."""
    if math.isfinite(number) and number % 1 == 0 and float(low) <= number <= float(high):
        return min(int(number), high)  # float(2**63 - 1) is 2**63, cast to 2**63 - 1
    return None


def _whole_text(text: str, low: int, high: int) -> int | None:
    """Spark's ``_integer``: an integer in [low, high], or a finite whole decimal in it."""
    text = text.strip(_CAST_BLANKS)
    if _INTEGER_TEXT.fullmatch(text) and low <= int(text) <= high:
        return int(text)
    if _DECIMAL_TEXT.fullmatch(text):
        return _whole_float(float(text.rstrip("fFdD")), low, high)
    return None


def _whole_numbers(series: pd.Series, arrow_type: pa.DataType) -> pd.Series:
    """Int64: ``series`` as whole numbers in ``arrow_type``'s range; NA where not one."""
    info = np.iinfo(arrow_type.to_pandas_dtype())
    low, high = int(info.min), int(info.max)
    if pd.api.types.is_integer_dtype(series):
        fits = series.notna() & (series >= low) & (series <= high)
        return series.astype("Int64").where(fits.astype(bool), pd.NA)
    if _is_text(series):
        values = [None if t is pd.NA else _whole_text(t, low, high) for t in _text(series)]
    else:
        values = [_whole_float(float(x), low, high) for x in series.to_numpy(np.float64)]
    return pd.Series(pd.array(values, dtype="Int64"), index=series.index)


def validate_events(
    frame: pd.DataFrame,
    kind: str,
    *,
    track_ids: pd.Index,
    user_ids: pd.Index | None,
    cutoff: dt.datetime,
    earliest: dt.datetime = EARLIEST_EVENT,
) -> tuple[pd.DataFrame, npt.NDArray[np.object_]]:
    """The pandas copy of ``jobs.aggregate.validate_events``: the rules of the contract's
    ``plays`` or ``thumbs`` table (``recsys.contract.PLAYS``, ``THUMBS``), in their order.

    ``frame`` holds the table's columns as pyarrow reads its Parquet files (a NaN is a
    missing value, as pandas reads a Parquet null), or as text. Text is read as Spark reads
    the forms the contract writes (ISO 8601 times with seconds and an offset or none, a date
    alone; integers and whole decimals); Spark also reads forms outside the contract (a year
    alone, one-digit months, zone names, hexadecimal floats), which this copy calls invalid.
    A pandas frame has no malformed records.

    Returns
    -------
    (valid, reasons)
        ``valid``: the rows without a reason, ids trimmed, the amount as int64 and the time
        as int64 microseconds since the epoch in ``us``. ``reasons``: object (len(frame),),
        each row's reason (a ``QuarantineReason`` value) or None.
    """
    if kind not in ("plays", "thumbs"):
        raise ValueError(f"kind must be 'plays' or 'thumbs', got {kind!r}")
    table = TABLES[kind]
    time, amount = table.time_column, table.columns[-1]
    ids = {name: _text(frame[name]).str.strip(" ") for name in ID_COLUMNS if name in frame}
    parsed = {
        time: _times_us(frame[time]),
        amount: _whole_numbers(frame[amount], table.required.field(amount).type),
    }
    known = {"track_id": track_ids, "user_id": user_ids}

    def failing(rule: Rule) -> pd.Series:
        name = rule.column or ""
        match rule.check:
            case Check.MALFORMED:
                return pd.Series(False, index=frame.index)
            case Check.BLANK if _is_text(frame[name]):
                return (_text(frame[name]).str.strip(" ") == "").fillna(True)
            case Check.BLANK:
                return frame[name].isna()
            case Check.NOT_AN_ID:
                return ~ids[name].str.fullmatch(ID_PATTERN)
            case Check.UNPARSABLE:
                return parsed[name].isna()
            case Check.OUT_OF_RANGE if rule.values is not None:
                return ~parsed[name].isin(rule.values)
            case Check.OUT_OF_RANGE:
                assert rule.bounds is not None  # a Rule has bounds or values
                return (parsed[name] < rule.bounds[0]) | (parsed[name] > rule.bounds[1])
            case Check.AFTER_CUTOFF:
                return parsed[name] >= _us(cutoff)
            case Check.BEFORE_EARLIEST:
                return parsed[name] < _us(earliest)
            case Check.UNKNOWN if known[name] is None:
                return pd.Series(False, index=frame.index)
            case Check.UNKNOWN:
                return ~ids[name].isin(known[name])
        raise AssertionError(rule.check)

    reasons = np.full(len(frame), None, dtype=object)
    ok = np.ones(len(frame), dtype=bool)
    for rule in table.rules:
        # As Spark's chain of when(): a comparison with no value (NA) does not fail.
        fails = failing(rule).fillna(False).to_numpy(dtype=bool) & ok
        reasons[fails] = rule.reason.value
        ok &= ~fails
    valid = frame.loc[ok].assign(
        **{name: values[ok] for name, values in ids.items()},
        **{amount: parsed[amount][ok].to_numpy(dtype=np.int64)},
        us=parsed[time][ok].to_numpy(dtype=np.int64),
    )
    return valid.reset_index(drop=True), reasons


def clean_events(
    frame: pd.DataFrame,
    kind: str,
    *,
    track_ids: pd.Index,
    user_ids: pd.Index | None,
    cutoff: dt.datetime,
    earliest: dt.datetime = EARLIEST_EVENT,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the rows the Spark job quarantines (:func:`validate_events`), then exact
    duplicates (as it does).

    Returns
    -------
    (valid rows as :func:`validate_events` gives them, dropped count per reason and
    ``"duplicate"``)
    """
    valid, reasons = validate_events(
        frame, kind, track_ids=track_ids, user_ids=user_ids, cutoff=cutoff, earliest=earliest
    )
    dropped = dict(Counter(reason for reason in reasons if reason is not None))
    before = len(valid)
    valid = valid.drop_duplicates(subset=["user_id", "track_id", "us", TABLES[kind].columns[-1]])
    if before != len(valid):
        dropped["duplicate"] = before - len(valid)
    return valid.reset_index(drop=True), dropped


@dataclass(frozen=True)
class _Events:
    play_row: npt.NDArray[np.int64]
    play_col: npt.NDArray[np.int64]
    play_us: npt.NDArray[np.int64]
    play_completed: npt.NDArray[np.bool_]
    thumb_row: npt.NDArray[np.int64]
    thumb_col: npt.NDArray[np.int64]
    thumb_us: npt.NDArray[np.int64]
    thumb_value: npt.NDArray[np.int8]


def _time_fold(events: _Events, shape: tuple[int, int], cutoff: dt.datetime, end_us: int) -> Fold:
    """Time split at ``cutoff`` over the events before ``end_us``, with pair features."""
    in_window = events.play_us < end_us
    split = time_split(
        events.play_row[in_window],
        events.play_col[in_window],
        np.ones(int(in_window.sum()), dtype=np.float32),
        events.play_us[in_window],
        _us(cutoff),
        shape,
    )
    train = split.train
    n_items = np.int64(shape[1])
    pair_rows = np.repeat(np.arange(shape[0], dtype=np.int64), np.diff(train.indptr))
    pair_keys = pair_rows * n_items + train.indices  # ascending: CSR order, sorted indices
    before = events.play_us < _us(cutoff)
    positions = np.searchsorted(
        pair_keys, events.play_row[before] * n_items + events.play_col[before]
    )
    completed = np.bincount(
        positions, weights=events.play_completed[before].astype(np.float64), minlength=train.nnz
    ).astype(np.float64)
    plays = train.data.astype(np.float64)
    thumb = np.zeros(train.nnz, dtype=np.int8)
    rated = events.thumb_us < _us(cutoff)
    if rated.any():
        keys = events.thumb_row[rated] * n_items + events.thumb_col[rated]
        # Latest thumb wins; on a tie in time the larger value (as transform_interactions).
        order = np.lexsort((events.thumb_value[rated], events.thumb_us[rated], keys))
        keys, values = keys[order], events.thumb_value[rated][order]
        last = np.ones(len(keys), dtype=bool)
        last[:-1] = keys[1:] != keys[:-1]
        keys, values = keys[last], values[last]
        found = np.searchsorted(pair_keys, keys)
        found = np.minimum(found, max(len(pair_keys) - 1, 0))
        played = (len(pair_keys) > 0) & (pair_keys[found] == keys)
        # A thumb on a track never played before the cut-off has no training pair here; the
        # simulator only rates tracks after playing them, so this drops nothing in practice.
        thumb[found[played]] = values[played]
    features = PairFeatures(
        pattern=train,
        plays=plays,
        completed=completed,
        skips=plays - completed,
        thumb=thumb,
        raw_count=plays.copy(),
    )
    return _fold(split, features, cutoff.isoformat())


def load_simulated(
    *,
    users: int = 3000,
    tracks: int = 20000,
    seed: int = 7,
    end: dt.datetime = SIMULATED_END,
    weeks: int = 8,
    test_weeks: int = 2,
    validation_weeks: int = 2,
) -> BenchmarkDataset:
    """Simulate a world and split it in time like the weekly run.

    Parameters
    ----------
    users, tracks, seed, end, weeks
        Passed to :func:`lab.simulate.simulate_world` (``end`` must be a Monday 00:00 UTC).
    test_weeks : int
        The test cut-off is ``end - test_weeks`` weeks (a Monday); later first plays are test
        items.
    validation_weeks : int
        The validation fold uses only events before the test cut-off and cuts
        ``validation_weeks`` weeks earlier.
    """
    from lab.simulate import GENRE_WORDS, SUBGENRE_PREFIXES, simulate_world

    if end.weekday() != 0 or end.time() != dt.time(0) or end.tzinfo is None:
        raise ValueError(f"end must be a Monday 00:00 UTC, got {end.isoformat()}")
    if not 0 < test_weeks + validation_weeks < weeks:
        raise ValueError(
            f"test_weeks + validation_weeks must be below weeks ({weeks}), got "
            f"{test_weeks} + {validation_weeks}"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cratedigger-quality-") as tmp:
        world = Path(tmp) / "world"
        summary = simulate_world(world, users=users, tracks=tracks, seed=seed, end=end, weeks=weeks)
        catalog_tracks = pq.read_table(world / "catalog" / "tracks.parquet").to_pandas()
        catalog_users = pq.read_table(world / "catalog" / "users.parquet").to_pandas()
        plays_raw = _read_table(world / "events" / "plays")
        thumbs_raw = _read_table(world / "events" / "thumbs")
    simulate_seconds = time.perf_counter() - started

    catalog_tracks = catalog_tracks.sort_values("track_id").reset_index(drop=True)
    track_index = pd.Index(catalog_tracks["track_id"])
    user_index = pd.Index(np.sort(catalog_users["user_id"].to_numpy()))
    plays, dropped_plays = clean_events(
        plays_raw, "plays", track_ids=track_index, user_ids=user_index, cutoff=end
    )
    thumbs, dropped_thumbs = clean_events(
        thumbs_raw, "thumbs", track_ids=track_index, user_ids=user_index, cutoff=end
    )
    duration = catalog_tracks["duration_ms"].to_numpy(dtype=np.float64)
    play_col = track_index.get_indexer(plays["track_id"]).astype(np.int64)
    completed = is_completed(plays["ms_played"].to_numpy(), duration[play_col])
    events = _Events(
        play_row=user_index.get_indexer(plays["user_id"]).astype(np.int64),
        play_col=play_col,
        play_us=plays["us"].to_numpy(dtype=np.int64),
        play_completed=completed,
        thumb_row=user_index.get_indexer(thumbs["user_id"]).astype(np.int64),
        thumb_col=track_index.get_indexer(thumbs["track_id"]).astype(np.int64),
        thumb_us=thumbs["us"].to_numpy(dtype=np.int64),
        thumb_value=thumbs["value"].to_numpy(dtype=np.int8),
    )
    shape = (len(user_index), len(track_index))
    test_cutoff = end - dt.timedelta(weeks=test_weeks)
    validation_cutoff = test_cutoff - dt.timedelta(weeks=validation_weeks)
    test = _time_fold(events, shape, test_cutoff, _us(end))
    validation = _time_fold(events, shape, validation_cutoff, _us(test_cutoff))

    artist_codes, artist_names = pd.factorize(catalog_tracks["artist_id"], sort=True)
    tag_lists = catalog_tracks["tags"].tolist()
    tag_of = pd.Index(sorted({tag for tags in tag_lists for tag in tags}))
    tag_rows = np.repeat(np.arange(len(tag_lists)), [len(t) for t in tag_lists])
    tag_cols = tag_of.get_indexer([tag for tags in tag_lists for tag in tags])
    item_tags = sp.csr_matrix(
        (np.ones(len(tag_rows), dtype=np.float32), (tag_rows, tag_cols)),
        shape=(len(track_index), len(tag_of)),
    )
    embeddings = np.stack(catalog_tracks["embedding"].to_numpy()).astype(np.float32)
    # The simulator's first tag of every track is its genre's name (lab.simulate docstring).
    genre_words = list(GENRE_WORDS)
    first_tags = [tags[0] if len(tags) else "" for tags in tag_lists]
    item_genre = np.array(
        [genre_words.index(t) if t in genre_words else -1 for t in first_tags], dtype=np.int64
    )
    # Its second tag is "<mood> <genre>", the artist's sub-genre, whose prefix is the mood.
    moods = list(SUBGENRE_PREFIXES)
    item_mood = np.array(
        [moods.index(tags[1].split(" ")[0]) if len(tags) > 1 else -1 for tags in tag_lists],
        dtype=np.int64,
    )
    genre_taste, mood_taste = simulated_taste(users=users, tracks=tracks, seed=seed)
    return BenchmarkDataset(
        name="simulated",
        user_ids=user_index.tolist(),
        item_ids=track_index.tolist(),
        item_artist=artist_codes.astype(np.int64),
        item_tags=item_tags,
        tag_names=tag_of.tolist(),
        item_embeddings=embeddings,
        test=test,
        validation=validation,
        item_genre=item_genre,
        true_taste=genre_taste,
        item_mood=item_mood,
        true_mood_taste=mood_taste,
        info={
            "simulator": {
                "users": users,
                "tracks": tracks,
                "seed": seed,
                "weeks": weeks,
                "end": end.isoformat(),
            },
            "artists": len(artist_names),
            "plays_written": summary.plays,
            "thumbs_written": summary.thumbs,
            "plays_dropped": dropped_plays,
            "thumbs_dropped": dropped_thumbs,
            "new_tracks_never_played": summary.new_tracks,
            "simulate_seconds": round(simulate_seconds, 2),
        },
    )


def simulated_taste(
    *, users: int, tracks: int, seed: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Every simulated listener's true tastes: float64 (users, n_genres) over genres and
    (users, n_moods) over moods.

    Rebuilt from the simulator's random streams: each chunk of listeners draws its tastes
    first (:func:`lab.simulate.draw_tastes`) from ``SeedSequence(seed, spawn_key=
    (_STREAM_CHUNK, chunk))``. This depends on ``lab.simulate`` internals and serves only as
    an oracle ceiling in the benchmark, which checks it against the genres listeners
    actually played before using it.
    """
    from lab import simulate

    n_genres = min(len(simulate.GENRE_WORDS), max(8, tracks // 1000))
    chunk = 5000  # simulate_world's default chunk_users, used by load_simulated
    genre_parts, mood_parts = [], []
    for index, lo in enumerate(range(0, users, chunk)):
        rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(simulate._STREAM_CHUNK, index))
        )
        genre, mood = simulate.draw_tastes(rng, min(users, lo + chunk) - lo, n_genres)
        genre_parts.append(genre)
        mood_parts.append(mood)
    return np.concatenate(genre_parts, axis=0), np.concatenate(mood_parts, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a summary of the benchmark data sets.")
    parser.add_argument("--hetrec", type=Path, default=DEFAULT_HETREC)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--tracks", type=int, default=20000)
    args = parser.parse_args(argv)
    import json

    for name in ("hetrec", "simulated"):
        started = time.perf_counter()
        if name == "hetrec":
            data = load_hetrec(args.hetrec)
        else:
            data = load_simulated(users=args.users, tracks=args.tracks)
        print(json.dumps(data.summary(), indent=2, default=str))
        print(f"loaded in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

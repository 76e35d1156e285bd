"""Data sets for the quality benchmark, as interaction arrays split for evaluation.

Five sources, each turned into a :class:`BenchmarkDataset` with a *test* fold (what the
reported numbers use) and a *validation* fold carved out of the test fold's training data
(what tuning may look at). The real sets are read from ``../shared/datasets`` and never
copied into the repository, its tests or fixtures (their licences forbid it):

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
* :func:`load_lastfm1k` reads the JODIE slice of Last.fm 1K (timestamped track plays, no
  artists, durations or content). Its times are seconds since the first event, anchored
  at the fake epoch :data:`LASTFM1K_EPOCH` (a Monday); it is split in time like the
  simulator: the test cut-off is the Monday 00:00 UTC of the week two weeks before the last
  play, the validation cut-off two weeks earlier. Every play counts as completed, nobody
  gives thumbs, every track is its own artist.
* :func:`load_cm100k` reads CM100k (ratings 1-4 of tracks assigned to listeners at
  random, with a "heard before" flag) and turns each rating into the events the product
  would log (:data:`CM100K_EVENTS`: 4 a completed play and a thumbs-up, 3 a completed
  play, 2 a skipped play, 1 a skipped play and a thumbs-down). Both folds hold out
  :data:`CM100K_HOLDOUT` tracks per listener among the ones they liked (rating >= 3) and
  had never heard: discoveries. Artists come from ``items.txt``.
* :func:`load_ambar` reads the AMBAR sample (ratings 1-5, per-listener quintiles of play
  counts) as pseudo play counts (rating r = r plays), with leave-10-out folds as HetRec;
  artists and styles (as tags, the content for cold start) from ``tracks_info_old.csv``.
  The stored files are cut short mid-record: an incomplete last line is dropped.

Each fold carries the raw per-pair training features (plays, completed plays, skips, latest
thumb, raw count) so that confidence formulas can be compared on the same split.

Run ``python benchmarks/datasets.py [--dataset NAME]`` to print a summary of the data sets.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    week_start_of,
)
from recsys.evaluation import Split, leave_k_out, time_split  # noqa: E402

SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
DEFAULT_HETREC = SHARED_DATASETS / "hetrec2011-lastfm-2k"
DEFAULT_LASTFM1K = SHARED_DATASETS / "lastfm1k-jodie-slice"
DEFAULT_CM100K = SHARED_DATASETS / "cm100k"
DEFAULT_AMBAR = SHARED_DATASETS / "ambar-2024-sample"
HETREC_SEED = 20110501
HETREC_HOLDOUT = 10
#: The fake moment of Last.fm 1K's first event (its times are relative): a Monday 00:00 UTC.
LASTFM1K_EPOCH = dt.datetime(2020, 1, 6, tzinfo=dt.UTC)
CM100K_SEED = 20180708
#: Tracks held out per listener: each rated about 100, liked and never heard about 21.
CM100K_HOLDOUT = 5
#: CM100k's rating -> (completed plays, skipped plays, thumb) the product's log would hold.
#: Every rating follows a listen to the track's clip, so each is one play.
CM100K_EVENTS: dict[int, tuple[int, int, int]] = {
    4: (1, 0, 1),  # "I really like it": completed, thumbs-up
    3: (1, 0, 0),  # "It's nice": completed
    2: (0, 1, 0),  # "So-so": a skip, the weak play
    1: (0, 1, -1),  # "I don't like it" / flawed audio: a skip, thumbs-down
}
AMBAR_SEED = 20241014
AMBAR_HOLDOUT = 10
#: Names of the real data sets, in the order ``--dataset real`` runs them.
REAL_DATASETS = ("hetrec", "lastfm1k", "cm100k", "ambar")
#: What each ``--dataset`` value means.
DATASET_GROUPS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in (*REAL_DATASETS, "simulated")},
    "both": ("hetrec", "simulated"),
    "real": REAL_DATASETS,
    "all": (*REAL_DATASETS, "simulated"),
}
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
    age_days : numpy.ndarray or None
        float64 (nnz,): days from the pair's last play to the cut-off (time folds only; the
        recency of the product's confidence).
    """

    pattern: sp.csr_matrix
    plays: npt.NDArray[np.float64]
    completed: npt.NDArray[np.float64]
    skips: npt.NDArray[np.float64]
    thumb: npt.NDArray[np.int8]
    raw_count: npt.NDArray[np.float64]
    age_days: npt.NDArray[np.float64] | None = None

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


def _leave_k_out_folds(counts: sp.csr_matrix, k: int, seed: int) -> tuple[Fold, Fold]:
    """(test, validation): ``k`` random items per listener held out with ``seed``, then
    ``k`` more of the test fold's training part with ``seed + 1``; raw-count features."""
    test_split = leave_k_out(counts, k, seed)
    validation_split = leave_k_out(test_split.train, k, seed + 1)
    rule = f"leave-{k}-out"
    return (
        _fold(test_split, _count_features(test_split.train), f"{rule}, seed {seed}"),
        _fold(
            validation_split,
            _count_features(validation_split.train),
            f"{rule} of the test fold's train, seed {seed + 1}",
        ),
    )


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

    test, validation = _leave_k_out_folds(counts, k, seed)
    return BenchmarkDataset(
        name="hetrec",
        user_ids=[f"u{u}" for u in user_ids.tolist()],
        item_ids=[f"a{a}" for a in artist_ids.tolist()],
        item_artist=np.arange(len(artist_ids), dtype=np.int64),
        item_tags=item_tags,
        tag_names=tag_names,
        item_embeddings=None,
        test=test,
        validation=validation,
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
    """The pandas copy of ``jobs.aggregate.stage_events`` and ``split_events``: the rules of
    the contract's ``plays`` or ``thumbs`` table (``recsys.contract.PLAYS``, ``THUMBS``), in
    their order.

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
    last_us = np.full(train.nnz, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_us, positions, events.play_us[before])
    age_days = (_us(cutoff) - last_us).astype(np.float64) / 86_400e6
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
        age_days=age_days,
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


# ------------------------------------------------------------------- shared by the new sets


def _no_tags(n_items: int) -> sp.csr_matrix:
    """An item x tag matrix without tags: the source has no content."""
    return sp.csr_matrix((n_items, 0), dtype=np.float32)


def _tag_matrix(tag_lists: list[list[str]]) -> tuple[sp.csr_matrix, list[str]]:
    """Binary item x tag matrix (float32) and the sorted tag names of per-item tag lists."""
    names = pd.Index(sorted({tag for tags in tag_lists for tag in tags}))
    rows = np.repeat(np.arange(len(tag_lists)), [len(tags) for tags in tag_lists])
    cols = names.get_indexer([tag for tags in tag_lists for tag in tags])
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)),
        shape=(len(tag_lists), len(names)),
    )
    return matrix, names.tolist()


def _read_whole_lines(path: Path) -> tuple[pd.DataFrame, int]:
    """A CSV file with a header, every field as text; without its last line when that line
    is cut short (the file does not end with a line break).

    Returns
    -------
    (frame, number of lines dropped: 0 or 1)
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        cut_short = handle.read(1) != b"\n"
    if cut_short and len(frame):
        return frame.iloc[:-1].reset_index(drop=True), 1
    return frame, 0


def _pair_features(
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    columns: dict[str, npt.NDArray[Any]],
    shape: tuple[int, int],
) -> tuple[PairFeatures, dict[str, npt.NDArray[Any]]]:
    """Features of distinct (row, col) pairs, put in CSR order.

    ``columns`` holds ``completed``, ``skips`` and ``thumb`` per pair and any extra per-pair
    arrays, returned in the same order as the features. Every pair is one listener-track
    relation; ``plays = completed + skips = raw_count``.
    """
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    if np.any((rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])):
        raise ValueError("pairs must be distinct")
    ordered = {name: values[order] for name, values in columns.items()}
    completed = ordered.pop("completed").astype(np.float64)
    skips = ordered.pop("skips").astype(np.float64)
    plays = completed + skips
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    pattern = sp.csr_matrix((plays.astype(np.float32), cols, indptr), shape=shape)
    features = PairFeatures(
        pattern=pattern,
        plays=plays,
        completed=completed,
        skips=skips,
        thumb=ordered.pop("thumb").astype(np.int8),
        raw_count=plays.copy(),
    )
    return features, ordered


def _keep_pairs(features: PairFeatures, keep: npt.NDArray[np.bool_]) -> PairFeatures:
    """The pairs of ``features`` where ``keep`` (nnz,) is True, in the same order."""
    pattern = features.pattern
    rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=pattern.shape[0]))])
    return PairFeatures(
        pattern=sp.csr_matrix(
            (pattern.data[keep], pattern.indices[keep], indptr), shape=pattern.shape
        ),
        plays=features.plays[keep],
        completed=features.completed[keep],
        skips=features.skips[keep],
        thumb=features.thumb[keep],
        raw_count=features.raw_count[keep],
    )


def _holdout_fold(
    features: PairFeatures, eligible: npt.NDArray[np.bool_], k: int, seed: int, rule: str
) -> tuple[Fold, npt.NDArray[np.bool_]]:
    """Leave-``k``-out among the ``eligible`` pairs (nnz,) of ``features``: the held-out pairs
    leave training entirely; listeners with more than ``k`` eligible pairs are evaluated.

    Returns
    -------
    (fold, the eligibility of the fold's training pairs, in their order)
    """
    marker = features.matrix(np.where(eligible, 1.0, -1.0))  # negatives are never held out
    drawn = leave_k_out(marker, k, seed)
    n_items = np.int64(features.pattern.shape[1])
    keys = np.repeat(np.arange(marker.shape[0], dtype=np.int64), np.diff(marker.indptr))
    keys = keys * n_items + marker.indices
    test = drawn.test.tocoo()
    held = np.zeros(len(keys), dtype=bool)
    held[np.searchsorted(keys, test.row.astype(np.int64) * n_items + test.col)] = True
    train = _keep_pairs(features, ~held)
    split = Split(train=train.pattern, test=drawn.test, eval_users=drawn.eval_users)
    return _fold(split, train, rule), eligible[~held]


# ------------------------------------------------------------------ Last.fm 1K (JODIE)


def _week_start(moment: dt.datetime) -> dt.datetime:
    """Monday 00:00 UTC of the week holding ``moment``."""
    return dt.datetime.combine(week_start_of(moment), dt.time(0), tzinfo=dt.UTC)


def load_lastfm1k(
    source: Path = DEFAULT_LASTFM1K,
    *,
    epoch: dt.datetime = LASTFM1K_EPOCH,
    test_weeks: int = 2,
    validation_weeks: int = 2,
) -> BenchmarkDataset:
    """Last.fm 1K (JODIE slice): timestamped track plays, split in time like the weekly run.

    Parameters
    ----------
    source : Path
        Folder with ``lastfm.tsv`` (user, item, seconds since the first event; no header).
    epoch : datetime
        The fake moment of the first event (the data's times are relative); a Monday 00:00
        UTC so that weeks fall as in the product.
    test_weeks : int
        The test cut-off is the Monday 00:00 UTC of the week holding the last play minus
        ``test_weeks`` weeks (between ``test_weeks`` and ``test_weeks + 1`` weeks before
        the end); later first plays are test items.
    validation_weeks : int
        The validation fold uses only plays before the test cut-off and cuts
        ``validation_weeks`` weeks earlier.

    Every play counts as completed (no durations), there are no thumbs, and every track is
    its own artist (no artists in the source).
    """
    source = Path(source)
    path = source / "lastfm.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    plays = pd.read_csv(
        path, sep="\t", header=None, names=["user", "item", "seconds"], dtype="int64"
    )
    user_ids = np.unique(plays["user"].to_numpy())
    item_ids = np.unique(plays["item"].to_numpy())
    seconds = plays["seconds"].to_numpy()
    play_us = _us(epoch) + seconds * 1_000_000
    last = epoch + dt.timedelta(seconds=int(seconds.max()))
    test_cutoff = _week_start(last - dt.timedelta(weeks=test_weeks))
    validation_cutoff = test_cutoff - dt.timedelta(weeks=validation_weeks)
    if validation_cutoff <= epoch + dt.timedelta(seconds=int(seconds.min())):
        raise ValueError(f"the validation cut-off {validation_cutoff} precedes the first play")
    no_events = np.zeros(0, dtype=np.int64)
    events = _Events(
        play_row=np.searchsorted(user_ids, plays["user"].to_numpy()),
        play_col=np.searchsorted(item_ids, plays["item"].to_numpy()),
        play_us=play_us,
        play_completed=np.ones(len(plays), dtype=bool),
        thumb_row=no_events,
        thumb_col=no_events,
        thumb_us=no_events,
        thumb_value=no_events.astype(np.int8),
    )
    shape = (len(user_ids), len(item_ids))
    anchored = f" (relative times anchored at the fake epoch {epoch.isoformat()})"
    test = _time_fold(events, shape, test_cutoff, int(play_us.max()) + 1)
    validation = _time_fold(events, shape, validation_cutoff, _us(test_cutoff))
    return BenchmarkDataset(
        name="lastfm1k",
        user_ids=[f"u{u}" for u in user_ids.tolist()],
        item_ids=[f"t{i}" for i in item_ids.tolist()],
        item_artist=np.arange(len(item_ids), dtype=np.int64),
        item_tags=_no_tags(len(item_ids)),
        tag_names=[],
        item_embeddings=None,
        test=replace(test, cutoff=test.cutoff + anchored),
        validation=replace(validation, cutoff=validation.cutoff + anchored),
        info={
            "source": str(source),
            "plays": len(plays),
            "pairs": int(test.split.train.nnz + test.split.test.nnz),
            "epoch": epoch.isoformat(),
            "last_play": last.isoformat(),
            "artists": "none: every track is its own artist",
            "content": "none",
        },
    )


# ----------------------------------------------------------------------------- CM100k


def _cm100k_ratings(source: Path) -> tuple[pd.DataFrame, int]:
    """CM100k's ratings (userId, trackId, rating 1-4, heard 0/1), the last of any repeated
    (listener, track), and how many repeats were dropped."""
    path = source / "ratings.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    columns = ["userId", "trackId", "rating", "heard"]
    ratings = pd.read_csv(path, usecols=columns, dtype=dict.fromkeys(columns, "int64"))
    bad = ~ratings["rating"].isin(list(CM100K_EVENTS)) | ~ratings["heard"].isin([0, 1])
    if bad.any():
        raise ValueError(
            f"{path}: {int(bad.sum())} rows with a rating outside 1-4 or heard not 0/1"
        )
    deduplicated = ratings.drop_duplicates(["userId", "trackId"], keep="last")
    return deduplicated.reset_index(drop=True), len(ratings) - len(deduplicated)


def _artist_codes(item_ids: npt.NDArray[Any], artist: pd.Series) -> npt.NDArray[np.int64]:
    """Dense artist number per item from ``artist`` (aligned with ``item_ids``); an item
    without an artist is its own artist."""
    text = artist.astype("string").str.strip()
    missing = (text.isna() | (text == "")).to_numpy()
    labels = np.where(
        missing,
        "item " + pd.Series(item_ids).astype(str).to_numpy(),
        "artist " + text.fillna("").to_numpy(dtype=str),
    )
    codes, _ = pd.factorize(labels, sort=True)
    return codes.astype(np.int64)


def load_cm100k(
    source: Path = DEFAULT_CM100K,
    *,
    k: int = CM100K_HOLDOUT,
    seed: int = CM100K_SEED,
    unheard_only: bool = True,
) -> BenchmarkDataset:
    """CM100k: ratings of randomly assigned tracks as the product's events, leave-``k``-out.

    Parameters
    ----------
    source : Path
        Folder with ``ratings.csv`` (userId, trackId, rating, heard) and ``items.txt``
        (Item, Url, Title, Artist; tab-separated).
    k : int
        Tracks held out per listener (listeners with more than ``k`` eligible tracks) in each
        fold.
    seed : int
        Seed of the test fold; the validation fold uses ``seed + 1`` on the test fold's
        training pairs.
    unheard_only : bool
        Test items are tracks the listener liked (rating >= 3) and, when True, had never
        heard before (``heard == 0``): discoveries. Other rated tracks always stay in
        training.

    Each rating becomes one play (:data:`CM100K_EVENTS`): completed for 3 and 4, skipped for
    1 and 2; a thumbs-up for 4, a thumbs-down for 1. The count a team would feed a library
    (``raw_count``) is that one play.
    """
    source = Path(source)
    ratings, repeated = _cm100k_ratings(source)
    items = _read_dat(source / "items.txt", {"Item": "int64", "Artist": "string"})
    user_ids = np.unique(ratings["userId"].to_numpy())
    track_ids = np.union1d(items["Item"].to_numpy(), ratings["trackId"].to_numpy())
    events = np.array([CM100K_EVENTS[r] for r in range(1, 5)], dtype=np.int64)
    rating = ratings["rating"].to_numpy()
    eligible = rating >= 3
    if unheard_only:
        eligible &= ratings["heard"].to_numpy() == 0
    features, extra = _pair_features(
        np.searchsorted(user_ids, ratings["userId"].to_numpy()),
        np.searchsorted(track_ids, ratings["trackId"].to_numpy()),
        {
            "completed": events[rating - 1, 0],
            "skips": events[rating - 1, 1],
            "thumb": events[rating - 1, 2],
            "eligible": eligible,
        },
        (len(user_ids), len(track_ids)),
    )
    liked = "liked (rating >= 3), never heard" if unheard_only else "liked (rating >= 3)"
    rule = f"leave-{k}-out of the {liked} tracks"
    test, train_eligible = _holdout_fold(
        features, extra["eligible"], k, seed, f"{rule}, seed {seed}"
    )
    validation, _ = _holdout_fold(
        test.features,
        train_eligible,
        k,
        seed + 1,
        f"{rule} of the test fold's train, seed {seed + 1}",
    )
    artist = items.drop_duplicates("Item").set_index("Item")["Artist"].reindex(track_ids)
    item_artist = _artist_codes(track_ids, artist)
    return BenchmarkDataset(
        name="cm100k",
        user_ids=[f"u{u}" for u in user_ids.tolist()],
        item_ids=[f"t{t}" for t in track_ids.tolist()],
        item_artist=item_artist,
        item_tags=_no_tags(len(track_ids)),
        tag_names=[],
        item_embeddings=None,
        test=test,
        validation=validation,
        info={
            "source": str(source),
            "ratings": len(ratings),
            "repeated_ratings_dropped": repeated,
            "ratings_by_value": {
                int(r): int(n) for r, n in zip(*np.unique(rating, return_counts=True), strict=True)
            },
            "eligible_test_pairs": int(eligible.sum()),
            "events": "4: completed play + thumbs-up, 3: completed play, 2: skipped play, "
            "1: skipped play + thumbs-down",
            "artists": len(np.unique(item_artist)),
            "content": "none (titles and artist names only)",
        },
    )


# ------------------------------------------------------------------------------ AMBAR


def _ambar_ratings(source: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """AMBAR's ratings as int64 user_id, track_id and rating 1-5, with what was dropped: a
    cut-short last line, rows without a usable value, repeated (listener, track) pairs (the
    highest rating is kept)."""
    raw, cut_short = _read_whole_lines(source / "ratings_info_old.csv")
    numbers = {name: pd.to_numeric(raw[name], errors="coerce") for name in raw.columns}
    frame = pd.DataFrame(numbers)
    usable = frame.notna().all(axis=1) & frame["rating"].isin([1, 2, 3, 4, 5])
    usable &= (frame["user_id"] % 1 == 0) & (frame["track_id"] % 1 == 0)
    frame = frame.loc[usable].astype("int64")
    deduplicated = frame.sort_values("rating").drop_duplicates(["user_id", "track_id"], keep="last")
    dropped = {
        "cut_short_last_line": cut_short,
        "unusable": int((~usable).sum()),
        "repeated_pair": len(frame) - len(deduplicated),
    }
    return deduplicated.sort_values(["user_id", "track_id"]).reset_index(drop=True), dropped


def _ambar_tracks(source: Path, track_ids: npt.NDArray[np.int64]) -> tuple[pd.DataFrame, int]:
    """Artist and tags of each of ``track_ids`` (artist missing, no tags when unknown): the
    lower-cased ``styles`` and ``category_styles``, once each."""
    tracks, cut_short = _read_whole_lines(source / "tracks_info_old.csv")
    tracks["track_id"] = pd.to_numeric(tracks["track_id"], errors="coerce")
    tracks = tracks.dropna(subset=["track_id"]).drop_duplicates("track_id", keep="first")
    tracks = tracks.set_index(tracks["track_id"].astype("int64")).reindex(track_ids)
    text = tracks["styles"].fillna("") + "|" + tracks["category_styles"].fillna("")
    tracks["tags"] = [
        sorted({tag.strip().lower() for tag in line.split("|")} - {""}) for line in text
    ]
    return tracks[["artist_id", "tags"]], cut_short


def load_ambar(
    source: Path = DEFAULT_AMBAR, *, k: int = AMBAR_HOLDOUT, seed: int = AMBAR_SEED
) -> BenchmarkDataset:
    """AMBAR sample: per-listener play-count quintiles as pseudo play counts, leave-``k``-out.

    Parameters
    ----------
    source : Path
        Folder with ``ratings_info_old.csv`` (user_id, track_id, rating) and
        ``tracks_info_old.csv`` (track_id, artist_id, duration, styles, category_styles).
    k : int
        Tracks held out per listener (listeners with more than ``k`` tracks) in each fold.
    seed : int
        Seed of the test fold; the validation fold uses ``seed + 1`` on the test fold's
        training matrix.

    A rating r (the listener's r-th play-count quintile from the bottom) counts as r
    completed plays: the order of a listener's tracks is kept, and the product's
    ``ln(1 + plays)`` sees a heavy listener's top tracks about 2.6 times as strongly as their
    least played. Items are the rated tracks; styles and style categories are their tags.
    """
    source = Path(source)
    ratings, dropped = _ambar_ratings(source)
    user_ids = np.unique(ratings["user_id"].to_numpy())
    track_ids = np.unique(ratings["track_id"].to_numpy())
    tracks, tracks_cut_short = _ambar_tracks(source, track_ids)
    counts = sp.csr_matrix(
        (
            ratings["rating"].to_numpy().astype(np.float32),
            (
                np.searchsorted(user_ids, ratings["user_id"].to_numpy()),
                np.searchsorted(track_ids, ratings["track_id"].to_numpy()),
            ),
        ),
        shape=(len(user_ids), len(track_ids)),
    )
    counts.sort_indices()
    item_tags, tag_names = _tag_matrix(tracks["tags"].tolist())
    test, validation = _leave_k_out_folds(counts, k, seed)
    item_artist = _artist_codes(track_ids, tracks["artist_id"])
    return BenchmarkDataset(
        name="ambar",
        user_ids=[f"u{u}" for u in user_ids.tolist()],
        item_ids=[f"t{t}" for t in track_ids.tolist()],
        item_artist=item_artist,
        item_tags=item_tags,
        tag_names=tag_names,
        item_embeddings=None,
        test=test,
        validation=validation,
        info={
            "source": str(source),
            "pairs": int(counts.nnz),
            "ratings_dropped": dropped,
            "tracks_cut_short_last_line": tracks_cut_short,
            "pseudo_plays": "rating r -> r completed plays",
            "artists": len(np.unique(item_artist)),
            "tracks_without_artist": int(tracks["artist_id"].isna().sum()),
            "tagged_items": int(np.sum(np.diff(item_tags.indptr) > 0)),
        },
    )


#: Loader and default folder of each real data set.
REAL_LOADERS: dict[str, tuple[Callable[[Path], BenchmarkDataset], Path]] = {
    "hetrec": (load_hetrec, DEFAULT_HETREC),
    "lastfm1k": (load_lastfm1k, DEFAULT_LASTFM1K),
    "cm100k": (load_cm100k, DEFAULT_CM100K),
    "ambar": (load_ambar, DEFAULT_AMBAR),
}


def load_dataset(
    name: str, source: Path | None = None, *, users: int = 3000, tracks: int = 20000
) -> BenchmarkDataset:
    """The data set ``name`` (one of :data:`REAL_DATASETS` or ``simulated``), read from
    ``source`` (default: its folder in ``../shared/datasets``) or simulated with ``users``
    and ``tracks``."""
    if name == "simulated":
        return load_simulated(users=users, tracks=tracks)
    loader, default = REAL_LOADERS[name]
    return loader(default if source is None else source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a summary of the benchmark data sets.")
    parser.add_argument("--dataset", choices=list(DATASET_GROUPS), default="all")
    for name, (_, default) in REAL_LOADERS.items():
        parser.add_argument(f"--{name}", type=Path, default=default, help=f"{name} folder")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--tracks", type=int, default=20000)
    args = parser.parse_args(argv)
    import json

    for name in DATASET_GROUPS[args.dataset]:
        started = time.perf_counter()
        data = load_dataset(name, getattr(args, name, None), users=args.users, tracks=args.tracks)
        print(json.dumps(data.summary(), indent=2, default=str))
        print(f"loaded in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

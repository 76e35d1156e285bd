"""The data contract: file layout, tables, validation rules, quarantine reasons and confidence.

A data directory holds::

    catalog/artists.{parquet,csv,jsonl}   artist_id, name
    catalog/tracks.{parquet,csv,jsonl}    track_id, title, artist_id, duration_ms,
                                          [released_at], [embedding], [tags], [album],
                                          [image_url], [preview_url], [external_url],
                                          [musicbrainz_recording_id], [isrc]
    catalog/users.{parquet,csv,jsonl}     optional: user_id, [display_name]
    events/plays/*.{parquet,csv,jsonl}    user_id, track_id, played_at, ms_played
    events/thumbs/*.{parquet,csv,jsonl}   user_id, track_id, rated_at, value (+1 or -1)

An optional value that cannot be read as its type or :data:`TEXT_FORMATS` format is no
value (null): the row stays. The catalog's links (``image_url``, ``preview_url``,
``external_url``) are http(s) URLs the pages link to or load from configured hosts only.

When ``catalog/users.*`` exists, events of listeners missing from it are quarantined
as ``unknown_user``; without it every well-formed ``user_id`` is accepted.

CSV files follow RFC 4180 (a quoted field may hold commas, doubled quotes and line breaks)
and start with a header line naming the columns, in any order. Links to folders under
``events/`` are followed; a file reached twice is read once.

Each table is a :class:`TableSpec` (:data:`ARTISTS`, :data:`TRACKS`, :data:`USERS`,
:data:`PLAYS`, :data:`THUMBS`): its Arrow schema, which every writer of the contract uses
and from which the column tuples (:data:`PLAY_COLUMNS`...) derive, and its validation
rules in order: a row failing several is quarantined for the first. The Spark job
(``jobs/aggregate.py``) runs these rules; the benchmarks' pandas copy
(``benchmarks/datasets.py``) runs the same table, and ``tests/test_contract.py`` checks that
both give every row the same reason.

Confidence of a (listener, track) pair, from its plays, latest thumb and last event::

    thumb = -1:  confidence = -thumb_down_confidence      (preference 0, held strongly)
    otherwise:   confidence = (shape(completed + skip_weight * skips)
                               + (thumb_up_boost if thumb = +1 else 0)) * decay
    shape(x)   = ln(1 + x) when confidence_scale = "log", x when it is "linear"
    decay      = max(DECAY_FLOOR, 0.5 ** (age_days / half_life_days)), 1 when the half-life is 0

``age_days`` is the time from the pair's last event to the week's cut-off: with a half-life,
recent spins weigh more than old ones (and an old one never less than ``DECAY_FLOOR`` of a
fresh one, so no listened pair drops out). A play is completed when
``ms_played >= min(COMPLETED_MS, duration_ms / 2)``; every other play is a skip. ALS
multiplies the confidence by ``alpha``. :func:`confidence` is the numpy form;
``jobs.aggregate.confidence_column`` is its Spark twin, and ``tests/test_contract.py`` checks
that they agree. The weekly run's search may tune these weights (``recsys.tuning``); the
training step then recomputes the confidence from the counts the aggregation keeps.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

EVENT_FORMATS = ("parquet", "csv", "jsonl")

#: Identifiers: 1 to 128 characters of letters, digits and _.:@+=- (safe in URLs and HTML).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}$"
ID_MAX_LENGTH = 128
_ID_RE = re.compile(ID_PATTERN)
#: Identifier columns: trimmed of spaces before any rule looks at them.
ID_COLUMNS = ("user_id", "track_id", "artist_id")

#: A play longer than a day is not a play.
MAX_MS_PLAYED = 24 * 60 * 60 * 1000
#: Events stamped before this are clock errors (the default of ``earliest_event_at``).
EARLIEST_EVENT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
#: A play counts as completed at 30 s or at half the track, whichever comes first.
COMPLETED_MS = 30_000
#: A thumb up and a thumb down.
THUMB_VALUES = (1, -1)


@dataclass(frozen=True)
class TextFormat:
    """The shape of an optional text column: the value trimmed, put in ``case`` (``lower``,
    ``upper`` or as written) with hyphens removed if ``drop_hyphens``, then matched in full
    by ``pattern``; any other value is no value."""

    pattern: str
    case: str = ""
    drop_hyphens: bool = False

    def sql(self, column: str) -> str:
        """The normalised value of ``column`` as a Spark SQL expression (the Spark twin)."""
        value = f"trim(`{column}`)"
        if self.drop_hyphens:
            value = f"replace({value}, '-', '')"
        if self.case:
            value = f"{self.case}({value})"
        return value

    def check(self, value: str | None) -> str | None:
        """The normalised value, or None when it is not of this format."""
        if value is None:
            return None
        text = value.strip()
        if self.drop_hyphens:
            text = text.replace("-", "")
        if self.case:
            text = text.lower() if self.case == "lower" else text.upper()
        return text if re.fullmatch(self.pattern, text) else None


#: Formats of the catalog's optional text columns, by name (the field's ``format`` metadata).
TEXT_FORMATS: Mapping[str, TextFormat] = MappingProxyType(
    {
        # An http(s) URL of at most 2,048 characters: a host, then no spaces, quotes, angle
        # brackets or backslashes (the pages put it in attributes, escaped all the same).
        "url": TextFormat(
            r"(?=.{1,2048}$)https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][^\s\"'<>\\]*)?"
        ),
        "mbid": TextFormat(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", case="lower"
        ),
        "isrc": TextFormat(r"[A-Z]{2}[A-Z0-9]{3}[0-9]{7}", case="upper", drop_hyphens=True),
        "text512": TextFormat(r"(?s)(?=.{1,512}$).+"),
    }
)


def _formatted(name: str, text_format: str) -> pa.Field:
    assert text_format in TEXT_FORMATS
    return pa.field(name, pa.string(), metadata={"format": text_format})


def text_format_of(field: pa.Field) -> TextFormat | None:
    """The :data:`TEXT_FORMATS` entry a text field names, or None."""
    name = (field.metadata or {}).get(b"format")
    return TEXT_FORMATS[name.decode()] if name else None


class QuarantineReason(StrEnum):
    """Why an event row, a catalog row or a whole file was set aside instead of aggregated."""

    MALFORMED_RECORD = "malformed_record"
    MISSING_USER_ID = "missing_user_id"
    MISSING_TRACK_ID = "missing_track_id"
    MISSING_TIMESTAMP = "missing_timestamp"
    MISSING_MS_PLAYED = "missing_ms_played"
    MISSING_VALUE = "missing_value"
    INVALID_USER_ID = "invalid_user_id"
    INVALID_TRACK_ID = "invalid_track_id"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_MS_PLAYED = "invalid_ms_played"
    MS_PLAYED_OUT_OF_RANGE = "ms_played_out_of_range"
    TIMESTAMP_AFTER_CUTOFF = "timestamp_after_cutoff"
    TIMESTAMP_BEFORE_EARLIEST = "timestamp_before_earliest"
    INVALID_THUMB_VALUE = "invalid_thumb_value"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_TRACK = "unknown_track"
    # Catalog rows.
    MISSING_ARTIST_ID = "missing_artist_id"
    INVALID_ARTIST_ID = "invalid_artist_id"
    MISSING_NAME = "missing_name"
    MISSING_TITLE = "missing_title"
    INVALID_DURATION = "invalid_duration"
    UNKNOWN_ARTIST = "unknown_artist"
    DUPLICATE_ID = "duplicate_id"
    # A whole file (kind ``file``), with unreadable_files="quarantine".
    UNREADABLE_FILE = "unreadable_file"


R = QuarantineReason  # short, for the rule tables below


class Check(StrEnum):
    """What a validation rule tests; each engine implements each check once."""

    #: The line or record could not be parsed at all (CSV, JSON Lines).
    MALFORMED = "malformed"
    #: The column is null or only spaces.
    BLANK = "blank"
    #: The column (an identifier, spaces trimmed) does not match :data:`ID_PATTERN`.
    NOT_AN_ID = "not_an_id"
    #: The column is not a value of its schema type: a time, or a whole number that fits.
    UNPARSABLE = "unparsable"
    #: The number is outside the rule's ``bounds`` or not one of its ``values``.
    OUT_OF_RANGE = "out_of_range"
    #: The time is at or after the run's cut-off.
    AFTER_CUTOFF = "after_cutoff"
    #: The time is before the run's ``earliest_event_at``.
    BEFORE_EARLIEST = "before_earliest"
    #: The identifier is not in the catalog table it names (``track_id``: the tracks...);
    #: ``user_id`` only when the users table exists.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Rule:
    """Rows failing ``check`` on ``column`` are quarantined as ``reason``.

    ``bounds`` (inclusive) or ``values`` are what :attr:`Check.OUT_OF_RANGE` allows.
    """

    reason: QuarantineReason
    check: Check
    column: str | None = None
    bounds: tuple[int, int] | None = None
    values: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        needs_column = self.check is not Check.MALFORMED
        if (self.column is not None) != needs_column:
            needs = "needs a" if needs_column else "takes no"
            raise ValueError(f"{self.reason}: a {self.check} rule {needs} column")
        limits = (self.bounds is not None) + (self.values is not None)
        if limits != (self.check is Check.OUT_OF_RANGE):
            raise ValueError(
                f"{self.reason}: an out_of_range rule needs bounds or values, another rule neither"
            )


_NO_COLUMNS = pa.schema([])


@dataclass(frozen=True)
class TableSpec:
    """One table of the contract.

    Attributes
    ----------
    name : str
        ``catalog/<name>.*`` or ``events/<name>/``; also the quarantine kind of its rows.
    required : pyarrow.Schema
        The columns every row needs, typed (a CSV header names at least one of them; a file
        without one has it all null, and its rows fail validation).
    rules : tuple of Rule
        The validation rules, in the order they are tried.
    optional : pyarrow.Schema
        The columns a file may leave out (all null then).
    """

    name: str
    required: pa.Schema
    rules: tuple[Rule, ...]
    optional: pa.Schema = _NO_COLUMNS

    @functools.cached_property
    def schema(self) -> pa.Schema:
        """Every column, the required ones first: what writers of the contract write."""
        return pa.schema([*self.required, *self.optional])

    @property
    def columns(self) -> tuple[str, ...]:
        """The required columns' names."""
        return tuple(self.required.names)

    @property
    def optional_columns(self) -> tuple[str, ...]:
        return tuple(self.optional.names)

    @property
    def names(self) -> tuple[str, ...]:
        """Every column's name."""
        return self.columns + self.optional_columns

    @property
    def time_column(self) -> str:
        """The one timestamp column (events).

        Raises
        ------
        ValueError
            If the table has no timestamp column.
        """
        for field in self.required:
            if pa.types.is_timestamp(field.type):
                return str(field.name)
        raise ValueError(f"table {self.name!r} has no timestamp column")


def _required_id(column: str, missing: R, invalid: R) -> tuple[Rule, Rule]:
    return Rule(missing, Check.BLANK, column), Rule(invalid, Check.NOT_AN_ID, column)


def _events(
    name: str, time: str, amount: pa.Field, missing: R, invalid: R, limit: Rule
) -> TableSpec:
    """An events table: listener, track, time, amount, validated in the documented order."""
    return TableSpec(
        name,
        pa.schema(
            [
                ("user_id", pa.string()),
                ("track_id", pa.string()),
                (time, pa.timestamp("us", tz="UTC")),
                amount,
            ]
        ),
        (
            Rule(R.MALFORMED_RECORD, Check.MALFORMED),
            Rule(R.MISSING_USER_ID, Check.BLANK, "user_id"),
            Rule(R.MISSING_TRACK_ID, Check.BLANK, "track_id"),
            Rule(R.MISSING_TIMESTAMP, Check.BLANK, time),
            Rule(missing, Check.BLANK, amount.name),
            Rule(R.INVALID_USER_ID, Check.NOT_AN_ID, "user_id"),
            Rule(R.INVALID_TRACK_ID, Check.NOT_AN_ID, "track_id"),
            Rule(R.INVALID_TIMESTAMP, Check.UNPARSABLE, time),
            Rule(invalid, Check.UNPARSABLE, amount.name),
            limit,
            Rule(R.TIMESTAMP_AFTER_CUTOFF, Check.AFTER_CUTOFF, time),
            Rule(R.TIMESTAMP_BEFORE_EARLIEST, Check.BEFORE_EARLIEST, time),
            Rule(R.UNKNOWN_TRACK, Check.UNKNOWN, "track_id"),
            Rule(R.UNKNOWN_USER, Check.UNKNOWN, "user_id"),
        ),
    )


ARTISTS = TableSpec(
    "artists",
    pa.schema([("artist_id", pa.string()), ("name", pa.string())]),
    (
        Rule(R.MALFORMED_RECORD, Check.MALFORMED),
        *_required_id("artist_id", R.MISSING_ARTIST_ID, R.INVALID_ARTIST_ID),
        Rule(R.MISSING_NAME, Check.BLANK, "name"),
    ),
)
TRACKS = TableSpec(
    "tracks",
    pa.schema(
        [
            ("track_id", pa.string()),
            ("title", pa.string()),
            ("artist_id", pa.string()),
            ("duration_ms", pa.int64()),
        ]
    ),
    (
        Rule(R.MALFORMED_RECORD, Check.MALFORMED),
        *_required_id("track_id", R.MISSING_TRACK_ID, R.INVALID_TRACK_ID),
        Rule(R.MISSING_TITLE, Check.BLANK, "title"),
        Rule(R.MISSING_ARTIST_ID, Check.BLANK, "artist_id"),
        Rule(R.INVALID_DURATION, Check.UNPARSABLE, "duration_ms"),
        Rule(R.INVALID_DURATION, Check.OUT_OF_RANGE, "duration_ms", bounds=(1, MAX_MS_PLAYED)),
        Rule(R.UNKNOWN_ARTIST, Check.UNKNOWN, "artist_id"),
    ),
    # An optional value that cannot be read is no value; the track stays.
    pa.schema(
        [
            ("released_at", pa.date32()),
            ("embedding", pa.list_(pa.float32())),
            ("tags", pa.list_(pa.string())),
            _formatted("album", "text512"),
            _formatted("image_url", "url"),
            _formatted("preview_url", "url"),
            _formatted("external_url", "url"),
            _formatted("musicbrainz_recording_id", "mbid"),
            _formatted("isrc", "isrc"),
        ]
    ),
)
USERS = TableSpec(
    "users",
    pa.schema([("user_id", pa.string())]),
    (
        Rule(R.MALFORMED_RECORD, Check.MALFORMED),
        *_required_id("user_id", R.MISSING_USER_ID, R.INVALID_USER_ID),
    ),
    pa.schema([("display_name", pa.string())]),
)
PLAYS = _events(
    "plays",
    "played_at",
    pa.field("ms_played", pa.int64()),
    R.MISSING_MS_PLAYED,
    R.INVALID_MS_PLAYED,
    Rule(R.MS_PLAYED_OUT_OF_RANGE, Check.OUT_OF_RANGE, "ms_played", bounds=(0, MAX_MS_PLAYED)),
)
THUMBS = _events(
    "thumbs",
    "rated_at",
    pa.field("value", pa.int32()),
    R.MISSING_VALUE,
    R.INVALID_THUMB_VALUE,
    Rule(R.INVALID_THUMB_VALUE, Check.OUT_OF_RANGE, "value", values=THUMB_VALUES),
)
#: The tables by name.
TABLES: Mapping[str, TableSpec] = MappingProxyType(
    {table.name: table for table in (ARTISTS, TRACKS, USERS, PLAYS, THUMBS)}
)

ARTIST_COLUMNS = ARTISTS.columns
TRACK_COLUMNS = TRACKS.columns
TRACK_OPTIONAL_COLUMNS = TRACKS.optional_columns
#: The optional track columns the pages and the API show (the others feed the models).
TRACK_DISPLAY_COLUMNS = (
    "released_at",
    *(f.name for f in TRACKS.optional if text_format_of(f) is not None),
)
USER_COLUMNS = USERS.columns
PLAY_COLUMNS = PLAYS.columns
THUMB_COLUMNS = THUMBS.columns


# ------------------------------------------------------------------------------- confidence


#: ``confidence_scale`` values: how completed and skipped plays turn into confidence.
CONFIDENCE_SCALES = ("log", "linear")
#: The least a decayed pair weighs, as a share of the same pair heard at the cut-off.
DECAY_FLOOR = 0.01
_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class ConfidenceParams:
    """The weights of the confidence formula (module doc); the one place of their defaults.

    Raises
    ------
    ValueError
        If a weight is outside its range in :attr:`RANGES` (or NaN), or the scale is not
        one of :data:`CONFIDENCE_SCALES`; the message names it.
    """

    skip_weight: float = 0.25
    thumb_up_boost: float = 2.0
    thumb_down_confidence: float = 2.0
    confidence_scale: str = "log"
    half_life_days: float = 0.0

    #: Inclusive range of each weight (the settings check the same).
    RANGES: ClassVar[Mapping[str, tuple[float, float]]] = MappingProxyType(
        {
            "skip_weight": (0.0, 1.0),
            "thumb_up_boost": (0.0, 100.0),
            "thumb_down_confidence": (0.0, 100.0),
            "half_life_days": (0.0, 3650.0),
        }
    )

    @classmethod
    def of(cls, source: object) -> ConfidenceParams:
        """The weights from the attributes of the same names of ``source`` (the settings,
        an aggregation's parameters)."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})

    def __post_init__(self) -> None:
        for name, (low, high) in self.RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value!r}")
        if self.confidence_scale not in CONFIDENCE_SCALES:
            raise ValueError(
                f"confidence_scale must be one of {', '.join(CONFIDENCE_SCALES)}, "
                f"got {self.confidence_scale!r}"
            )


def is_completed(ms_played: npt.ArrayLike, duration_ms: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Whether each play is completed: ``ms_played >= min(COMPLETED_MS, duration_ms / 2)``.

    Parameters
    ----------
    ms_played, duration_ms : array_like
        Integers or floats of one shape (or broadcastable): each play's length and its
        track's.

    Returns
    -------
    numpy.ndarray
        bool, the broadcast shape.
    """
    played = np.asarray(ms_played, dtype=np.float64)
    duration = np.asarray(duration_ms, dtype=np.float64)
    completed: npt.NDArray[np.bool_] = played >= np.minimum(COMPLETED_MS, duration / 2)
    return completed


def confidence(
    completed: npt.ArrayLike,
    skips: npt.ArrayLike,
    thumb: npt.ArrayLike,
    params: ConfidenceParams | None = None,
    age_days: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """The confidence of (listener, track) pairs (module doc), vectorised.

    Parameters
    ----------
    completed, skips : array_like
        Completed and skipped plays per pair, (n,) (any numeric dtype).
    thumb : array_like
        The pair's latest thumb, (n,): +1, -1 or 0 (none).
    params : ConfidenceParams, optional
        The weights; default ``ConfidenceParams()``.
    age_days : array_like, optional
        Days from each pair's last event to the cut-off, (n,); needed when
        ``params.half_life_days`` is above 0 (negative ages count as 0).

    Returns
    -------
    numpy.ndarray
        float64 (n,).

    Raises
    ------
    ValueError
        If ``completed``, ``skips`` and ``thumb`` (and ``age_days``) do not have one shape, or
        a half-life is set without ``age_days``.
    """
    params = params or ConfidenceParams()
    done = np.asarray(completed, dtype=np.float64)
    skipped = np.asarray(skips, dtype=np.float64)
    latest = np.asarray(thumb)
    if not done.shape == skipped.shape == latest.shape:
        raise ValueError(
            f"completed, skips and thumb must have one shape, got {done.shape}, "
            f"{skipped.shape} and {latest.shape}"
        )
    listened = done + params.skip_weight * skipped
    shaped = np.log1p(listened) if params.confidence_scale == "log" else listened
    positive = shaped + np.where(latest == 1, params.thumb_up_boost, 0.0)
    if params.half_life_days > 0:
        if age_days is None:
            raise ValueError("age_days is needed when half_life_days is above 0")
        age = np.asarray(age_days, dtype=np.float64)
        if age.shape != done.shape:
            raise ValueError(f"age_days has shape {age.shape}, the counts {done.shape}")
        positive = positive * decay(age, params.half_life_days)
    result: npt.NDArray[np.float64] = np.where(
        latest == -1, -params.thumb_down_confidence, positive
    )
    return result


def decay(age_days: npt.ArrayLike, half_life_days: float) -> npt.NDArray[np.float64]:
    """``max(DECAY_FLOOR, 0.5 ** (age / half_life))`` per age in days (negative ages count as
    0); ones when ``half_life_days`` is 0."""
    age = np.maximum(np.asarray(age_days, dtype=np.float64), 0.0)
    if half_life_days <= 0:
        return np.ones_like(age)
    weight: npt.NDArray[np.float64] = np.maximum(DECAY_FLOOR, 0.5 ** (age / half_life_days))
    return weight


def age_in_days(last_event_us: npt.ArrayLike, cutoff: dt.datetime) -> npt.NDArray[np.float64]:
    """Days from each last event (int64 microseconds since the epoch, UTC) to ``cutoff``."""
    cutoff_us = cutoff.timestamp() * 1e6
    age: npt.NDArray[np.float64] = (cutoff_us - np.asarray(last_event_us, dtype=np.float64)) / (
        _SECONDS_PER_DAY * 1e6
    )
    return age


# ------------------------------------------------------------------------ ids and weeks


def is_valid_id(value: str) -> bool:
    """True when ``value`` is a usable user, track or artist identifier."""
    return _ID_RE.fullmatch(value) is not None


def week_start_of(moment: dt.datetime | dt.date) -> dt.date:
    """The Monday (UTC) of the week holding ``moment``; weeks start Monday 00:00 UTC."""
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC)
        moment = moment.date()
    return moment - dt.timedelta(days=moment.weekday())


def parse_week(text: str) -> dt.date:
    """Parse ``YYYY-MM-DD`` naming a Monday.

    Raises
    ------
    ValueError
        If ``text`` is not an ISO date or the date is not a Monday.
    """
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"week {text!r} is not a date in YYYY-MM-DD form") from None
    if day.weekday() != 0:
        raise ValueError(
            f"week {text!r} is a {day:%A}; weeks start on Monday "
            f"(the Monday of that week is {week_start_of(day).isoformat()})"
        )
    return day


def week_cutoff(week_start: dt.date) -> dt.datetime:
    """The instant a week starts: only events strictly before it feed that week's playlists."""
    return dt.datetime.combine(week_start, dt.time(0, 0), tzinfo=dt.UTC)

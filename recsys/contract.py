"""The data contract: file layout, columns, validation limits and quarantine reasons.

A data directory holds::

    catalog/artists.{parquet,csv,jsonl}   artist_id, name
    catalog/tracks.{parquet,csv,jsonl}    track_id, title, artist_id, duration_ms,
                                          [released_at], [embedding], [tags]
    catalog/users.{parquet,csv,jsonl}     optional: user_id, [display_name]
    events/plays/*.{parquet,csv,jsonl}    user_id, track_id, played_at, ms_played
    events/thumbs/*.{parquet,csv,jsonl}   user_id, track_id, rated_at, value (+1 or -1)

When ``catalog/users.*`` exists, events of listeners missing from it are quarantined
as ``unknown_user``; without it every well-formed ``user_id`` is accepted.

CSV files follow RFC 4180 (a quoted field may hold commas, doubled quotes and line breaks)
and start with a header line naming the columns, in any order. Links to folders under
``events/`` are followed; a file reached twice is read once.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum

EVENT_FORMATS = ("parquet", "csv", "jsonl")

ARTIST_COLUMNS = ("artist_id", "name")
TRACK_COLUMNS = ("track_id", "title", "artist_id", "duration_ms")
TRACK_OPTIONAL_COLUMNS = ("released_at", "embedding", "tags")
USER_COLUMNS = ("user_id",)
PLAY_COLUMNS = ("user_id", "track_id", "played_at", "ms_played")
THUMB_COLUMNS = ("user_id", "track_id", "rated_at", "value")

#: Identifiers: 1 to 128 characters of letters, digits and _.:@+=- (safe in URLs and HTML).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}$"
ID_MAX_LENGTH = 128
_ID_RE = re.compile(ID_PATTERN)

#: A play longer than a day is not a play.
MAX_MS_PLAYED = 24 * 60 * 60 * 1000
#: Events stamped before this are clock errors (the default of ``earliest_event_at``).
EARLIEST_EVENT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
#: A play counts as completed at 30 s or at half the track, whichever comes first.
COMPLETED_MS = 30_000


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

"""Listening-history imports: ListenBrainz, Last.fm and Spotify exports -> a data directory.

One parse function per format turns an export file into :class:`Listen` rows and
:class:`Refused` rows (the line and the reason); :func:`import_history` writes what they keep
in the data contract's layout (:mod:`recsys.contract`):

- the catalog: a track per recording (``mbid:<recording MBID>``, ``spotify:track:<id>``,
  else ``track:<hash>`` of the normalised artist and title) and an artist per credit
  (``mbid:<artist MBID>``, else ``artist:<hash>`` of the normalised name), added to the
  catalog files the directory holds (union by id: a row already there stays as it is);
- the plays: ``events/plays/imported/<format>-<digest>.parquet``, the digest of the input's
  bytes, its format and ``--user``, so importing a file again rewrites the same file;
- the refused rows: ``imports/refused/<format>-<digest>.jsonl``, one JSON object per row
  (``position``, ``reason``, ``record``).

A scrobble (ListenBrainz, Last.fm) means the track was listened to: its ``ms_played`` is the
track's duration when known, else :data:`~recsys.contract.COMPLETED_MS`, which is a completed
play whatever the duration. A track whose duration no export gives is catalogued with
:data:`UNKNOWN_DURATION_MS`. Input is bounded: a line over :data:`MAX_LINE_BYTES` is refused,
a JSON document over :data:`MAX_DOCUMENT_BYTES` stops the import with a message.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.aggregate import find_catalog_file
from recsys.contract import (
    ARTISTS,
    COMPLETED_MS,
    EARLIEST_EVENT,
    MAX_MS_PLAYED,
    PLAYS,
    TRACKS,
    USERS,
    is_valid_id,
)

log = logging.getLogger(__name__)

FORMATS = ("listenbrainz", "lastfm", "spotify")
#: A longer line is refused (``line_too_long``) without being held in memory.
MAX_LINE_BYTES = 1 << 20
#: A JSON document (Spotify, a Last.fm API page, ListenBrainz's JSON array) is read whole.
MAX_DOCUMENT_BYTES = 512 << 20
#: Uncompressed listens of a ListenBrainz ZIP export, in all.
MAX_ARCHIVE_BYTES = 16 << 30
#: Artist names and titles longer than this are refused (``text_too_long``).
MAX_TEXT_CHARS = 1000
#: The refused row's ``record`` is cut at this many characters.
MAX_RECORD_CHARS = 2000
#: The duration of a track no export gives one for: long enough that the completed-play rule
#: is 30 s, as it is for every track of a minute or more.
UNKNOWN_DURATION_MS = 180_000
#: Files from this size on get a progress bar.
PROGRESS_MIN_BYTES = 4 << 20

#: ``progress(total, name, unit)`` -> a bar with ``update(n)`` and ``close()`` (tqdm).
ProgressFactory = Callable[[int, str, str], Any]


class ImportInputError(ValueError):
    """The file cannot be imported at all; the message is one line naming it."""


class Refusal(StrEnum):
    """Why an input row was not imported."""

    MALFORMED_RECORD = "malformed_record"  # not JSON, not an object, not a CSV row of the shape
    INVALID_ENCODING = "invalid_encoding"  # the line is not UTF-8
    LINE_TOO_LONG = "line_too_long"
    NOW_PLAYING = "now_playing"  # Last.fm's track being played, not a scrobble
    NOT_MUSIC = "not_music"  # a Spotify podcast episode or audiobook
    MISSING_USER_ID = "missing_user_id"  # the file names no listener and --user is not given
    INVALID_USER_ID = "invalid_user_id"
    MISSING_TIMESTAMP = "missing_timestamp"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"  # before 2000 or after the import
    MISSING_ARTIST = "missing_artist"
    MISSING_TITLE = "missing_title"
    TEXT_TOO_LONG = "text_too_long"
    MISSING_MS_PLAYED = "missing_ms_played"
    INVALID_MS_PLAYED = "invalid_ms_played"
    MS_PLAYED_OUT_OF_RANGE = "ms_played_out_of_range"


@dataclass(frozen=True)
class Track:
    """A catalogue entry as an export describes it; ``duration_ms`` None when it does not."""

    track_id: str
    title: str
    artist_id: str
    artist_name: str
    duration_ms: int | None = None
    album: str | None = None

    def links(self) -> dict[str, str | None]:
        """The catalog's link columns its id gives: a MusicBrainz recording, a Spotify
        track's page."""
        kind, _, value = self.track_id.partition(":")
        return {
            "musicbrainz_recording_id": value if kind == "mbid" else None,
            "external_url": (
                f"https://open.spotify.com/track/{value.removeprefix('track:')}"
                if kind == "spotify"
                else None
            ),
        }


@dataclass(frozen=True)
class Listen:
    """One play; ``ms_played`` None for a scrobble (the track was listened to)."""

    user_id: str
    track: Track
    played_at: dt.datetime
    ms_played: int | None = None


@dataclass(frozen=True)
class Refused:
    """An input row left out: where it was (``line 12``, ``listens/2021/1.jsonl:3``, ``item
    7``), why, and its text (cut at :data:`MAX_RECORD_CHARS`)."""

    position: str
    reason: Refusal
    record: str


Parsed = Listen | Refused


@dataclass
class ImportReport:
    """What one import did."""

    source: Path
    format: str
    kept: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    listeners: int = 0
    new_tracks: int = 0
    new_artists: int = 0
    new_users: int = 0
    events_file: Path | None = None
    refused_file: Path | None = None

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


class _Reject(Exception):
    """Raised while reading one row: the row is refused for ``reason``."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


# -------------------------------------------------------------------------------- ids


_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SPOTIFY_TRACK_RE = re.compile(
    r"(?:spotify:track:|https?://open\.spotify\.com/(?:intl-[A-Za-z-]+/)?track/)"
    r"([A-Za-z0-9]{22})(?:[?#].*)?"
)


def normalised_name(text: str) -> str:
    """The key of a name: Unicode NFKC, case-folded, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def _hashed(kind: str, *parts: str) -> str:
    key = "\x1f".join(normalised_name(part) for part in parts)
    return f"{kind}:{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}"


def mbid_id(value: object) -> str | None:
    """``mbid:<uuid>`` for a MusicBrainz identifier (any case), else None."""
    if not isinstance(value, str):
        return None
    candidate = value.strip().lower()
    return f"mbid:{candidate}" if _UUID_RE.fullmatch(candidate) else None


def spotify_track_id(value: object) -> str | None:
    """``spotify:track:<id>`` for a Spotify track URI or ``open.spotify.com`` link."""
    if not isinstance(value, str):
        return None
    match = _SPOTIFY_TRACK_RE.fullmatch(value.strip())
    return f"spotify:track:{match.group(1)}" if match else None


def track_key_id(artist: str, title: str) -> str:
    """The id of a track known only by its artist and title."""
    return _hashed("track", artist, title)


def artist_key_id(artist: str) -> str:
    """The id of an artist known only by name."""
    return _hashed("artist", artist)


def _make_track(
    artist: str,
    title: str,
    *,
    track_id: str | None = None,
    artist_id: str | None = None,
    duration_ms: int | None = None,
    album: object = None,
) -> Track:
    return Track(
        track_id=track_id or track_key_id(artist, title),
        title=title,
        artist_id=artist_id or artist_key_id(artist),
        artist_name=artist,
        duration_ms=duration_ms,
        album=_album(album),
    )


def _album(value: object) -> str | None:
    """An album name as an export gives it (text, or Last.fm's ``{"#text": ...}``), or None
    when there is none worth keeping."""
    if isinstance(value, dict):
        value = value.get("#text")
    try:
        return _text(value, Refusal.MISSING_TITLE)[:512]
    except _Reject:
        return None


# ----------------------------------------------------------------------- field readers


def _text(value: object, missing: Refusal) -> str:
    """A name or title: spaces collapsed, control characters dropped."""
    if not isinstance(value, str):
        raise _Reject(missing)
    cleaned = "".join(ch for ch in " ".join(value.split()) if unicodedata.category(ch) != "Cc")
    if not cleaned:
        raise _Reject(missing)
    if len(cleaned) > MAX_TEXT_CHARS:
        raise _Reject(Refusal.TEXT_TOO_LONG)
    return cleaned


def _optional_text(value: object) -> str | None:
    try:
        return _text(value, Refusal.MISSING_ARTIST)
    except _Reject:
        return None


def _user(value: object, fallback: str | None) -> str:
    """The listener the file names (it wins), else ``fallback`` (``--user``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if fallback is None:
            raise _Reject(Refusal.MISSING_USER_ID)
        return fallback
    if not isinstance(value, str) or not is_valid_id(value.strip()):
        raise _Reject(Refusal.INVALID_USER_ID)
    return value.strip()


_DECIMAL_RE = re.compile(r"\s*-?\d{1,20}(\.\d{1,9})?\s*")


def _number(value: object) -> float | None:
    """A JSON number or a decimal string (Last.fm writes numbers as strings); None else."""
    if isinstance(value, bool):
        return None
    numeric = isinstance(value, int | float)
    if not numeric and not (isinstance(value, str) and _DECIMAL_RE.fullmatch(value)):
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _checked_instant(moment: dt.datetime, now: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if not EARLIEST_EVENT <= moment <= now:
        raise _Reject(Refusal.TIMESTAMP_OUT_OF_RANGE)
    return moment.astimezone(dt.UTC)


def _unix_instant(value: object, now: dt.datetime) -> dt.datetime:
    if value is None or value == "":
        raise _Reject(Refusal.MISSING_TIMESTAMP)
    seconds = _number(value)
    if seconds is None:
        raise _Reject(Refusal.INVALID_TIMESTAMP)
    if not EARLIEST_EVENT.timestamp() <= seconds <= now.timestamp():
        raise _Reject(Refusal.TIMESTAMP_OUT_OF_RANGE)
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


_MONTHS = {
    month: number
    for number, month in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_LASTFM_DATE_RE = re.compile(
    r"(\d{1,2}) ([A-Za-z]{3})[A-Za-z]* (\d{4}),? (\d{1,2}):(\d{2})(?::(\d{2}))?"
)


def _text_instant(value: object, now: dt.datetime) -> dt.datetime:
    """``31 Jan 2021 18:04`` (Last.fm, UTC), an ISO 8601 time (UTC without an offset) or
    unix seconds."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Reject(Refusal.MISSING_TIMESTAMP)
    if not isinstance(value, str) or len(value) > 64:
        raise _Reject(Refusal.INVALID_TIMESTAMP)
    text = value.strip()
    if _number(text) is not None:
        return _unix_instant(text, now)
    match = _LASTFM_DATE_RE.fullmatch(text)
    try:
        if match:
            day, month, year, hour, minute, second = match.groups()
            if month.lower() not in _MONTHS:
                raise ValueError(month)
            moment = dt.datetime(
                int(year),
                _MONTHS[month.lower()],
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                tzinfo=dt.UTC,
            )
        else:
            moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _Reject(Refusal.INVALID_TIMESTAMP) from None
    return _checked_instant(moment, now)


def _duration(value: object, scale: int = 1) -> int | None:
    """A duration in ms (``scale`` 1000 for seconds) when it is a usable one, else None."""
    number = _number(value)
    if number is None:
        return None
    ms = round(number * scale)
    return ms if 1 <= ms <= MAX_MS_PLAYED else None


def _ms_played(value: object) -> int:
    if value is None:
        raise _Reject(Refusal.MISSING_MS_PLAYED)
    number = _number(value) if not isinstance(value, str) else None
    if number is None or number != int(number):
        raise _Reject(Refusal.INVALID_MS_PLAYED)
    if not 0 <= number <= MAX_MS_PLAYED:
        raise _Reject(Refusal.MS_PLAYED_OUT_OF_RANGE)
    return int(number)


def _object(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Reject(Refusal.MALFORMED_RECORD)
    return value


def _sub_object(value: object) -> Mapping[str, Any]:
    """An optional nested object: ``{}`` when absent or of another type."""
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------- reading


class _Meter:
    """A progress bar over the bytes of a long input, nothing for a short one."""

    def __init__(self, progress: ProgressFactory | None, total: int, name: str) -> None:
        wanted = progress is not None and total >= PROGRESS_MIN_BYTES
        self._bar = progress(total, name, "B") if wanted and progress else None

    def advance(self, size: int) -> None:
        if self._bar is not None:
            self._bar.update(size)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _record_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.rstrip("\r\n")
    return text if len(text) <= MAX_RECORD_CHARS else text[: MAX_RECORD_CHARS - 1] + "…"


def _lines(
    stream: IO[bytes], meter: _Meter, where: str = "line "
) -> Iterator[tuple[str, str | Refused]]:
    """(position, text) of each non-blank line, or a :class:`Refused` row for a line that is
    too long or not UTF-8. A long line is skipped in pieces, never held whole."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        meter.advance(len(line))
        position = f"{where}{number}"
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            head = line[:MAX_RECORD_CHARS]
            while line and not line.endswith(b"\n"):
                line = stream.readline(MAX_LINE_BYTES)
                meter.advance(len(line))
            yield position, Refused(position, Refusal.LINE_TOO_LONG, _record_text(head))
            continue
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield position, Refused(position, Refusal.INVALID_ENCODING, _record_text(line))
            continue
        if text.strip():
            yield position, text


def _json_line(position: str, text: str) -> object | Refused:
    try:
        value: object = json.loads(text)
        return value
    except (ValueError, RecursionError):  # not JSON, a number beyond int's digits, deep nesting
        return Refused(position, Refusal.MALFORMED_RECORD, _record_text(text))


def _read_document(path: Path, stream: IO[bytes], meter: _Meter) -> object:
    """A whole JSON document, bounded by :data:`MAX_DOCUMENT_BYTES`."""
    raw = stream.read(MAX_DOCUMENT_BYTES + 1)
    meter.advance(len(raw))
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ImportInputError(
            f"{path}: a JSON document over {MAX_DOCUMENT_BYTES >> 20} MiB; split it or "
            "convert it to JSON lines (one listen a line)"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportInputError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportInputError(
            f"{path}: not a JSON document ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ImportInputError(f"{path}: not a readable JSON document ({exc})") from None


def _starts_with(stream: IO[bytes], *starts: bytes) -> bool:
    """Whether the first byte after a byte order mark and spaces is one of ``starts``; the
    stream is left at its beginning."""
    head = stream.read(4096)
    stream.seek(0)
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] in starts


def _each(
    items: object, path: Path, read: Callable[[Mapping[str, Any]], Listen], what: str
) -> Iterator[Parsed]:
    if not isinstance(items, list):
        raise ImportInputError(f"{path}: expected a JSON array of {what}")
    for index, item in enumerate(items, 1):
        yield _guarded(f"item {index}", item, read)


def _guarded(position: str, item: object, read: Callable[[Mapping[str, Any]], Listen]) -> Parsed:
    try:
        return read(_object(item))
    except _Reject as exc:
        try:
            record = json.dumps(item, ensure_ascii=False)
        except (ValueError, RecursionError):
            record = repr(item)[:MAX_RECORD_CHARS]
        return Refused(position, exc.reason, _record_text(record))


# ----------------------------------------------------------------------- ListenBrainz


def _listenbrainz_listen(
    listen: Mapping[str, Any], file_user: str | None, default_user: str | None, now: dt.datetime
) -> Listen:
    meta = _object(listen.get("track_metadata"))
    user_id = _user(listen.get("user_name") or file_user, default_user)
    played_at = _unix_instant(listen.get("listened_at"), now)
    artist = _text(meta.get("artist_name"), Refusal.MISSING_ARTIST)
    title = _text(meta.get("track_name"), Refusal.MISSING_TITLE)
    info = _sub_object(meta.get("additional_info"))
    mapping = _sub_object(meta.get("mbid_mapping"))
    track_id = (
        mbid_id(mapping.get("recording_mbid"))
        or mbid_id(info.get("recording_mbid"))
        or spotify_track_id(info.get("spotify_id"))
    )
    artist_id, artist_name = None, artist
    for source in (mapping, info):
        mbids = source.get("artist_mbids")
        if isinstance(mbids, list) and mbids and mbid_id(mbids[0]):
            artist_id = mbid_id(mbids[0])
            credits = source.get("artists")
            if isinstance(credits, list) and credits and isinstance(credits[0], dict):
                artist_name = _optional_text(credits[0].get("artist_credit_name")) or artist
            break
    duration = _duration(info.get("duration_ms")) or _duration(info.get("duration"), 1000)
    track = _make_track(
        artist_name,
        title,
        track_id=track_id,
        artist_id=artist_id,
        duration_ms=duration,
        album=meta.get("release_name"),
    )
    return Listen(user_id, track, played_at)


def parse_listenbrainz(
    path: Path, default_user: str | None, now: dt.datetime, progress: ProgressFactory | None
) -> Iterator[Parsed]:
    """The listens of a ListenBrainz export: the ZIP the site gives (``user.json`` names the
    listener, ``listens/<year>/<month>.jsonl`` hold the listens), one of its JSON-lines files,
    or the older JSON array (each listen with ``user_name``)."""
    with path.open("rb") as stream:
        is_archive = stream.read(4) == b"PK\x03\x04"
        stream.seek(0)
        if is_archive:
            yield from _listenbrainz_archive(path, default_user, now, progress)
            return
        meter = _Meter(progress, path.stat().st_size, path.name)
        try:
            if _is_json_document(stream):
                document = _read_document(path, stream, meter)
                file_user = None
                if isinstance(document, dict):  # the API's {"payload": {"listens": [...]}}
                    payload = _sub_object(document.get("payload"))
                    user = payload.get("user_id")
                    file_user = user if isinstance(user, str) else None
                    document = payload.get("listens")
                read = functools.partial(
                    _listenbrainz_listen, file_user=file_user, default_user=default_user, now=now
                )
                yield from _each(document, path, read, "listens")
                return
            yield from _listenbrainz_lines(stream, meter, None, default_user, now)
        finally:
            meter.close()


def _is_json_document(stream: IO[bytes]) -> bool:
    """Whether the file is one JSON document (an array, or an object over several lines)
    rather than JSON lines; the stream is left at its beginning."""
    first = stream.readline(MAX_LINE_BYTES + 1).removeprefix(b"\xef\xbb\xbf").strip()
    stream.seek(0)
    if first.startswith(b"["):
        return True
    if not first.startswith(b"{"):
        return False
    try:
        value = json.loads(first)
    except (ValueError, RecursionError):
        return first == b"{"  # a pretty-printed object; else a broken line, refused alone
    return isinstance(value, dict) and "payload" in value


def _listenbrainz_lines(
    stream: IO[bytes],
    meter: _Meter,
    file_user: str | None,
    default_user: str | None,
    now: dt.datetime,
    where: str = "",
) -> Iterator[Parsed]:
    for position, text in _lines(stream, meter, f"{where}:" if where else "line "):
        if isinstance(text, Refused):
            yield text
            continue
        item = _json_line(position, text)
        if isinstance(item, Refused):
            yield item
            continue
        try:
            yield _listenbrainz_listen(_object(item), file_user, default_user, now)
        except _Reject as exc:
            yield Refused(position, exc.reason, _record_text(text))


def _listenbrainz_archive(
    path: Path, default_user: str | None, now: dt.datetime, progress: ProgressFactory | None
) -> Iterator[Parsed]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportInputError(f"{path}: not a readable ZIP archive ({exc})") from None
    with archive:
        # listens/<year>/<month>.jsonl; feedback.jsonl and pinned_recording.jsonl are not plays.
        members = sorted(
            (
                m
                for m in archive.infolist()
                if m.filename.endswith(".jsonl") and "listens/" in m.filename and not m.is_dir()
            ),
            key=lambda m: m.filename,
        )
        if not members:
            raise ImportInputError(f"{path}: a ZIP archive without listens/*.jsonl files")
        total = sum(m.file_size for m in members)
        if total > MAX_ARCHIVE_BYTES:
            raise ImportInputError(
                f"{path}: the listens would unpack to {total >> 20} MiB, over the "
                f"{MAX_ARCHIVE_BYTES >> 30} GiB this importer reads"
            )
        file_user = _archive_user(archive)
        meter = _Meter(progress, total, path.name)
        try:
            for member in members:
                with archive.open(member) as stream:
                    yield from _listenbrainz_lines(
                        stream, meter, file_user, default_user, now, where=member.filename
                    )
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            OSError,
            EOFError,
            NotImplementedError,  # a compression method zipfile does not read
            RuntimeError,  # an encrypted member
        ) as exc:
            raise ImportInputError(f"{path}: the ZIP archive is damaged ({exc})") from None
        finally:
            meter.close()


def _archive_user(archive: zipfile.ZipFile) -> str | None:
    """The listener of a ListenBrainz export (``user.json``: ``{"username": ...}``)."""
    try:
        with archive.open("user.json") as stream:
            info = json.loads(stream.read(MAX_LINE_BYTES))
    except (KeyError, ValueError, RecursionError, zipfile.BadZipFile):
        return None
    name = info.get("username") if isinstance(info, dict) else None
    return name if isinstance(name, str) else None


# ---------------------------------------------------------------------------- Last.fm


def _lastfm_api_track(
    track: Mapping[str, Any], file_user: str | None, default_user: str | None, now: dt.datetime
) -> Listen:
    if _sub_object(track.get("@attr")).get("nowplaying") in ("true", True):
        raise _Reject(Refusal.NOW_PLAYING)
    user_id = _user(file_user, default_user)
    played_at = _unix_instant(_sub_object(track.get("date")).get("uts"), now)
    artist_field = track.get("artist")
    if isinstance(artist_field, dict):  # "#text", or "name" with extended=1
        artist_value = artist_field.get("#text", artist_field.get("name"))
        artist_mbid = artist_field.get("mbid")
    else:
        artist_value, artist_mbid = artist_field, None
    artist = _text(artist_value, Refusal.MISSING_ARTIST)
    title = _text(track.get("name"), Refusal.MISSING_TITLE)
    return Listen(
        user_id,
        _make_track(
            artist,
            title,
            track_id=mbid_id(track.get("mbid")),
            artist_id=mbid_id(artist_mbid),
            album=track.get("album"),
        ),
        played_at,
    )


def _lastfm_pages(document: object, path: Path) -> Iterator[tuple[str | None, list[Any]]]:
    """(listener, tracks) of each page: one ``user.getRecentTracks`` response, a JSON array
    of them, or a JSON array of tracks."""
    pages = document if isinstance(document, list) else [document]
    if isinstance(document, list) and all(
        isinstance(p, dict) and "recenttracks" not in p for p in pages
    ):
        yield None, pages  # an array of tracks
        return
    for page in pages:
        recent = _sub_object(_sub_object(page).get("recenttracks"))
        tracks = recent.get("track")
        if not isinstance(tracks, list | dict):
            raise ImportInputError(
                f"{path}: expected Last.fm user.getRecentTracks pages "
                '({"recenttracks": {"track": [...]}})'
            )
        user = _sub_object(recent.get("@attr")).get("user")
        yield (
            (user if isinstance(user, str) else None),
            (
                tracks if isinstance(tracks, list) else [tracks]  # a page of one track
            ),
        )


#: Last.fm CSV header names (case-folded) -> the field they hold.
_LASTFM_COLUMNS = {
    "artist": "artist",
    "artist_name": "artist",
    "artist_mbid": "artist_mbid",
    "album": "album",
    "track": "track",
    "title": "track",
    "name": "track",
    "track_name": "track",
    "track_mbid": "track_mbid",
    "mbid": "track_mbid",
    "uts": "uts",
    "timestamp": "uts",
    "date": "date",
    "utc_time": "date",
    "datetime": "date",
    "time": "date",
    "user": "user",
    "username": "user",
    "user_name": "user",
}
#: benjaminbenben's lastfm-to-csv, which writes no header.
_LASTFM_HEADERLESS = ("artist", "album", "track", "date")


def _lastfm_csv_row(row: Mapping[str, str], default_user: str | None, now: dt.datetime) -> Listen:
    user_id = _user(row.get("user"), default_user)
    uts = row.get("uts", "").strip()
    played_at = _unix_instant(uts, now) if uts else _text_instant(row.get("date"), now)
    artist = _text(row.get("artist"), Refusal.MISSING_ARTIST)
    title = _text(row.get("track"), Refusal.MISSING_TITLE)
    return Listen(
        user_id,
        _make_track(
            artist,
            title,
            track_id=mbid_id(row.get("track_mbid")),
            artist_id=mbid_id(row.get("artist_mbid")),
            album=row.get("album"),
        ),
        played_at,
    )


def parse_lastfm(
    path: Path, default_user: str | None, now: dt.datetime, progress: ProgressFactory | None
) -> Iterator[Parsed]:
    """The scrobbles of a Last.fm export: JSON of ``user.getRecentTracks`` pages, or CSV
    (``artist,album,track,date`` without a header, or with a header naming the columns,
    ``uts`` and MBIDs included)."""
    with path.open("rb") as stream:
        meter = _Meter(progress, path.stat().st_size, path.name)
        try:
            if _starts_with(stream, b"[", b"{"):
                document = _read_document(path, stream, meter)
                for page, (user, tracks) in enumerate(_lastfm_pages(document, path), 1):
                    read = functools.partial(
                        _lastfm_api_track, file_user=user, default_user=default_user, now=now
                    )
                    for index, item in enumerate(tracks, 1):
                        yield _guarded(f"page {page} item {index}", item, read)
                return
            yield from _lastfm_csv(stream, meter, default_user, now)
        finally:
            meter.close()


def _lastfm_csv(
    stream: IO[bytes], meter: _Meter, default_user: str | None, now: dt.datetime
) -> Iterator[Parsed]:
    # One scrobble a line: a quoted line break would make every later line wrong.
    columns: list[str] | None = None
    for position, text in _lines(stream, meter):
        if isinstance(text, Refused):
            yield text
            continue
        try:
            cells = next(csv.reader([text.rstrip("\r\n")]))
        except (csv.Error, StopIteration):
            yield Refused(position, Refusal.MALFORMED_RECORD, _record_text(text))
            continue
        if columns is None:
            names = [_LASTFM_COLUMNS.get(cell.strip().casefold(), "") for cell in cells]
            if "artist" in names and "track" in names:
                columns = names
                continue
            columns = list(_LASTFM_HEADERLESS)
        if len(cells) != len(columns):
            yield Refused(position, Refusal.MALFORMED_RECORD, _record_text(text))
            continue
        row = {name: cell for name, cell in zip(columns, cells, strict=True) if name}
        try:
            yield _lastfm_csv_row(row, default_user, now)
        except _Reject as exc:
            yield Refused(position, exc.reason, _record_text(text))


# ---------------------------------------------------------------------------- Spotify


_SPOTIFY_NOT_MUSIC = (
    "episode_name",
    "episode_show_name",
    "spotify_episode_uri",
    "audiobook_title",
    "audiobook_uri",
    "audiobook_chapter_uri",
)


def _spotify_stream(row: Mapping[str, Any], default_user: str | None, now: dt.datetime) -> Listen:
    if any(row.get(name) for name in _SPOTIFY_NOT_MUSIC):
        raise _Reject(Refusal.NOT_MUSIC)
    user_id = _user(row.get("username"), default_user)
    played_at = _text_instant(row.get("ts"), now)
    ms_played = _ms_played(row.get("ms_played"))
    artist = _text(row.get("master_metadata_album_artist_name"), Refusal.MISSING_ARTIST)
    title = _text(row.get("master_metadata_track_name"), Refusal.MISSING_TITLE)
    # A stream played to its end tells the track's length.
    finished = row.get("reason_end") == "trackdone" and ms_played > 0
    track = _make_track(
        artist,
        title,
        track_id=spotify_track_id(row.get("spotify_track_uri")),
        duration_ms=ms_played if finished else None,
        album=row.get("master_metadata_album_album_name"),
    )
    return Listen(user_id, track, played_at, ms_played)


def parse_spotify(
    path: Path, default_user: str | None, now: dt.datetime, progress: ProgressFactory | None
) -> Iterator[Parsed]:
    """The music streams of Spotify's extended streaming history
    (``Streaming_History_Audio_*.json``: a JSON array of streams)."""
    with path.open("rb") as stream:
        meter = _Meter(progress, path.stat().st_size, path.name)
        try:
            document = _read_document(path, stream, meter)
        finally:
            meter.close()
    yield from _each(document, path, lambda row: _spotify_stream(row, default_user, now), "streams")


PARSERS: Mapping[
    str, Callable[[Path, str | None, dt.datetime, ProgressFactory | None], Iterator[Parsed]]
] = {
    "listenbrainz": parse_listenbrainz,
    "lastfm": parse_lastfm,
    "spotify": parse_spotify,
}


# ---------------------------------------------------------------------- the catalogue


@dataclass
class _Collected:
    """What one file's listens add: tracks, artists, listeners and the plays' columns."""

    tracks: dict[str, Track] = field(default_factory=dict)
    artists: dict[str, str] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    play_users: list[str] = field(default_factory=list)
    play_tracks: list[str] = field(default_factory=list)
    play_times: list[dt.datetime] = field(default_factory=list)
    play_ms: list[int | None] = field(default_factory=list)

    def add(self, listen: Listen) -> None:
        track = listen.track
        known = self.tracks.get(track.track_id)
        if known is None:
            self.tracks[track.track_id] = track
        elif (track.duration_ms or 0) > (known.duration_ms or 0):
            # The first sighting names the track; the longest known length wins.
            self.tracks[track.track_id] = replace(known, duration_ms=track.duration_ms)
        known_track = self.tracks[track.track_id]
        self.artists.setdefault(known_track.artist_id, known_track.artist_name)
        self.users.add(listen.user_id)
        self.play_users.append(listen.user_id)
        self.play_tracks.append(track.track_id)
        self.play_times.append(listen.played_at)
        self.play_ms.append(listen.ms_played)


_APPENDABLE = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def _kind_of(path: Path) -> str:
    kind = "parquet" if path.suffix.lower() == ".parquet" else _APPENDABLE.get(path.suffix.lower())
    if path.is_dir() or kind is None:
        raise ImportInputError(
            f"{path}: the importer adds to a catalog held in one uncompressed .parquet, .csv "
            "or .jsonl file; convert this one first"
        )
    return kind


def _existing_rows(path: Path, kind: str, columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The catalog file's rows, ``columns`` only (unreadable JSON lines left out: the
    aggregation quarantines them)."""
    try:
        if kind == "parquet":
            present = [c for c in columns if c in pq.read_schema(path).names]
            yield from pq.read_table(path, columns=present).to_pylist()
        elif kind == "csv":
            with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
                for row in csv.DictReader(handle):
                    yield {k.strip(): v for k, v in row.items() if isinstance(k, str)}
        else:
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        row = json.loads(line)
                    except (ValueError, RecursionError):
                        continue
                    if isinstance(row, dict):
                        yield row
    except (OSError, pa.ArrowException, csv.Error) as exc:
        raise ImportInputError(f"{path}: cannot be read ({exc})") from None


def _add_rows(path: Path, kind: str, schema: pa.Schema, rows: list[dict[str, Any]]) -> None:
    """Add ``rows`` to a catalog file in its own format (a new file: Parquet)."""
    if not rows:
        return
    if not path.exists():
        _write_parquet(pa.Table.from_pylist(rows, schema=schema), path)
    elif kind == "parquet":
        existing = pq.read_table(path)
        added = pa.Table.from_pylist(rows, schema=existing.schema)
        _write_parquet(pa.concat_tables([existing, added]), path)
    elif kind == "csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), [])
        names = [name.strip() for name in header]
        with path.open("rb+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                needs_newline = handle.read(1) != b"\n"
            else:
                needs_newline = False
        with path.open("a", encoding="utf-8", newline="") as handle:
            if needs_newline:
                handle.write("\n")
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerows([["" if r.get(n) is None else r[n] for n in names] for r in rows])
    else:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size:
                handle.seek(-1, os.SEEK_END)
            needs_newline = size > 0 and handle.read(1) != b"\n"
        with path.open("a", encoding="utf-8") as handle:
            if needs_newline:
                handle.write("\n")
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Written beside the target under a hidden name and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(table, partial)
    partial.replace(path)


def merge_catalog(data_dir: Path, collected: _Collected, report: ImportReport) -> dict[str, int]:
    """Add the new artists, tracks (and listeners, when ``catalog/users.*`` exists) to the
    data directory's catalog; returns each imported track's catalogued duration (ms)."""
    artists_path = find_catalog_file(data_dir, ARTISTS.name, required=False)
    tracks_path = find_catalog_file(data_dir, TRACKS.name, required=False)
    users_path = find_catalog_file(data_dir, USERS.name, required=False)
    durations: dict[str, int] = {}
    known_artists: set[str] = set()
    plan: list[tuple[Path, str, pa.Schema, list[dict[str, Any]]]] = []

    if tracks_path is not None:
        kind = _kind_of(tracks_path)
        for row in _existing_rows(tracks_path, kind, ("track_id", "duration_ms")):
            track_id = str(row.get("track_id") or "").strip()
            if track_id in collected.tracks and track_id not in durations:
                duration = _duration(row.get("duration_ms"))
                durations[track_id] = duration or UNKNOWN_DURATION_MS
    new_tracks = [t for t in collected.tracks.values() if t.track_id not in durations]
    for track in new_tracks:
        durations[track.track_id] = track.duration_ms or UNKNOWN_DURATION_MS

    if artists_path is not None:
        kind = _kind_of(artists_path)
        known_artists = {
            str(row.get("artist_id") or "").strip()
            for row in _existing_rows(artists_path, kind, ("artist_id",))
        }
    new_artists = {a: n for a, n in collected.artists.items() if a not in known_artists}
    new_artist_ids = {t.artist_id for t in new_tracks}
    new_artists = {a: n for a, n in new_artists.items() if a in new_artist_ids}

    artists_target = artists_path or data_dir / "catalog" / f"{ARTISTS.name}.parquet"
    tracks_target = tracks_path or data_dir / "catalog" / f"{TRACKS.name}.parquet"
    plan.append(
        (
            artists_target,
            _kind_of(artists_target) if artists_path else "parquet",
            ARTISTS.schema,
            [{"artist_id": a, "name": n} for a, n in sorted(new_artists.items())],
        )
    )
    plan.append(
        (
            tracks_target,
            _kind_of(tracks_target) if tracks_path else "parquet",
            TRACKS.schema,
            [
                {
                    "track_id": t.track_id,
                    "title": t.title,
                    "artist_id": t.artist_id,
                    "duration_ms": durations[t.track_id],
                    "album": t.album,
                    **t.links(),
                }
                for t in sorted(new_tracks, key=lambda t: t.track_id)
            ],
        )
    )
    # Without a users table every listener is accepted; a new one would refuse the others.
    if users_path is not None:
        kind = _kind_of(users_path)
        known_users = {
            str(row.get("user_id") or "").strip()
            for row in _existing_rows(users_path, kind, ("user_id",))
        }
        new_users = sorted(collected.users - known_users)
        plan.append((users_path, kind, USERS.schema, [{"user_id": u} for u in new_users]))
        report.new_users = len(new_users)
    # Artists before tracks before plays: each file only names what is already there.
    for path, kind, schema, rows in plan:
        _add_rows(path, kind, schema, rows)
    report.new_artists = len(new_artists)
    report.new_tracks = len(new_tracks)
    return durations


# ------------------------------------------------------------------------------- run


def input_digest(path: Path, fmt: str, default_user: str | None) -> str:
    """The name of an import's files: a hash of the input's bytes, its format and
    ``--user``."""
    digest = hashlib.sha256(f"{fmt}\0{default_user or ''}\0".encode())
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:24]


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """One import at a time per data directory (the catalog is read, then added to)."""
    lock_path = data_dir / "imports" / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def import_history(
    fmt: str,
    source: Path,
    data_dir: Path,
    *,
    default_user: str | None = None,
    progress: ProgressFactory | None = None,
    now: dt.datetime | None = None,
) -> ImportReport:
    """Import one export file of format ``fmt`` (:data:`FORMATS`) into ``data_dir``.

    Parameters
    ----------
    default_user : str, optional
        The listener of rows whose file names none (a Last.fm CSV); a listener the file
        names wins.
    now : datetime.datetime, optional
        Listens after it are refused (default: the current time).

    Raises
    ------
    ImportInputError
        If the file cannot be read as the format at all, or the catalog cannot be added to.
    FileNotFoundError
        If ``source`` does not exist.
    """
    if fmt not in PARSERS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if default_user is not None and not is_valid_id(default_user):
        raise ValueError(f"user {default_user!r} is not a valid listener id")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    now = now or dt.datetime.now(dt.UTC)
    data_dir.mkdir(parents=True, exist_ok=True)
    report = ImportReport(source=source, format=fmt)
    try:
        name = f"{fmt}-{input_digest(source, fmt, default_user)}"
        refused_path = data_dir / "imports" / "refused" / f"{name}.jsonl"
        refused_path.parent.mkdir(parents=True, exist_ok=True)
        partial_refused = refused_path.with_name(f".{refused_path.name}.partial")
        collected = _Collected()
        with partial_refused.open("w", encoding="utf-8") as refused_out:
            for row in PARSERS[fmt](source, default_user, now, progress):
                if isinstance(row, Refused):
                    report.refused[row.reason.value] += 1
                    entry = {"position": row.position, "reason": row.reason, "record": row.record}
                    refused_out.write(json.dumps(entry, ensure_ascii=False) + "\n")
                else:
                    collected.add(row)
        with _locked(data_dir):
            durations = merge_catalog(data_dir, collected, report)
            report.events_file = _write_plays(data_dir, name, collected, durations)
            if report.refused_total:
                partial_refused.replace(refused_path)
                report.refused_file = refused_path
            else:
                refused_path.unlink(missing_ok=True)
    except OSError as exc:
        raise ImportInputError(f"{exc.filename or source}: {exc.strerror or exc}") from None
    finally:
        if "partial_refused" in locals():
            partial_refused.unlink(missing_ok=True)
    report.kept = len(collected.play_users)
    report.listeners = len(collected.users)
    log.info(
        "%s (%s): %d plays kept, %d refused %s",
        source,
        fmt,
        report.kept,
        report.refused_total,
        dict(report.refused),
    )
    return report


def _write_plays(
    data_dir: Path, name: str, collected: _Collected, durations: Mapping[str, int]
) -> Path | None:
    """The plays as one Parquet file, named after the input: importing it again replaces it."""
    path = data_dir / "events" / "plays" / "imported" / f"{name}.parquet"
    if not collected.play_users:
        path.unlink(missing_ok=True)
        return None
    # A scrobble lasted the track; a track of unknown length gets a play that counts as
    # completed whatever its catalogued length.
    ms_played = [
        ms if ms is not None else _scrobble_ms(durations.get(track_id))
        for ms, track_id in zip(collected.play_ms, collected.play_tracks, strict=True)
    ]
    table = pa.Table.from_arrays(
        [
            pa.array(collected.play_users, pa.string()),
            pa.array(collected.play_tracks, pa.string()),
            pa.array(collected.play_times, PLAYS.schema.field("played_at").type),
            pa.array(ms_played, pa.int64()),
        ],
        schema=PLAYS.schema,
    )
    _write_parquet(table, path)
    return path


def _scrobble_ms(duration_ms: int | None) -> int:
    if duration_ms is None or duration_ms == UNKNOWN_DURATION_MS:
        return COMPLETED_MS
    return duration_ms


def describe(report: ImportReport) -> list[str]:
    """The report in a few lines, for the command to print."""
    lines = [
        f"{report.source}: {report.kept:,} plays of {report.listeners:,} listeners kept, "
        f"{report.refused_total:,} rows refused; {report.new_tracks:,} new tracks, "
        f"{report.new_artists:,} new artists"
        + (f", {report.new_users:,} new listeners" if report.new_users else "")
    ]
    if report.refused:
        reasons = ", ".join(f"{r}={n:,}" for r, n in sorted(report.refused.items()))
        lines.append(f"  refused: {reasons} (the rows: {report.refused_file})")
    if report.refused.get(Refusal.MISSING_USER_ID.value):
        lines.append("  the file names no listener for some rows: give --user")
    if report.events_file is not None:
        lines.append(f"  plays: {report.events_file}")
    return lines

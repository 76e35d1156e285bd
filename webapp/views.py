"""Shapes of playlists, tracks and runs as the pages and the API show them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from recsys.db.models import Feedback, ModelVersion, Track, WeeklyRun
from recsys.db.repository import (
    SHOWN_FIELDS,
    PlaylistSummary,
    PublishedPlaylist,
    is_new_release,
)


def track_document(track: Track) -> dict[str, Any]:
    return {
        "track_id": track.track_id,
        "title": track.title,
        "artist_id": track.artist_id,
        "artist": track.artist.name,
        "duration_ms": track.duration_ms,
        "released_at": track.released_at.isoformat() if track.released_at else None,
        **{name: getattr(track, name) for name in SHOWN_FIELDS if name != "released_at"},
    }


def playlist_document(playlist: PublishedPlaylist) -> dict[str, Any]:
    """The JSON document of a playlist (also what the page renders).

    Tracks the listener has since thumbed down are left out, and the header's counts and
    length are of the tracks left; ``thumb`` says "up" for tracks they liked.
    """
    thumbs = playlist.thumbs
    stored = playlist.tracks()
    tracks = []
    for track in stored:
        thumb = thumbs.get(track["track_id"], 0)
        if thumb < 0:
            continue
        tracks.append(track | {"thumb": "up" if thumb > 0 else None})
    duration = sum(int(track.get("duration_ms", 0)) for track in tracks)
    new = sum(is_new_release(track.get("released_at"), playlist.week_start) for track in tracks)
    header = _playlist_header(playlist, len(tracks), duration, new)
    return header | {"removed": len(stored) - len(tracks), "tracks": tracks}


def playlist_json(playlist: PublishedPlaylist) -> str:
    """:func:`playlist_document` as compact JSON text. Without thumbs on its tracks (the
    usual case) the stored tracks are spliced in as they are, without parsing them."""
    if playlist.thumbs or playlist.duration_ms is None or playlist.new_releases is None:
        return _compact(playlist_document(playlist))
    count = playlist.tracks_json.count('"position":')
    header = _playlist_header(playlist, count, playlist.duration_ms, playlist.new_releases)
    return f'{_compact(header | {"removed": 0})[:-1]},"tracks":{playlist.tracks_json}}}'


def _playlist_header(
    playlist: PublishedPlaylist, count: int, duration_ms: int, new_releases: int
) -> dict[str, Any]:
    name = playlist.display_name or playlist.user_id
    popular = playlist.kind == "popular"
    parts = [f"{count} track{'' if count == 1 else 's'}", length_text(duration_ms)]
    if new_releases:
        parts.append(f"{new_releases} new release{'' if new_releases == 1 else 's'}")
    return {
        "user_id": playlist.user_id,
        "week_start": playlist.week_start.isoformat(),
        "title": f"{'Popular picks' if popular else 'Discoveries'} for {name}",
        "description": f"Week of {week_label(playlist.week_start)}: {', '.join(parts)}",
        "model_version": playlist.model_version,
        "kind": playlist.kind,
        "duration_ms": duration_ms,
        "new_releases": new_releases,
    }


def length_text(ms: int) -> str:
    """A playlist's length as people say it: "3 h 12 min", "48 min"."""
    minutes = round(max(0, ms) / 60_000)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def week_label(day: dt.date) -> str:
    """A week's Monday as "30 November 2026"."""
    return f"{day:%d %B %Y}".lstrip("0")


def _compact(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


def playlist_summary_document(summary: PlaylistSummary) -> dict[str, Any]:
    return {
        "week_start": summary.week_start.isoformat(),
        "kind": summary.kind,
        "model_version": summary.model_version,
        "tracks": summary.tracks,
        "removed": summary.removed,
        "covers": [cover.image_url for cover in summary.covers if cover.image_url],
    }


def feedback_document(row: Feedback) -> dict[str, Any]:
    return {
        "id": row.id,
        "track_id": row.track_id,
        "value": "up" if row.value > 0 else "down",
        "rated_at": _iso(row.rated_at),
        "source": row.source,
    }


def run_document(run: WeeklyRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "week_start": run.week_start.isoformat(),
        "status": run.status,
        "trigger": run.trigger,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at) if run.finished_at else None,
        "model_version": run.model_version,
        "error": run.error,
        "steps": [
            {
                "step": step.step,
                "chunk": step.chunk,
                "status": step.status,
                "attempts": step.attempts,
                "seconds": step.seconds,
                "counts": step.counts,
                "error": step.error,
            }
            for step in run.steps
        ],
    }


def model_document(model: ModelVersion) -> dict[str, Any]:
    return {
        "version": model.version,
        "week_start": model.week_start.isoformat(),
        "status": model.status,
        "created_at": _iso(model.created_at),
        "n_users": model.n_users,
        "n_tracks": model.n_tracks,
        "n_interactions": model.n_interactions,
        "train_seconds": model.train_seconds,
        "params": model.params,
        "metrics": model.metrics,
        "gate_reason": model.gate_reason,
    }


def _iso(moment: Any) -> str:
    text: str = moment.isoformat()
    # SQLite returns naive datetimes; every stored time is UTC.
    return text if moment.tzinfo is not None else text + "+00:00"

"""Shapes of playlists as the pages and the API show them."""

from __future__ import annotations

from typing import Any

from recsys.db.models import Playlist


def playlist_document(playlist: Playlist) -> dict[str, Any]:
    """The JSON document of a playlist (also what the page renders)."""
    return {
        "user_id": playlist.user_id,
        "week_start": playlist.week_start.isoformat(),
        "model_version": playlist.model_version,
        "kind": playlist.kind,
        "tracks": [
            {
                "position": entry.position,
                "track_id": entry.track_id,
                "title": entry.track.title,
                "artist_id": entry.track.artist_id,
                "artist": entry.track.artist.name,
                "duration_ms": entry.track.duration_ms,
                "score": round(entry.score, 6),
                "reason": entry.reason,
            }
            for entry in playlist.tracks
        ],
    }

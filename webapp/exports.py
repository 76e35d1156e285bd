"""A week's playlist as files other players and services read: JSPF (the JSON form of XSPF
that ListenBrainz uses), XSPF and extended M3U (UTF-8, ``.m3u8``).

Each is made from the playlist document (:func:`webapp.views.playlist_document`), so it
holds what the listener's page shows: thumbed-down tracks are left out.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response

#: The JSPF extension key of the tracks' own fields (track id, reason, score).
TRACK_EXTENSION = "urn:x-cratedigger:track"
XSPF_NAMESPACE = "http://xspf.org/ns/0/"
MUSICBRAINZ_RECORDING = "https://musicbrainz.org/recording/"


@dataclass(frozen=True)
class ExportFormat:
    name: str
    extension: str
    mimetype: str
    render: Callable[[Mapping[str, Any]], str]


def _locations(track: Mapping[str, Any]) -> list[str]:
    """Where the track can be played: its preview, then its page on the music service."""
    return [url for url in (track.get("preview_url"), track.get("external_url")) if url]


def _identifiers(track: Mapping[str, Any]) -> list[str]:
    mbid = track.get("musicbrainz_recording_id")
    return [MUSICBRAINZ_RECORDING + mbid] if mbid else []


def _date(document: Mapping[str, Any]) -> str:
    return f"{document['week_start']}T00:00:00Z"


def jspf(document: Mapping[str, Any]) -> str:
    """The playlist as JSPF (https://xspf.org/jspf): XSPF's elements as JSON, a track's
    ``location`` and ``identifier`` as lists."""
    tracks = []
    for track in document["tracks"]:
        entry: dict[str, Any] = {
            "location": _locations(track),
            "identifier": _identifiers(track),
            "title": track["title"],
            "creator": track["artist"],
        }
        if track.get("reason"):
            entry["annotation"] = track["reason"]
        if track.get("external_url"):
            entry["info"] = track["external_url"]
        if track.get("image_url"):
            entry["image"] = track["image_url"]
        if track.get("album"):
            entry["album"] = track["album"]
        entry["trackNum"] = track["position"]
        entry["duration"] = int(track["duration_ms"])
        # The spec's shape: each application's key holds a list of its extension bodies.
        entry["extension"] = {
            TRACK_EXTENSION: [
                {
                    "track_id": track["track_id"],
                    "artist_id": track["artist_id"],
                    "score": track["score"],
                    "released_at": track.get("released_at"),
                    "isrc": track.get("isrc"),
                }
            ]
        }
        tracks.append(entry)
    playlist = {
        "title": document["title"],
        "creator": "cratedigger",
        "annotation": document["description"],
        "date": _date(document),
        "track": tracks,
    }
    return json.dumps({"playlist": playlist}, ensure_ascii=False, indent=2)


def xspf(document: Mapping[str, Any]) -> str:
    """The playlist as XSPF version 1 (https://xspf.org/spec), elements in the schema's
    order."""
    ET.register_namespace("", XSPF_NAMESPACE)

    def child(parent: ET.Element, tag: str, text: object) -> None:
        ET.SubElement(parent, f"{{{XSPF_NAMESPACE}}}{tag}").text = str(text)

    root = ET.Element(f"{{{XSPF_NAMESPACE}}}playlist", {"version": "1"})
    child(root, "title", document["title"])
    child(root, "creator", "cratedigger")
    child(root, "annotation", document["description"])
    child(root, "date", _date(document))
    track_list = ET.SubElement(root, f"{{{XSPF_NAMESPACE}}}trackList")
    for track in document["tracks"]:
        element = ET.SubElement(track_list, f"{{{XSPF_NAMESPACE}}}track")
        for location in _locations(track):
            child(element, "location", location)
        for identifier in _identifiers(track):
            child(element, "identifier", identifier)
        child(element, "title", track["title"])
        child(element, "creator", track["artist"])
        if track.get("reason"):
            child(element, "annotation", track["reason"])
        if track.get("external_url"):
            child(element, "info", track["external_url"])
        if track.get("image_url"):
            child(element, "image", track["image_url"])
        if track.get("album"):
            child(element, "album", track["album"])
        child(element, "trackNum", track["position"])
        child(element, "duration", int(track["duration_ms"]))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def m3u(document: Mapping[str, Any]) -> str:
    """The playlist as extended M3U. A player needs a location per entry: tracks without a
    preview or a link are listed as comments."""
    lines = ["#EXTM3U", f"#PLAYLIST:{_one_line(document['title'])}"]
    for track in document["tracks"]:
        seconds = round(int(track["duration_ms"]) / 1000)
        label = _one_line(f"{track['artist']} - {track['title']}")
        locations = _locations(track)
        if locations:
            lines += [f"#EXTINF:{seconds},{label}", locations[0]]
        else:
            lines.append(f"# {label} (no location in the catalog)")
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    """Catalog text on one M3U line: line breaks would start a new entry."""
    return " ".join(str(text).split())


FORMATS: Mapping[str, ExportFormat] = {
    "jspf": ExportFormat("JSPF", "jspf", "application/json", jspf),
    "xspf": ExportFormat("XSPF", "xspf", "application/xspf+xml", xspf),
    "m3u": ExportFormat("M3U", "m3u8", "audio/x-mpegurl", m3u),
}


def filename(document: Mapping[str, Any], export: ExportFormat) -> str:
    """``cratedigger-<listener>-<week>.<extension>`` (ids are safe in file names)."""
    return f"cratedigger-{document['user_id']}-{document['week_start']}.{export.extension}"


def download(document: Mapping[str, Any], export: ExportFormat) -> Response:
    """The playlist in ``export``'s format, as an attachment to save."""
    return Response(
        export.render(document),
        mimetype=export.mimetype,
        headers={
            "Content-Disposition": f'attachment; filename="{filename(document, export)}"',
            "Cache-Control": "private, no-cache",
        },
    )

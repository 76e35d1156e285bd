"""A week's playlist as JSPF, XSPF and M3U through the API (the page's downloads are in
tests/test_webapp.py): the published shapes, what they hold, and hostile catalog text."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import jsonschema
import pytest

from tests.webworld import CATALOG_EXTRAS, HOSTILE_ARTIST, MBID, WEEK
from webapp.exports import jspf, m3u, xspf

URI = {"type": "string", "format": "uri"}
TEXT = {"type": "string"}
# JSPF as https://xspf.org/jspf publishes it (the JSON form of XSPF 1): written from the
# specification, not from the exporter, with every element the spec has and no others.
_LINKS = {"type": "array", "items": {"type": "object", "additionalProperties": URI}}
_METAS = {"type": "array", "items": {"type": "object", "additionalProperties": TEXT}}
_EXTENSIONS = {"type": "object", "additionalProperties": {"type": "array"}}
JSPF_SCHEMA = {
    "type": "object",
    "required": ["playlist"],
    "additionalProperties": False,
    "properties": {
        "playlist": {
            "type": "object",
            "required": ["track"],
            "additionalProperties": False,
            "properties": {
                "title": TEXT,
                "creator": TEXT,
                "annotation": TEXT,
                "info": URI,
                "location": URI,
                "identifier": URI,
                "image": URI,
                "date": {"type": "string", "format": "date-time"},
                "license": URI,
                "attribution": {"type": "array", "items": {"type": "object"}},
                "link": _LINKS,
                "meta": _METAS,
                "extension": _EXTENSIONS,
                "track": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "location": {"type": "array", "items": URI},
                            "identifier": {"type": "array", "items": URI},
                            "title": TEXT,
                            "creator": TEXT,
                            "annotation": TEXT,
                            "info": URI,
                            "image": URI,
                            "album": TEXT,
                            "trackNum": {"type": "integer", "minimum": 0},
                            "duration": {"type": "integer", "minimum": 0},
                            "link": _LINKS,
                            "meta": _METAS,
                            "extension": _EXTENSIONS,
                        },
                    },
                },
            },
        }
    },
}
NS = "{http://xspf.org/ns/0/}"
# XSPF 1's track elements in the order its schema requires.
XSPF_TRACK_ORDER = [
    "location",
    "identifier",
    "title",
    "creator",
    "annotation",
    "info",
    "image",
    "album",
    "trackNum",
    "duration",
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _get(client, token: str, fmt: str, week: str = str(WEEK)):
    return client.get(f"/api/v1/users/u1/playlists/{week}/{fmt}", headers=bearer(token))


def test_jspf_validates_against_the_published_shape(client, web_world) -> None:
    response = _get(client, web_world.u1, "jspf")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Content-Disposition"].endswith(f'"cratedigger-u1-{WEEK}.jspf"')
    document = response.get_json()
    jsonschema.validate(
        document, JSPF_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    playlist = document["playlist"]
    assert playlist["title"] == "Discoveries for Ada"
    assert playlist["date"] == f"{WEEK}T00:00:00Z" and "50 tracks" in playlist["annotation"]
    tracks = playlist["track"]
    assert [t["trackNum"] for t in tracks] == list(range(1, 51))
    first = tracks[0]
    extras = CATALOG_EXTRAS["t00"]
    assert first["location"] == [extras["preview_url"], extras["external_url"]]
    assert first["identifier"] == [f"https://musicbrainz.org/recording/{MBID}"]
    assert first["image"] == extras["image_url"] and first["album"] == extras["album"]
    assert first["creator"] == HOSTILE_ARTIST and first["duration"] == 61_000
    assert first["annotation"] == "reason 0"
    (extension,) = first["extension"]["urn:x-cratedigger:track"]
    assert extension["track_id"] == "t00" and extension["isrc"] == extras["isrc"]
    # A track without catalog links has empty lists, not invented locations.
    assert (
        tracks[3]["location"] == [] and tracks[3]["identifier"] == [] and "image" not in tracks[3]
    )


def test_xspf_is_xspf_1_with_elements_in_schema_order(client, web_world) -> None:
    response = _get(client, web_world.u1, "xspf", week="latest")
    assert response.status_code == 200 and response.mimetype == "application/xspf+xml"
    root = ET.fromstring(response.data)
    assert root.tag == f"{NS}playlist" and root.get("version") == "1"
    assert [child.tag.removeprefix(NS) for child in root] == [
        "title",
        "creator",
        "annotation",
        "date",
        "trackList",
    ]
    tracks = root.find(f"{NS}trackList")
    assert tracks is not None and len(tracks) == 50
    for track in tracks:
        tags = [child.tag.removeprefix(NS) for child in track]
        assert tags == sorted(tags, key=XSPF_TRACK_ORDER.index)
    first = tracks[0]
    assert first.findtext(f"{NS}creator") == HOSTILE_ARTIST  # escaped, and read back whole
    assert first.findtext(f"{NS}album") == "First <Album>"
    assert [e.text for e in first.findall(f"{NS}location")] == [
        CATALOG_EXTRAS["t00"]["preview_url"],
        CATALOG_EXTRAS["t00"]["external_url"],
    ]
    assert first.findtext(f"{NS}duration") == "61000"


def test_m3u_lists_what_can_be_played_and_notes_the_rest(client, web_world) -> None:
    response = _get(client, web_world.u1, "m3u")
    assert response.status_code == 200 and response.mimetype == "audio/x-mpegurl"
    lines = response.get_data(as_text=True).splitlines()
    assert lines[:2] == ["#EXTM3U", "#PLAYLIST:Discoveries for Ada"]
    assert lines[2:4] == [
        f"#EXTINF:61,{HOSTILE_ARTIST} - Song 0",
        CATALOG_EXTRAS["t00"]["preview_url"],
    ]
    assert lines[4] == "# Two - Song 1 (no location in the catalog)"
    assert len(lines) == 2 + 2 + 49


def test_exports_leave_out_thumbed_down_tracks(client, web_world) -> None:
    token = bearer(web_world.u1)
    client.post(
        "/api/v1/users/u1/feedback", json={"track_id": "t00", "value": "down"}, headers=token
    )
    tracks = _get(client, web_world.u1, "jspf").get_json()["playlist"]["track"]
    assert len(tracks) == 49 and tracks[0]["title"] == "Song 1"


def test_exports_answer_as_the_playlist_routes_do(client, web_world) -> None:
    assert client.get(f"/api/v1/users/u1/playlists/{WEEK}/jspf").status_code == 401
    assert _get(client, web_world.u2, "jspf").status_code == 404  # not u2's: not found
    assert _get(client, web_world.operator, "xspf").status_code == 200  # operators read all
    assert _get(client, web_world.u1, "jspf", week="2026-11-17").status_code == 404  # Tuesday
    assert _get(client, web_world.u1, "m3u", week="someday").status_code == 400
    assert _get(client, web_world.u1, "m3u", week="2020-01-06").status_code == 404
    missing = client.get("/api/v1/users/u3/playlists/latest/jspf", headers=bearer(web_world.u3))
    assert missing.status_code == 404


HOSTILE = {
    "user_id": "u1",
    "week_start": "2026-11-16",
    "title": "Discoveries for <Ada>\n#EXTINF:1,injected",
    "description": "Week of 16 November 2026: 1 track, 1 min",
    "tracks": [
        {
            "position": 1,
            "track_id": "t1",
            "artist_id": "a1",
            "title": 'Line\nbreak & "quotes" </title><script>',
            "artist": "]]> \u2603",
            "duration_ms": 1500,
            "external_url": "https://music.example/t1",
            "score": 1.0,
            "reason": None,
        }
    ],
}


@pytest.mark.parametrize("render", [jspf, xspf, m3u])
def test_hostile_catalog_text_stays_data(render) -> None:
    text = render(HOSTILE)
    if render is jspf:
        assert json.loads(text)["playlist"]["track"][0]["title"] == HOSTILE["tracks"][0]["title"]
    elif render is xspf:
        track = ET.fromstring(text.encode()).find(f"{NS}trackList/{NS}track")
        assert track is not None and track.findtext(f"{NS}title") == HOSTILE["tracks"][0]["title"]
        assert "<script>" not in text
    else:
        lines = text.splitlines()
        # Line breaks in catalog text cannot start entries of their own.
        assert lines == [
            "#EXTM3U",
            "#PLAYLIST:Discoveries for <Ada> #EXTINF:1,injected",
            '#EXTINF:2,]]> \u2603 - Line break & "quotes" </title><script>',
            "https://music.example/t1",
        ]

"""``cratedigger import``: ListenBrainz, Last.fm and Spotify exports into a data directory.

Every fixture is a small export in the real shape, written here by the test: ListenBrainz's
ZIP (``user.json``, ``listens/<year>/<month>.jsonl``) and its older JSON array, Last.fm's
CSV (benjaminbenben's lastfm-to-csv, without a header) and ``user.getRecentTracks`` JSON,
and Spotify's extended streaming history. Outputs are read back with pyarrow.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli.main import cli
from jobs.imports import (
    MAX_LINE_BYTES,
    UNKNOWN_DURATION_MS,
    ImportInputError,
    artist_key_id,
    import_history,
    track_key_id,
)
from recsys.contract import ARTISTS, COMPLETED_MS, TRACKS, is_valid_id

NOW = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
JOGA = "a2b2c3d4-0000-4000-8000-000000000001"
BJORK = "87c5dedd-371d-4a53-9f7f-80522fb7f3cb"
HUNTER = "a2b2c3d4-0000-4000-8000-000000000002"
SPOTIFY_ID = "4uLU6hMCjMI75M1A2tKUQC"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def ts(*args: int) -> int:
    return int(utc(*args).timestamp())


def lb_listen(
    listened_at: Any,
    artist: Any = "Björk",
    title: Any = "Jóga",
    *,
    recording: str | None = None,
    artist_mbid: str | None = None,
    duration_ms: int | None = None,
    spotify: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """A listen as ListenBrainz exports it (``mbid_mapping`` null when it found no match)."""
    info: dict[str, Any] = {"recording_msid": "5f3e7a1c-1111-4111-8111-111111111111"}
    if duration_ms is not None:
        info["duration_ms"] = duration_ms
    if spotify is not None:
        info["spotify_id"] = f"https://open.spotify.com/track/{spotify}"
    mapping = None
    if recording is not None:
        mapping = {
            "recording_name": title,
            "recording_mbid": recording,
            "release_mbid": "0d0d0d0d-2222-4222-8222-222222222222",
            "artist_mbids": [artist_mbid] if artist_mbid else [],
            "artists": [
                {"artist_credit_name": artist, "join_phrase": "", "artist_mbid": artist_mbid}
            ],
            "caa_id": 123,
            "caa_release_mbid": "0d0d0d0d-2222-4222-8222-222222222222",
        }
    listen: dict[str, Any] = {
        "listened_at": listened_at,
        "inserted_at": listened_at,
        "track_metadata": {
            "artist_name": artist,
            "track_name": title,
            "release_name": "Homogenic",
            "additional_info": info,
            "mbid_mapping": mapping,
        },
    }
    if user is not None:
        listen["user_name"] = user
    return listen


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write_lb_zip(path: Path, username: str, months: dict[str, list[dict[str, Any]]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("user.json", json.dumps({"user_id": 42, "username": username}) + "\n")
        for name, listens in months.items():
            archive.writestr(name, "".join(json.dumps(item) + "\n" for item in listens))
        # Thumbs and pins, not plays: the importer must not read them as listens.
        archive.writestr("feedback.jsonl", json.dumps({"score": 1, "created": 1}) + "\n")
    return path


def spotify_stream(
    ts_text: str,
    ms_played: Any,
    *,
    uri: str | None = f"spotify:track:{SPOTIFY_ID}",
    track: str | None = "Mr. Brightside",
    artist: str | None = "The Killers",
    reason_end: str = "trackdone",
    username: str | None = "ada",
    episode: str | None = None,
) -> dict[str, Any]:
    return {
        "ts": ts_text,
        "username": username,
        "platform": "android",
        "ms_played": ms_played,
        "conn_country": "DE",
        "master_metadata_track_name": track,
        "master_metadata_album_artist_name": artist,
        "master_metadata_album_album_name": "Hot Fuss" if track else None,
        "spotify_track_uri": uri,
        "episode_name": episode,
        "episode_show_name": "A Show" if episode else None,
        "spotify_episode_uri": "spotify:episode:0000000000000000000000" if episode else None,
        "reason_start": "trackdone",
        "reason_end": reason_end,
        "shuffle": False,
        "skipped": reason_end != "trackdone",
        "offline": False,
        "incognito_mode": False,
    }


def write_json(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False), "utf-8")
    return path


def plays(data: Path) -> list[dict[str, Any]]:
    folder = data / "events" / "plays"
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.rglob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def catalog(data: Path, name: str) -> dict[str, dict[str, Any]]:
    rows = pq.read_table(data / "catalog" / f"{name}.parquet").to_pylist()
    ids = [r[f"{name[:-1]}_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate ids in {name}"
    return {i: r for i, r in zip(ids, rows, strict=True)}


def refused_rows(data: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((data / "imports" / "refused").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    return rows


# ---------------------------------------------------------------------------- formats


def test_listenbrainz_zip_export(tmp_path: Path) -> None:
    archive = write_lb_zip(
        tmp_path / "listenbrainz_ada_1700000000.zip",
        "ada",
        {
            "listens/2021/1.jsonl": [
                lb_listen(
                    ts(2021, 1, 31, 18, 4),
                    recording=JOGA,
                    artist_mbid=BJORK,
                    duration_ms=305_000,
                ),
                # The new export writes listened_at as a decimal epoch.
                lb_listen(ts(2021, 1, 31, 18, 10) + 0.5, "Björk", "Hunter", recording=HUNTER),
            ],
            "listens/2021/2.jsonl": [
                lb_listen(ts(2021, 2, 1, 9, 0), "Sigur Rós", "Hoppípolla", spotify=SPOTIFY_ID),
                lb_listen(ts(2021, 2, 1, 9, 5), "Múm", "Green Grass of Tunnel"),
            ],
        },
    )
    report = import_history("listenbrainz", archive, tmp_path / "data", now=NOW)

    assert (report.kept, report.refused_total, report.listeners) == (4, 0, 1)
    tracks = catalog(tmp_path / "data", "tracks")
    mumm = track_key_id("Múm", "Green Grass of Tunnel")
    assert set(tracks) == {f"mbid:{JOGA}", f"mbid:{HUNTER}", f"spotify:track:{SPOTIFY_ID}", mumm}
    assert tracks[f"mbid:{JOGA}"] == {
        "track_id": f"mbid:{JOGA}",
        "title": "Jóga",
        "artist_id": f"mbid:{BJORK}",
        "duration_ms": 305_000,
        "released_at": None,
        "embedding": None,
        "tags": None,
        "album": "Homogenic",
        "image_url": None,
        "preview_url": None,
        "external_url": None,
        "musicbrainz_recording_id": JOGA,
        "isrc": None,
    }
    spotify = tracks[f"spotify:track:{SPOTIFY_ID}"]
    assert spotify["external_url"] == f"https://open.spotify.com/track/{SPOTIFY_ID}"
    assert spotify["musicbrainz_recording_id"] is None
    assert tracks[mumm]["duration_ms"] == UNKNOWN_DURATION_MS
    assert tracks[mumm]["external_url"] is None and tracks[mumm]["musicbrainz_recording_id"] is None
    artists = catalog(tmp_path / "data", "artists")
    assert artists[f"mbid:{BJORK}"]["name"] == "Björk"
    assert artists[artist_key_id("Múm")]["name"] == "Múm"
    # Hunter has no artist MBID: its artist is the name's key.
    assert tracks[f"mbid:{HUNTER}"]["artist_id"] == artist_key_id("Björk")
    rows = {r["track_id"]: r for r in plays(tmp_path / "data")}
    assert {r["user_id"] for r in rows.values()} == {"ada"}  # from user.json
    assert rows[f"mbid:{JOGA}"]["played_at"] == utc(2021, 1, 31, 18, 4)
    assert rows[f"mbid:{JOGA}"]["ms_played"] == 305_000  # the track's duration
    assert rows[f"mbid:{HUNTER}"]["played_at"] == utc(2021, 1, 31, 18, 10, 0, 500_000)
    assert rows[mumm]["ms_played"] == COMPLETED_MS  # duration unknown: a completed play
    assert all(is_valid_id(i) for i in [*tracks, *artists])


def test_listenbrainz_json_array_and_lines_name_the_listener_per_listen(tmp_path: Path) -> None:
    legacy = write_json(
        tmp_path / "listens.json",
        [
            lb_listen(ts(2020, 5, 1, 12, 0), user="bob", recording=JOGA),
            lb_listen(ts(2020, 5, 1, 12, 5), user=None, recording=JOGA),  # no user: --user
        ],
    )
    report = import_history("listenbrainz", legacy, tmp_path / "d", default_user="ada", now=NOW)

    assert report.kept == 2
    assert sorted(r["user_id"] for r in plays(tmp_path / "d")) == ["ada", "bob"]


def test_lastfm_csv_without_header_needs_user(tmp_path: Path) -> None:
    # benjaminbenben's lastfm-to-csv: artist,album,track,date (UTC), quoted when needed.
    export = tmp_path / "lastfm.csv"
    export.write_text(
        "The National,Boxer,Fake Empire,31 Jan 2021 18:04\n"
        '"Crosby, Stills & Nash",CSN,"Helplessly Hoping",1 Feb 2021 07:30\n'
        "THE  NATIONAL,Boxer,fake empire,2 Feb 2021 08:00\n",
        "utf-8",
    )
    without_user = import_history("lastfm", export, tmp_path / "none", now=NOW)
    assert without_user.kept == 0
    assert without_user.refused == {"missing_user_id": 3}

    report = import_history("lastfm", export, tmp_path / "d", default_user="ada", now=NOW)

    assert (report.kept, report.refused_total) == (3, 0)
    rows = plays(tmp_path / "d")
    fake_empire = track_key_id("The National", "Fake Empire")
    # Case and spaces do not make another track.
    assert [r["track_id"] for r in rows].count(fake_empire) == 2
    assert rows[0]["played_at"] == utc(2021, 1, 31, 18, 4)
    assert all(r["user_id"] == "ada" and r["ms_played"] == COMPLETED_MS for r in rows)
    titles = {t["title"] for t in catalog(tmp_path / "d", "tracks").values()}
    assert titles == {"Fake Empire", "Helplessly Hoping"}


def test_lastfm_csv_with_header_uses_uts_and_mbids(tmp_path: Path) -> None:
    export = tmp_path / "scrobbles.csv"
    with export.open("w", newline="", encoding="utf-8") as handle:
        handle.write("uts,utc_time,artist,artist_mbid,album,album_mbid,track,track_mbid\r\n")
        writer = csv.writer(handle)
        writer.writerow(
            [
                ts(2021, 3, 1, 10, 0),
                "01 Mar 2021, 10:00",
                "Björk",
                BJORK,
                "Homogenic",
                "",
                "Jóga",
                JOGA,
            ]
        )
    report = import_history("lastfm", export, tmp_path / "d", default_user="ada", now=NOW)

    assert report.kept == 1
    (row,) = plays(tmp_path / "d")
    assert (row["track_id"], row["played_at"]) == (f"mbid:{JOGA}", utc(2021, 3, 1, 10, 0))
    assert catalog(tmp_path / "d", "tracks")[f"mbid:{JOGA}"]["artist_id"] == f"mbid:{BJORK}"


def test_lastfm_recent_tracks_json_skips_now_playing(tmp_path: Path) -> None:
    def track(name: str, when: int | None, **extra: Any) -> dict[str, Any]:
        item: dict[str, Any] = {
            "artist": {"mbid": BJORK, "#text": "Björk"},
            "streamable": "0",
            "image": [{"size": "small", "#text": ""}],
            "mbid": "",
            "album": {"mbid": "", "#text": "Homogenic"},
            "name": name,
            "url": "https://www.last.fm/music/Bj%C3%B6rk/_/x",
            **extra,
        }
        if when is not None:
            item["date"] = {"uts": str(when), "#text": "01 Mar 2021, 10:00"}
        return item

    page = {
        "recenttracks": {
            "track": [
                track("Bachelorette", None, **{"@attr": {"nowplaying": "true"}}),
                track("Jóga", ts(2021, 3, 1, 10, 0)),
                track("Hunter", ts(2021, 3, 1, 10, 5)),
            ],
            "@attr": {"user": "ada_fm", "page": "1", "perPage": "50", "totalPages": "1"},
        }
    }
    export = write_json(tmp_path / "recent.json", [page])
    report = import_history("lastfm", export, tmp_path / "d", default_user="other", now=NOW)

    assert (report.kept, dict(report.refused)) == (2, {"now_playing": 1})
    rows = plays(tmp_path / "d")
    assert {r["user_id"] for r in rows} == {"ada_fm"}  # the file's user wins over --user
    assert {r["track_id"] for r in rows} == {
        track_key_id("Björk", "Jóga"),
        track_key_id("Björk", "Hunter"),
    }
    assert set(catalog(tmp_path / "d", "artists")) == {f"mbid:{BJORK}"}
    assert refused_rows(tmp_path / "d")[0]["reason"] == "now_playing"


def test_spotify_extended_history(tmp_path: Path) -> None:
    export = write_json(
        tmp_path / "Streaming_History_Audio_2021.json",
        [
            spotify_stream("2021-01-31T18:04:05Z", 222_000),
            spotify_stream("2021-01-31T18:10:00Z", 4_000, reason_end="fwdbtn"),
            spotify_stream("2021-01-31T18:20:00Z", 60_000, uri=None, track="Demo", artist="Me"),
            spotify_stream(
                "2021-01-31T19:00:00Z",
                1_800_000,
                uri=None,
                track=None,
                artist=None,
                episode="Episode 12",
            ),
        ],
    )
    report = import_history("spotify", export, tmp_path / "d", now=NOW)

    assert (report.kept, dict(report.refused)) == (3, {"not_music": 1})
    rows = plays(tmp_path / "d")
    assert [r["ms_played"] for r in rows] == [222_000, 4_000, 60_000]  # Spotify's own values
    assert rows[0]["played_at"] == utc(2021, 1, 31, 18, 4, 5)
    assert {r["user_id"] for r in rows} == {"ada"}
    tracks = catalog(tmp_path / "d", "tracks")
    # A stream played to its end gives the length; a track heard only in part has none.
    assert tracks[f"spotify:track:{SPOTIFY_ID}"]["duration_ms"] == 222_000
    assert tracks[track_key_id("Me", "Demo")]["duration_ms"] == 60_000
    assert tracks[f"spotify:track:{SPOTIFY_ID}"]["artist_id"] == artist_key_id("The Killers")
    (refused,) = refused_rows(tmp_path / "d")
    assert refused["reason"] == "not_music"
    assert json.loads(refused["record"])["episode_name"] == "Episode 12"


def test_names_are_normalised_before_hashing() -> None:
    plain = track_key_id("Sigur Rós", "Hoppípolla")
    assert track_key_id("  SIGUR   RÓS ", "hoppípolla") == plain
    assert track_key_id("Sigur Ro\u0301s", "Hoppi\u0301polla") == plain  # decomposed accents
    assert track_key_id("Ｓｉｇｕｒ Rós", "Hoppípolla") == plain  # full-width letters
    assert track_key_id("Sigur Rós", "Hoppipolla") != plain
    assert is_valid_id(plain) and is_valid_id(artist_key_id("<script>"))


# ------------------------------------------------------------- idempotence and merging


def test_importing_the_same_file_twice_adds_nothing(tmp_path: Path) -> None:
    export = write_jsonl(
        tmp_path / "listens.jsonl",
        [lb_listen(ts(2021, 1, 1, 0, i), "A", f"T{i}", user="ada") for i in range(5)]
        + [{"listened_at": "soon"}],
    )
    data = tmp_path / "d"
    first = import_history("listenbrainz", export, data, now=NOW)
    second = import_history("listenbrainz", export, data, now=NOW)

    assert (first.kept, first.new_tracks, first.new_artists) == (5, 5, 1)
    assert (second.kept, second.new_tracks, second.new_artists) == (5, 0, 0)
    assert len(plays(data)) == 5
    assert len(catalog(data, "tracks")) == 5
    assert len(refused_rows(data)) == 1
    assert second.events_file == first.events_file

    # The same plays under another format, or another default listener, are another import.
    other = import_history("listenbrainz", export, data, default_user="bob", now=NOW)
    assert other.events_file != first.events_file


def test_merge_with_an_existing_parquet_catalog(tmp_path: Path) -> None:
    data = tmp_path / "d"
    (data / "catalog").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"artist_id": "a1", "name": "House Band"},
                {"artist_id": f"mbid:{BJORK}", "name": "B"},
            ],
            schema=ARTISTS.schema,
        ),
        data / "catalog" / "artists.parquet",
    )
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "track_id": "t1",
                    "title": "Theme",
                    "artist_id": "a1",
                    "duration_ms": 100_000,
                    "tags": ["house"],
                    "embedding": [0.1, 0.2],
                },
                {
                    "track_id": f"mbid:{JOGA}",
                    "title": "Joga (catalog)",
                    "artist_id": f"mbid:{BJORK}",
                    "duration_ms": 300_000,
                },
            ],
            schema=TRACKS.schema,
        ),
        data / "catalog" / "tracks.parquet",
    )
    export = write_jsonl(
        tmp_path / "l.jsonl",
        [
            lb_listen(ts(2021, 1, 1), recording=JOGA, artist_mbid=BJORK, user="ada"),
            lb_listen(ts(2021, 1, 2), "Björk", "Hunter", recording=HUNTER, user="ada"),
        ],
    )
    report = import_history("listenbrainz", export, data, now=NOW)
    import_history("listenbrainz", export, data, now=NOW)

    assert (report.new_tracks, report.new_artists) == (1, 1)
    tracks = catalog(data, "tracks")
    assert set(tracks) == {"t1", f"mbid:{JOGA}", f"mbid:{HUNTER}"}
    # The rows already there stay as they were, embedding and tags included.
    assert tracks["t1"]["tags"] == ["house"] and tracks["t1"]["embedding"] == pytest.approx(
        [0.1, 0.2]
    )
    assert tracks[f"mbid:{JOGA}"]["title"] == "Joga (catalog)"
    assert set(catalog(data, "artists")) == {"a1", f"mbid:{BJORK}", artist_key_id("Björk")}
    # A scrobble of a catalogued track lasts the catalog's duration.
    by_track = {r["track_id"]: r for r in plays(data)}
    assert by_track[f"mbid:{JOGA}"]["ms_played"] == 300_000


def test_merge_appends_to_csv_and_jsonl_catalogs_and_users(tmp_path: Path) -> None:
    data = tmp_path / "d"
    (data / "catalog").mkdir(parents=True)
    (data / "catalog" / "artists.jsonl").write_text('{"artist_id": "a1", "name": "House"}')
    (data / "catalog" / "tracks.csv").write_text(
        'track_id,title,artist_id,duration_ms,tags\nt1,Theme,a1,100000,"[""x""]"\n'
    )
    (data / "catalog" / "users.csv").write_text("user_id,display_name\nada,Ada\n")
    export = tmp_path / "s.csv"
    export.write_text("A,Al,Song,1 Jan 2021 10:00\nA,Al,Song,1 Jan 2021 10:05\n")

    first = import_history("lastfm", export, data, default_user="bob", now=NOW)
    import_history("lastfm", export, data, default_user="bob", now=NOW)

    assert (first.new_tracks, first.new_artists, first.new_users) == (1, 1, 1)
    with (data / "catalog" / "tracks.csv").open(newline="") as handle:
        tracks = list(csv.DictReader(handle))
    assert [t["track_id"] for t in tracks] == ["t1", track_key_id("A", "Song")]
    assert tracks[0]["tags"] == '["x"]' and tracks[1]["duration_ms"] == str(UNKNOWN_DURATION_MS)
    artists = [json.loads(line) for line in (data / "catalog" / "artists.jsonl").open()]
    assert [a["artist_id"] for a in artists] == ["a1", artist_key_id("A")]
    users = (data / "catalog" / "users.csv").read_text().splitlines()
    assert users == ["user_id,display_name", "ada,Ada", "bob,"]
    assert not (data / "catalog" / "tracks.parquet").exists()


def test_no_users_table_is_created(tmp_path: Path) -> None:
    # A new users table would make every other listener's plays unknown.
    export = write_jsonl(tmp_path / "l.jsonl", [lb_listen(ts(2021, 1, 1), user="ada")])
    import_history("listenbrainz", export, tmp_path / "d", now=NOW)
    assert sorted(p.name for p in (tmp_path / "d" / "catalog").iterdir()) == [
        "artists.parquet",
        "tracks.parquet",
    ]


# ------------------------------------------------------------------ refused and hostile


def test_refused_rows_are_counted_and_written_with_their_reason(tmp_path: Path) -> None:
    good = lb_listen(ts(2021, 1, 1), user="ada")
    lines: list[tuple[bytes, str | None]] = [
        (json.dumps(good).encode(), None),
        (b'{"listened_at": 1612116240, "track_metadata": ', "malformed_record"),
        (b"[1, 2, 3]", "malformed_record"),
        (json.dumps({**good, "track_metadata": "Jóga"}).encode(), "malformed_record"),
        (json.dumps(lb_listen(ts(2021, 1, 1), user="a b")).encode(), "invalid_user_id"),
        (json.dumps(lb_listen(ts(2021, 1, 1))).encode(), "missing_user_id"),
        (json.dumps({**good, "listened_at": None}).encode(), "missing_timestamp"),
        (json.dumps({**good, "listened_at": "yesterday"}).encode(), "invalid_timestamp"),
        (json.dumps({**good, "listened_at": True}).encode(), "invalid_timestamp"),
        (json.dumps({**good, "listened_at": 1e300}).encode(), "timestamp_out_of_range"),
        (json.dumps({**good, "listened_at": 86_400}).encode(), "timestamp_out_of_range"),
        (json.dumps({**good, "listened_at": ts(2027, 1, 1)}).encode(), "timestamp_out_of_range"),
        (b'{"listened_at": NaN, "user_name": "ada", "track_metadata": {}}', "invalid_timestamp"),
        (json.dumps(lb_listen(ts(2021, 1, 1), artist=7, user="ada")).encode(), "missing_artist"),
        (json.dumps(lb_listen(ts(2021, 1, 1), title=" ", user="ada")).encode(), "missing_title"),
        (
            json.dumps(lb_listen(ts(2021, 1, 1), title="x" * 5000, user="ada")).encode(),
            "text_too_long",
        ),
        (b'{"user_name": "ada", "track_name": "caf\xe9"}', "invalid_encoding"),
        (b"[" * 100_000, "malformed_record"),  # deeper than Python's recursion
        (b'{"n": 1' + b"0" * 5000 + b"}", "malformed_record"),  # beyond int's digits
        (b'{"pad": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}', "line_too_long"),
        (json.dumps({**good, "listened_at": ts(2021, 1, 2)}).encode(), None),
    ]
    export = tmp_path / "hostile.jsonl"
    export.write_bytes(b"\n".join(line for line, _ in lines) + b"\n\n")

    report = import_history("listenbrainz", export, tmp_path / "d", now=NOW)

    expected = Counter(reason for _, reason in lines if reason)
    assert report.kept == 2
    assert report.refused == expected
    written = refused_rows(tmp_path / "d")
    assert Counter(r["reason"] for r in written) == expected
    by_line = {r["position"]: r for r in written}
    assert by_line["line 2"]["record"] == '{"listened_at": 1612116240, "track_metadata": '
    assert by_line[f"line {len(lines) - 1}"]["reason"] == "line_too_long"
    assert all(len(r["record"]) <= 2000 for r in written)
    assert len(plays(tmp_path / "d")) == 2


def test_spotify_rows_of_wrong_types_are_refused(tmp_path: Path) -> None:
    export = write_json(
        tmp_path / "Streaming_History_Audio_2022.json",
        [
            spotify_stream("2022-01-01T00:00:00Z", 1000),
            "not a stream",
            spotify_stream("2022-01-01T00:00:00Z", "1000"),
            spotify_stream("2022-01-01T00:00:00Z", 12.5),
            spotify_stream("2022-01-01T00:00:00Z", -1),
            spotify_stream("2022-01-01T00:00:00Z", 86_400_001),
            spotify_stream("2022-01-01T00:00:00Z", None),
            spotify_stream("not a time", 1000),
            spotify_stream(None, 1000),  # type: ignore[arg-type]
            spotify_stream("2022-01-01T00:00:00Z", 1000, uri=None, track=None, artist=None),
            spotify_stream("2022-01-01T00:00:00Z", 1000, username="<script>"),
        ],
    )
    report = import_history("spotify", export, tmp_path / "d", now=NOW)

    assert report.kept == 1
    assert report.refused == {
        "malformed_record": 1,
        "invalid_ms_played": 2,
        "ms_played_out_of_range": 2,
        "missing_ms_played": 1,
        "invalid_timestamp": 1,
        "missing_timestamp": 1,
        "missing_artist": 1,
        "invalid_user_id": 1,
    }


@pytest.mark.parametrize(
    ("fmt", "content", "message"),
    [
        ("spotify", b'[{"ts": "2021-01-01T00:00:00Z",', "not a JSON document"),
        ("spotify", b'{"ts": "2021-01-01T00:00:00Z"}', "expected a JSON array of streams"),
        ("spotify", b'[{"master_metadata_track_name": "caf\xe9"}]', "not UTF-8 text"),
        ("spotify", b"", "not a JSON document"),
        ("lastfm", b'{"error": 6, "message": "User not found"}', "user.getRecentTracks"),
        ("listenbrainz", b"PK\x03\x04 not really a zip", "not a readable ZIP archive"),
    ],
)
def test_unreadable_files_are_one_clear_error(
    tmp_path: Path, fmt: str, content: bytes, message: str
) -> None:
    export = tmp_path / "export.json"
    export.write_bytes(content)
    with pytest.raises(ImportInputError, match=message) as raised:
        import_history(fmt, export, tmp_path / "d", now=NOW)
    assert str(export) in str(raised.value)
    assert plays(tmp_path / "d") == []


def test_a_listenbrainz_zip_without_listens_is_refused(tmp_path: Path) -> None:
    archive = write_lb_zip(tmp_path / "empty.zip", "ada", {})
    with pytest.raises(ImportInputError, match=r"without listens/\*\.jsonl"):
        import_history("listenbrainz", archive, tmp_path / "d", now=NOW)


def test_a_compressed_catalog_is_not_rewritten(tmp_path: Path) -> None:
    data = tmp_path / "d"
    (data / "catalog").mkdir(parents=True)
    (data / "catalog" / "tracks.csv.gz").write_bytes(b"\x1f\x8b")
    export = write_jsonl(tmp_path / "l.jsonl", [lb_listen(ts(2021, 1, 1), user="ada")])
    with pytest.raises(ImportInputError, match=r"tracks\.csv\.gz: the importer adds to a catalog"):
        import_history("listenbrainz", export, data, now=NOW)


# ------------------------------------------------------------------------------- CLI


def test_import_group_lists_its_formats() -> None:
    result = CliRunner().invoke(cli, ["import", "--help"])
    assert result.exit_code == 0, result.output
    commands = result.output.split("Commands:")[1].split()
    assert {"listenbrainz", "lastfm", "spotify"} <= set(commands)


@pytest.mark.parametrize("fmt", ["listenbrainz", "lastfm", "spotify"])
def test_import_commands_have_help(fmt: str) -> None:
    result = CliRunner().invoke(cli, ["import", fmt, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli import {fmt} [OPTIONS] FILES...")
    assert "--data DIRECTORY" in result.output and "--user" in result.output


def test_cli_imports_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path / "state"))
    export = tmp_path / "lastfm.csv"
    export.write_text("A,Al,Song,1 Jan 2021 10:00\nA,Al,Song,not a date\n")
    data = tmp_path / "new" / "data"
    arguments = ["import", "lastfm", str(export), str(export), "--data", str(data)]

    result = CliRunner().invoke(cli, [*arguments, "--user", "ada"])

    assert result.exit_code == 0, result.output
    assert "1 plays of 1 listeners kept, 1 rows refused" in result.output
    assert "invalid_timestamp=1" in result.output
    assert len(plays(data)) == 1  # the file given twice is imported once


@pytest.mark.parametrize(
    ("arguments", "message", "code"),
    [
        (["import", "spotify", "{tmp}/missing.json", "--data", "{tmp}/d"], "does not exist", 2),
        (["import", "spotify", "{tmp}/bad.json"], "Missing option '--data'", 2),
        (
            ["import", "lastfm", "{tmp}/bad.json", "--data", "{tmp}/d", "--user", "a b"],
            "is not a listener id",
            2,
        ),
        (["import", "spotify", "{tmp}/bad.json", "--data", "{tmp}/d"], "not a JSON document", 1),
        (["import", "spotify", "{tmp}", "--data", "{tmp}/d"], "is a directory", 2),
    ],
)
def test_cli_errors_are_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arguments: list[str], message: str, code: int
) -> None:
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path / "state"))
    (tmp_path / "bad.json").write_text("[{")
    result = CliRunner().invoke(cli, [a.replace("{tmp}", str(tmp_path)) for a in arguments])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------ end to end


@pytest.mark.spark
def test_the_aggregation_counts_what_was_imported(spark, tmp_path: Path) -> None:
    from jobs.aggregate import AggregationParams, AggregationPaths, run_aggregation

    data = tmp_path / "data"
    lb = write_jsonl(
        tmp_path / "lb.jsonl",
        [
            lb_listen(
                ts(2026, 10, 5, 12),
                recording=JOGA,
                artist_mbid=BJORK,
                duration_ms=305_000,
                user="ada",
            ),
            lb_listen(ts(2026, 10, 6, 12), recording=JOGA, artist_mbid=BJORK, user="ada"),
            lb_listen(ts(2026, 10, 7, 12), "Múm", "Green Grass of Tunnel", user="ada"),
            lb_listen(ts(2026, 10, 7, 13), "Múm", "Green Grass of Tunnel", user="bob"),
        ],
    )
    spotify = write_json(
        tmp_path / "Streaming_History_Audio_2026.json",
        [
            spotify_stream("2026-10-08T10:00:00Z", 222_000, username="bob"),
            spotify_stream("2026-10-08T11:00:00Z", 5_000, reason_end="fwdbtn", username="bob"),
            spotify_stream("2026-10-08T12:00:00Z", 40_000, reason_end="fwdbtn", username="bob"),
            spotify_stream("2026-10-09T12:00:00Z", 10, episode="Ep", uri=None, track=None),
        ],
    )
    lastfm = tmp_path / "lastfm.csv"
    lastfm.write_text("Múm,Finally We Are No One,Green Grass of Tunnel,10 Oct 2026 09:00\n")
    for fmt, path, user in (
        ("listenbrainz", lb, None),
        ("spotify", spotify, None),
        ("lastfm", lastfm, "cy"),
    ):
        import_history(fmt, path, data, default_user=user, now=NOW)
    import_history("spotify", spotify, data, now=NOW)  # again: nothing more

    paths = AggregationPaths(tmp_path / "agg", tmp_path / "quarantine")
    summary = run_aggregation(spark, data, paths, AggregationParams(utc(2026, 11, 16)))

    assert summary.quarantined_total == 0
    assert summary.events_read["plays"] == 8
    rows = pq.read_table(paths.interactions).to_pylist()
    got = {(r["user_id"], r["track_id"]): (r["plays"], r["completed"], r["skips"]) for r in rows}
    mum = track_key_id("Múm", "Green Grass of Tunnel")
    assert got == {
        ("ada", f"mbid:{JOGA}"): (2, 2, 0),  # scrobbles are completed plays
        ("ada", mum): (1, 1, 0),
        ("bob", mum): (1, 1, 0),
        ("cy", mum): (1, 1, 0),  # Last.fm and ListenBrainz name the same track alike
        # 222 s and 40 s are completed (>= 30 s), 5 s is a skip.
        ("bob", f"spotify:track:{SPOTIFY_ID}"): (3, 2, 1),
    }

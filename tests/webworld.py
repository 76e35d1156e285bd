"""A small published world for the web tests: listeners, two weeks of playlists, a trained
model artifact (for similar tracks), a finished weekly run and tokens."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.als import ALSParams, train_als
from recsys.contract import TRACK_DISPLAY_COLUMNS
from recsys.db import repository
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.models import ModelVersion
from recsys.db.tokens import create_token, revoke_token
from recsys.matrix import InteractionMatrix
from tests.worlds import publish_week_playlists

WEEK = dt.date(2026, 11, 16)
PREVIOUS_WEEK = WEEK - dt.timedelta(days=7)
TRACKS = [f"t{i:02d}" for i in range(60)]
HOSTILE_ARTIST = "Bj\u00f6rk & <Friends>"
#: The host the web tests allow covers and previews from (CRATEDIGGER_MEDIA_HOSTS); the
#: browser tests answer its requests themselves.
MEDIA_HOST = "media.test"
MBID = "8f3471b5-7e6a-48da-86a9-c1c07a0f47ae"
#: The catalog's optional fields of a few tracks: t00 has them all (a cover and a preview
#: from the allowed host, a new release), t01 a cover from a host that is not allowed.
CATALOG_EXTRAS: dict[str, dict[str, Any]] = {
    "t00": {
        "album": "First <Album>",
        "released_at": WEEK - dt.timedelta(days=10),
        "image_url": f"https://{MEDIA_HOST}/covers/t00.png",
        "preview_url": f"https://{MEDIA_HOST}/previews/t00.wav",
        "external_url": "https://music.example/track/t00",
        "musicbrainz_recording_id": MBID,
        "isrc": "USRC17607839",
    },
    "t01": {"image_url": "https://elsewhere.example/covers/t01.png", "album": "Second"},
    "t02": {"image_url": f"https://{MEDIA_HOST}/covers/t02.png"},
}


@dataclass(frozen=True)
class WebWorld:
    url: str
    #: listener u1 (two weeks of playlists), listener u2 (one week), u3 (none), operator
    u1: str
    u2: str
    u3: str
    operator: str
    revoked: str


def _model_artifact(directory: Path) -> Path:
    rng = np.random.default_rng(3)
    users = np.array([f"u{i}" for i in range(1, 41)])
    dense = (rng.random((len(users), len(TRACKS))) < 0.2).astype(np.float32)
    # Two taste groups, so that nearest tracks have a clear answer.
    dense[:20, 30:] = 0
    dense[20:, :30] = 0
    matrix = InteractionMatrix(sp.csr_matrix(dense), users, np.array(TRACKS))
    model = train_als(matrix, ALSParams(factors=8, iterations=10, regularization=0.1))
    model.save(directory)
    return directory


def build_web_world(url: str, tmp_path: Path) -> WebWorld:
    artifact = _model_artifact(tmp_path / "model")
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        repository.upsert_artists(
            session,
            [{"artist_id": "a1", "name": HOSTILE_ARTIST}, {"artist_id": "a2", "name": "Two"}],
        )
        repository.upsert_tracks(
            session,
            [
                {
                    "track_id": track,
                    "title": f"Song {i}",
                    "artist_id": "a1" if i % 2 == 0 else "a2",
                    "duration_ms": 61_000 + i,
                    **dict.fromkeys(TRACK_DISPLAY_COLUMNS),
                    **CATALOG_EXTRAS.get(track, {}),
                }
                for i, track in enumerate(TRACKS)
            ],
        )
        repository.upsert_users(
            session,
            [
                {"user_id": "u1", "display_name": "Ada"},
                {"user_id": "u2", "display_name": None},
                {"user_id": "u3", "display_name": "Newcomer"},
            ],
        )
        for week in (PREVIOUS_WEEK, WEEK):
            version = f"{week.isoformat()}-abc"
            repository.save_model_version(
                session,
                ModelVersion(
                    version=version,
                    week_start=week,
                    fingerprint="f" * 64,
                    artifact_path=str(artifact),
                    params={"factors": 8},
                    n_users=40,
                    n_tracks=60,
                    n_interactions=480,
                    train_seconds=0.1,
                    status="published",
                    metrics={
                        "model": {"ndcg@50": 0.3 if week == WEEK else 0.25, "recall@50": 0.4},
                        "popular": {"ndcg@50": 0.15, "recall@50": 0.2},
                    },
                ),
            )
            offset = 0 if week == WEEK else 5
            playlists = [
                repository.NewPlaylist(
                    "u1",
                    [
                        repository.PlaylistEntry(TRACKS[i + offset], 2.0 - i / 100, f"reason {i}")
                        for i in range(50)
                    ],
                )
            ]
            if week == WEEK:
                playlists.append(
                    repository.NewPlaylist(
                        "u2",
                        [
                            repository.PlaylistEntry(TRACKS[59 - i], 1.0 - i / 100)
                            for i in range(50)
                        ],
                        kind="popular",
                    )
                )
            run_id = publish_week_playlists(session, week, version, playlists)
        repository.begin_step(session, run_id, "aggregate")
        repository.finish_step(
            session,
            run_id,
            "aggregate",
            counts={
                "events_read": {"plays": 1000, "thumbs": 10},
                "quarantined": {"plays": {"unknown_track": 7, "timestamp_after_cutoff": 3}},
            },
        )
        tokens = {}
        for name, user in (("u1", "u1"), ("u2", "u2"), ("u3", "u3")):
            tokens[name] = create_token(session, user_id=user)[1]
        tokens["operator"] = create_token(session, operator=True)[1]
        revoked_row, tokens["revoked"] = create_token(session, user_id="u1")
        revoke_token(session, revoked_row.id)
    engine.dispose()
    return WebWorld(url=url, **tokens)


def thumbs_given(session: Any, user_id: str) -> dict[str, int]:
    """The listener's newest thumb per track, as stored (track id -> +1 or -1)."""
    from recsys.db import feedback

    rows, _ = feedback.list_feedback(session, user_id, limit=10_000)
    newest: dict[str, int] = {}
    for row in rows:  # newest first
        newest.setdefault(row.track_id, row.value)
    return newest

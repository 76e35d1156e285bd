"""Holdout evaluation for the validation gate.

The week's model is judged the way the product is used: a model of the same kind is trained
on the pairs a listener first met before ``week start - gate_holdout_days``, and must rank
the tracks each listener discovered (first played positively) in those last days. Its
playlists are built by the product's own pipeline (:func:`jobs.weekly.playlist_blocks`:
cold-start slots from the same content, the same re-ranking and artist cap). The same split
scores the most-popular baseline (artist-capped top tracks). The published model of an
earlier week brought its own holdout metrics, recorded when it passed the gate.

The holdout model learns the held-out pairs' confidence as aggregated at the week's cut-off
(counts are not split by time); only pairs first met before the holdout cut-off enter it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys.als import ALSModel, train_als
from recsys.contract import week_cutoff
from recsys.db import repository
from recsys.evaluation import ndcg_at_k, recall_at_k, time_split
from recsys.gate import GateDecision, GateThresholds, decide
from recsys.matrix import InteractionMatrix
from recsys.playlist import PlaylistRules, mask_known_tracks, select_with_artist_cap
from recsys.settings import Settings

log = logging.getLogger(__name__)


class _Popularity:
    """Scores every track by how many listeners liked it in training (the baseline)."""

    def __init__(self, train: sp.csr_matrix) -> None:
        self.counts = np.asarray((train > 0).sum(axis=0), dtype=np.float32).ravel()

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        return np.tile(self.counts, (len(user_rows), 1))


def _top(
    model: Any,
    rows: np.ndarray,
    known: sp.csr_matrix,
    track_artist: np.ndarray,
    rules: PlaylistRules,
    eligible: np.ndarray,
    block: int = 2048,
) -> np.ndarray:
    out = []
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        scores = model.score(chunk)
        mask_known_tracks(scores, known[chunk], eligible)
        columns, _ = select_with_artist_cap(scores, track_artist, rules)
        out.append(columns)
    return np.vstack(out) if out else np.empty((0, rules.length), dtype=np.int64)


def holdout_metrics(settings: Settings, week_start: dt.date) -> dict[str, Any]:
    """NDCG@K and recall@K of the week's model kind and of popularity on the holdout."""
    from jobs.weekly import _params, attach_cold_start, playlist_blocks, week_paths

    root, _ = week_paths(settings, week_start)
    table = pq.read_table(
        root / "interactions", columns=["user_id", "track_id", "confidence", "first_event_at"]
    )
    tracks = pq.read_table(root / "tracks", columns=["track_id", "artist_id"])
    holdout_cutoff = week_cutoff(week_start) - dt.timedelta(days=settings.gate_holdout_days)
    users = table.column("user_id").to_numpy(zero_copy_only=False).astype(str)
    items = table.column("track_id").to_numpy(zero_copy_only=False).astype(str)
    confidence = table.column("confidence").to_numpy().astype(np.float32)
    first = pc.cast(table.column("first_event_at"), "int64").to_numpy()  # microseconds
    cutoff_us = int(holdout_cutoff.timestamp() * 1_000_000)
    catalog = np.sort(tracks.column("track_id").to_numpy(zero_copy_only=False).astype(str))
    user_ids, rows = np.unique(users, return_inverse=True)
    cols = np.searchsorted(catalog, items)
    shape = (len(user_ids), len(catalog))
    split = time_split(rows, cols, confidence, first, cutoff_us, shape)
    # Discoveries are positive pairs: a thumbs-down met in the holdout is not one.
    liked = confidence > 0
    positive = sp.csr_matrix(
        (np.ones(int(liked.sum()), dtype=np.float32), (rows[liked], cols[liked])), shape=shape
    )
    test = split.test.multiply(positive).tocsr()
    train = split.train.tocsr()
    train.eliminate_zeros()
    has_train = np.diff(train.indptr) > 0
    has_test = np.diff(test.indptr) > 0
    eval_users = np.flatnonzero(has_train & has_test).astype(np.int64)
    result: dict[str, Any] = {
        "holdout_cutoff": holdout_cutoff.isoformat(),
        "holdout_listeners": len(eval_users),
    }
    if len(eval_users) == 0 or train.nnz == 0:
        return result
    listeners = np.asarray((train > 0).sum(axis=0), dtype=np.int64).ravel()
    holdout_model: ALSModel = train_als(
        InteractionMatrix(train, user_ids, catalog), _params(settings)
    )
    holdout_model = attach_cold_start(settings, week_start, holdout_model, listeners)
    unsorted = tracks.column("track_id").to_numpy(zero_copy_only=False).astype(str)
    artists = tracks.column("artist_id").to_numpy(zero_copy_only=False).astype(str)
    _, track_artist = np.unique(artists[np.argsort(unsorted)], return_inverse=True)
    track_artist = track_artist.astype(np.int64)
    rules = PlaylistRules(settings.playlist_length, settings.max_tracks_per_artist)
    eligible = listeners > 0
    k = settings.playlist_length
    truth = test[eval_users]
    blocks = playlist_blocks(
        settings,
        holdout_model,
        train,
        track_artist,
        eval_users,
        eligible=eligible,
        track_listeners=listeners,
    )
    recommended = {
        "model": np.vstack([block.track_columns for block in blocks]),
        "popular": _top(_Popularity(train), eval_users, train, track_artist, rules, eligible),
    }
    for name, columns in recommended.items():
        result[name] = {
            f"ndcg@{k}": ndcg_at_k(columns, truth),
            f"recall@{k}": recall_at_k(columns, truth),
        }
    return result


def evaluate_for_gate(
    settings: Settings, week_start: dt.date, version: str
) -> tuple[GateDecision, dict[str, Any]]:
    """The gate's decision for the week's model and the metrics it was based on."""
    from jobs.weekly import sessions

    metrics = holdout_metrics(settings, week_start)
    if "model" not in metrics:
        decision = GateDecision(True, "no holdout listeners: nothing to compare, published")
        return decision, metrics
    thresholds = GateThresholds(
        metric=f"ndcg@{settings.playlist_length}",
        min_vs_popular=settings.gate_min_vs_popular,
        min_vs_previous=settings.gate_min_vs_previous,
    )
    with sessions(settings)() as session:
        previous = repository.published_model_before(session, week_start)
        previous_metrics = (previous.metrics or {}).get("model") if previous is not None else None
    decision = decide(metrics["model"], metrics["popular"], previous_metrics, thresholds)
    log.info("gate for %s: %s", version, decision.reason)
    return decision, metrics

"""Playlists of a chunk of listeners: which listeners get which kind of playlist, the
settings' rules, and the shipped :class:`recsys.pipeline.PlaylistPipeline` over a week's
model and catalog."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from jobs.training import TrainingData
from recsys.als import ALSModel
from recsys.db import repository
from recsys.pipeline import PlaylistPipeline
from recsys.playlist import POPULAR_REASON, PlaylistRules
from recsys.recommender import Recommender
from recsys.settings import Settings


def eligible_listener_rows(settings: Settings, data: TrainingData) -> np.ndarray:
    """Model rows of the listeners who get a personal playlist, in a fixed order."""
    history = np.diff(data.known.indptr)
    return np.flatnonzero(history >= settings.min_user_interactions).astype(np.int64)


def newcomer_ids(settings: Settings, data: TrainingData) -> np.ndarray:
    """Listeners of the users table without usable history (no events the model learnt
    from, or fewer than ``min_user_interactions``), sorted; they get a popular playlist.
    Empty when ``popular_for_new_listeners`` is off."""
    if not settings.popular_for_new_listeners:
        return np.empty(0, dtype=str)
    history = np.diff(data.known.indptr)
    too_short = data.matrix.user_ids[history < settings.min_user_interactions]
    return np.union1d(data.outsider_ids, too_short).astype(str)


def listener_plan(settings: Settings, data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """(personal model rows, newcomer ids): the fixed list of listeners that chunks cut,
    personal ones first."""
    return eligible_listener_rows(settings, data), newcomer_ids(settings, data)


def playlist_rules(settings: Settings) -> PlaylistRules:
    return PlaylistRules(
        length=settings.playlist_length,
        max_tracks_per_artist=settings.max_tracks_per_artist,
        diversity=settings.mmr_diversity,
        popularity_penalty=settings.popularity_penalty,
        pool_factor=settings.rerank_pool_factor,
        cold_slots=settings.cold_slots,
        cold_min_score_ratio=settings.cold_min_score_ratio,
        artist_thumbs_down_limit=settings.artist_thumbs_down_limit,
    )


def pipeline_for(
    settings: Settings,
    model: Recommender,
    track_artist: np.ndarray,
    track_listeners: np.ndarray,
) -> PlaylistPipeline:
    """The shipped pipeline (the settings' rules) over ``model`` and a week's catalog arrays:
    what the weekly run publishes and what the gate and ``evaluate`` measure."""
    return PlaylistPipeline(
        playlist_rules(settings),
        model,
        np.asarray(track_artist, dtype=np.int64),
        np.asarray(track_listeners, dtype=np.int64),
        block_size=settings.generate_block_size,
    )


@dataclass
class BuiltPlaylists:
    """Playlists of a chunk of listeners and what they hold."""

    playlists: list[repository.NewPlaylist] = field(default_factory=list)
    short: int = 0
    cold_tracks: int = 0
    popular: int = 0


def build_playlists(
    settings: Settings,
    model: ALSModel,
    data: TrainingData,
    user_rows: np.ndarray,
    newcomers: np.ndarray | None = None,
) -> BuiltPlaylists:
    """Personal playlists (with a reason per track) of the listeners at ``user_rows``, and
    popular playlists of the ``newcomers`` (ids of listeners without usable history)."""
    built = BuiltPlaylists()
    length = settings.playlist_length
    pipeline = pipeline_for(settings, model, data.track_artist, data.track_listeners)
    # A thumbs-down is the only negative confidence (jobs/aggregate.py).
    blocks = pipeline.personal(
        np.asarray(user_rows, dtype=np.int64), data.known, thumbs_down=data.matrix.user_items < 0
    )
    for block in blocks:
        reasons = pipeline.explain(block, data.played[block.user_rows], data.track_titles)
        built.cold_tracks += int(block.is_cold.sum())
        for row, columns, scores, row_reasons in zip(
            block.user_rows, block.track_columns, block.scores, reasons, strict=True
        ):
            built.short += int((columns >= 0).sum() < length)
            entries = [
                repository.PlaylistEntry(str(model.track_ids[column]), float(score), reason)
                for column, score, reason in zip(columns, scores, row_reasons, strict=True)
                if column >= 0
            ]
            built.playlists.append(repository.NewPlaylist(str(model.user_ids[row]), entries))
    if newcomers is not None and len(newcomers):
        columns, scores = pipeline.popular(_known_of(data, newcomers))
        for user_id, row_columns, row_scores in zip(newcomers, columns, scores, strict=True):
            chosen = row_columns >= 0
            built.short += int(chosen.sum() < length)
            entries = [
                repository.PlaylistEntry(str(model.track_ids[column]), float(score), POPULAR_REASON)
                for column, score in zip(row_columns[chosen], row_scores[chosen], strict=True)
            ]
            built.playlists.append(repository.NewPlaylist(str(user_id), entries, kind="popular"))
            built.popular += 1
    return built


def _known_of(data: TrainingData, user_ids: np.ndarray) -> sp.csr_matrix:
    """(len(user_ids), n_tracks): what each listener played or thumbed, for listeners in
    the matrix or among the outsiders."""
    ids = np.asarray(user_ids, dtype=str)
    rows = data.matrix.user_index(ids)
    outsider_rows = np.searchsorted(data.outsider_ids, ids)
    parts = []
    for user_id, row, outsider_row in zip(ids, rows, outsider_rows, strict=True):
        if row >= 0:
            parts.append(data.known[row])
        elif outsider_row < len(data.outsider_ids) and data.outsider_ids[outsider_row] == user_id:
            parts.append(data.outsider_known[outsider_row])
        else:
            parts.append(sp.csr_matrix((1, data.known.shape[1]), dtype=np.float32))
    if not parts:
        return sp.csr_matrix((0, data.known.shape[1]), dtype=np.float32)
    return sp.vstack(parts, format="csr")

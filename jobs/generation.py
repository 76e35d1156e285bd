"""Playlists of a chunk of listeners, as the database stores them: the shipped
:class:`recsys.pipeline.PlaylistPipeline` (:meth:`jobs.week.PlaylistPolicy.pipeline`) over a
week's model and catalog, with a reason per track."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from jobs.week import PlaylistPolicy, TrainingData
from recsys.blend import WeekModel
from recsys.db import repository
from recsys.playlist import POPULAR_REASON


@dataclass
class BuiltPlaylists:
    """Playlists of a chunk of listeners and what they hold."""

    playlists: list[repository.NewPlaylist] = field(default_factory=list)
    short: int = 0
    cold_tracks: int = 0
    popular: int = 0


def build_playlists(
    policy: PlaylistPolicy,
    model: WeekModel,
    data: TrainingData,
    user_rows: np.ndarray,
    newcomers: np.ndarray | None = None,
) -> BuiltPlaylists:
    """Personal playlists (with a reason per track) of the listeners at ``user_rows``, and
    popular playlists of the ``newcomers`` (ids of listeners without usable history)."""
    built = BuiltPlaylists()
    length = policy.rules.length
    pipeline = policy.pipeline(model, data.track_artist, data.track_listeners)
    # A thumbs-down is the only negative confidence (jobs/aggregate.py).
    blocks = pipeline.personal(
        np.asarray(user_rows, dtype=np.int64), data.known, thumbs_down=data.matrix.user_items < 0
    )
    for block in blocks:
        reasons = pipeline.explain(block, data.played[block.user_rows], data.track_titles)
        built.cold_tracks += int(block.is_cold.sum())
        chosen = block.track_columns >= 0
        built.short += int((chosen.sum(axis=1) < length).sum())
        # Whole blocks to Python lists at once: no numpy scalar per track.
        track_ids = model.track_ids[np.where(chosen, block.track_columns, 0)].tolist()
        for user_id, row_ids, row_scores, row_chosen, row_reasons in zip(
            model.user_ids[block.user_rows].tolist(),
            track_ids,
            block.scores.tolist(),
            chosen.tolist(),
            reasons,
            strict=True,
        ):
            entries = [
                repository.PlaylistEntry(track_id, score, reason)
                for track_id, score, reason, kept in zip(
                    row_ids, row_scores, row_reasons, row_chosen, strict=True
                )
                if kept
            ]
            built.playlists.append(repository.NewPlaylist(str(user_id), entries))
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

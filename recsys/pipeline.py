"""The one playlist pipeline: what the weekly run publishes, and what the gate, ``evaluate``,
``tune`` and the quality benchmark measure.

A :class:`PlaylistPipeline` is a value built from :class:`recsys.playlist.PlaylistRules`, a
model and the week's catalog arrays. For a block of listeners it runs candidates (the
model's scores) -> exclusion (everything the listener played or thumbed, the artists they
turned down) -> re-ranking (MMR, popularity penalty, artist cap) -> cold-start slots ->
explanations; listeners without usable history fall back to the popular, varied list
(gorse's fallback chain, done once). The same object gives the same playlists wherever it
is called, which is what makes "the gate measures what ships" hold by construction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys.als import ALSModel
from recsys.blend import Blend
from recsys.explain import explain_block
from recsys.playlist import (
    PlaylistBlock,
    PlaylistRules,
    block_memory_bytes,
    block_size_within,
    generate_playlists,
    popular_playlists,
)
from recsys.recommender import Recommender


@dataclass(frozen=True)
class PlaylistPipeline:
    """Builds playlists of blocks of listeners.

    Attributes
    ----------
    rules : PlaylistRules
        Length, artist cap, re-ranking, cold slots and the artist thumbs-down limit.
    model : Recommender
        The candidate generator. An :class:`recsys.als.ALSModel` with cold-start factors
        (alone or as the base of a :class:`recsys.blend.Blend`) also fills the cold slots
        (when ``rules.cold_slots > 0``), gives the diversity term its vectors and names the
        anchors of the explanations.
    track_artist : numpy.ndarray
        int64 (n_tracks,): dense artist number per track.
    track_listeners : numpy.ndarray
        int64 (n_tracks,): listeners with a positive confidence per track; tracks without
        any never enter a personal ranking (cold ones only through the cold slots), and it
        is the popularity of the penalty and of the fallback list.
    block_size : int
        The most listeners scored per matrix product.
    memory_bytes : int, optional
        The most a block may allocate (:func:`recsys.playlist.block_memory_bytes`): blocks
        are made smaller than ``block_size`` when needed (:attr:`block_rows`).
    """

    rules: PlaylistRules
    model: Recommender
    track_artist: npt.NDArray[np.int64]
    track_listeners: npt.NDArray[np.int64]
    block_size: int = 2048
    memory_bytes: int | None = None

    def __post_init__(self) -> None:
        n_tracks = len(self.model.track_ids)
        for name in ("track_artist", "track_listeners"):
            if np.shape(getattr(self, name)) != (n_tracks,):
                raise ValueError(
                    f"{name} has shape {np.shape(getattr(self, name))}, expected ({n_tracks},)"
                )
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {self.block_size}")
        if self.memory_bytes is not None and self.memory_bytes < 1:
            raise ValueError(f"memory_bytes must be at least 1, got {self.memory_bytes}")

    @property
    def block_rows(self) -> int:
        """Listeners per block: ``block_size``, or fewer when ``memory_bytes`` would not
        hold a block of that many (at least 1)."""
        if self.memory_bytes is None:
            return self.block_size
        cold, vectors = self.cold_mask, self.item_vectors
        n_tracks = len(self.track_artist)
        shape = (
            n_tracks,
            self.rules.length * self.rules.pool_factor,
            1 if vectors is None else vectors.shape[1],
            0 if cold is None else int(cold.sum()),
        )
        partners = isinstance(self.model, Blend) and bool(self.model.partners)
        one = block_memory_bytes(1, *shape, partners=partners)
        if one > self.memory_bytes:
            raise ValueError(
                f"a block of one listener over {n_tracks} tracks needs {one / 2**20:.0f} MiB, "
                f"more than the {self.memory_bytes / 2**20:.0f} MiB allowed: raise "
                "CRATEDIGGER_GENERATE_MEMORY_MB"
            )
        fitting = block_size_within(self.memory_bytes, *shape, partners=partners)
        return min(self.block_size, fitting)

    @property
    def _als(self) -> ALSModel | None:
        return self.model.base if isinstance(self.model, ALSModel | Blend) else None

    @property
    def cold_mask(self) -> npt.NDArray[np.bool_] | None:
        """bool (n_tracks,): the tracks that may take cold slots; None without cold start."""
        als = self._als
        if self.rules.cold_slots == 0 or als is None or als.cold_start is None:
            return None
        return als.cold_start.cold_mask

    @property
    def item_vectors(self) -> npt.NDArray[np.float32] | None:
        """float32 (n_tracks, factors): the vectors of the diversity term and of the
        explanations (an ALS model's scoring factors)."""
        als = self._als
        return als.scoring_item_factors if als is not None else None

    def personal(
        self,
        user_rows: npt.NDArray[np.int64],
        known: sp.csr_matrix,
        *,
        thumbs_down: sp.csr_matrix | None = None,
    ) -> Iterator[PlaylistBlock]:
        """The personal playlists of ``user_rows``, block by block.

        Parameters
        ----------
        user_rows : numpy.ndarray
            int64: the listeners' rows in the model, in the order the blocks come.
        known : scipy.sparse.csr_matrix
            (n_users, n_tracks): every track each listener played or thumbed; never chosen.
        thumbs_down : scipy.sparse.csr_matrix, optional
            (n_users, n_tracks): stored entries are thumbed-down tracks, for the artist
            thumbs-down limit.
        """
        return generate_playlists(
            self.model,
            known,
            self.track_artist,
            self.rules,
            user_rows=np.asarray(user_rows, dtype=np.int64),
            eligible=self.track_listeners > 0,
            block_size=self.block_rows,
            cold_mask=self.cold_mask,
            item_factors=self.item_vectors,
            popularity=self.track_listeners.astype(np.float64),
            thumbs_down=thumbs_down if self.rules.artist_thumbs_down_limit > 0 else None,
        )

    def columns(
        self,
        user_rows: npt.NDArray[np.int64],
        known: sp.csr_matrix,
        *,
        thumbs_down: sp.csr_matrix | None = None,
    ) -> npt.NDArray[np.int64]:
        """int64 (len(user_rows), length): the personal playlists' track columns, -1
        padded, in one array (what the evaluation compares)."""
        parts = [b.track_columns for b in self.personal(user_rows, known, thumbs_down=thumbs_down)]
        return np.vstack(parts) if parts else np.empty((0, self.rules.length), dtype=np.int64)

    def popular(
        self, known: sp.csr_matrix
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The fallback for listeners without usable history: a popular, varied list each,
        without what that listener knows (``known``: (B, n_tracks)).

        Returns
        -------
        (columns, scores)
            int64 (B, length), -1 padded; float32 (B, length) popularity on a log scale.
        """
        return popular_playlists(
            self.track_listeners.astype(np.float64),
            self.track_artist,
            known,
            self.rules,
            item_factors=self.item_vectors,
        )

    def explain(
        self,
        block: PlaylistBlock,
        played: sp.csr_matrix,
        track_titles: Sequence[str] | npt.NDArray[np.str_],
    ) -> list[list[str | None]]:
        """A reason per chosen track of ``block`` (:func:`recsys.explain.explain_block`):
        ``played`` holds the block's rows of what each listener played, by confidence. A
        blend's most weighted partner names the played track behind a pick that ALS's
        factors explain only as a whole ("Listeners of X also play this").

        Raises
        ------
        ValueError
            If the model has no item vectors to explain with (not an ALS model).
        """
        als = self._als
        if als is None:
            raise ValueError("only a model with item factors can explain its picks")
        cold = self.cold_mask
        return explain_block(
            played,
            als.scoring_item_factors,
            block.track_columns,
            track_titles,
            cold if cold is not None else np.zeros(len(als.track_ids), dtype=bool),
            content=als.cold_start.content
            if cold is not None and als.cold_start is not None
            else None,
            co_listening=self._co_listening,
        )

    @property
    def _co_listening(self) -> sp.csr_matrix | npt.NDArray[np.float32] | None:
        if not isinstance(self.model, Blend) or not self.model.partners:
            return None
        partner, _ = max(self.model.partners.values(), key=lambda pair: pair[1])
        return partner.weights

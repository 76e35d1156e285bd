"""Implicit-feedback ALS: training, the saved artifact, and scoring.

Every recommender that feeds playlists implements :class:`Recommender`, so the playlist
builder does not care whether a score came from ALS or (later) from the content model.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from recsys.matrix import InteractionMatrix

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 1
FACTORS_FILE = "factors.npz"
METADATA_FILE = "model.json"


class Recommender(Protocol):
    """Scores tracks for listeners."""

    @property
    def user_ids(self) -> npt.NDArray[np.str_]: ...

    @property
    def track_ids(self) -> npt.NDArray[np.str_]: ...

    def score(self, user_rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Scores of shape (len(user_rows), n_tracks) for the listeners at ``user_rows``."""
        ...


@dataclass(frozen=True)
class ALSParams:
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    random_seed: int = 42

    def __post_init__(self) -> None:
        if self.factors < 1:
            raise ValueError(f"factors must be at least 1, got {self.factors}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        if self.regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")


@dataclass(frozen=True)
class ALSModel:
    """Trained factors with the id maps they belong to.

    Attributes
    ----------
    user_factors : numpy.ndarray
        float32 array of shape (n_users, factors).
    item_factors : numpy.ndarray
        float32 array of shape (n_tracks, factors); rows of tracks without interactions
        are zero.
    user_ids, track_ids : numpy.ndarray
        Unicode arrays naming the rows of ``user_factors`` and ``item_factors``.
    """

    user_factors: npt.NDArray[np.float32]
    item_factors: npt.NDArray[np.float32]
    user_ids: npt.NDArray[np.str_]
    track_ids: npt.NDArray[np.str_]
    params: ALSParams
    fingerprint: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def score(self, user_rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Dot products of shape (len(user_rows), n_tracks), float32."""
        result: npt.NDArray[np.float32] = self.user_factors[user_rows] @ self.item_factors.T
        return result

    def save(self, directory: Path) -> Path:
        """Write ``factors.npz`` and ``model.json`` into ``directory`` (no pickle)."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (FACTORS_FILE + ".tmp.npz")
        np.savez(
            tmp,
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            user_ids=self.user_ids,
            track_ids=self.track_ids,
        )
        tmp.replace(directory / FACTORS_FILE)
        metadata = {
            "format": ARTIFACT_FORMAT,
            "params": asdict(self.params),
            "fingerprint": self.fingerprint,
            **self.metadata,
        }
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: Path) -> ALSModel:
        """Load an artifact written by :meth:`save`.

        Raises
        ------
        ValueError
            If the directory does not hold a model of a format this code reads.
        """
        metadata_path = directory / METADATA_FILE
        if not metadata_path.is_file() or not (directory / FACTORS_FILE).is_file():
            raise ValueError(f"{directory} does not hold a model ({METADATA_FILE}, {FACTORS_FILE})")
        metadata = json.loads(metadata_path.read_text())
        if metadata.get("format") != ARTIFACT_FORMAT:
            raise ValueError(
                f"{directory}: model format {metadata.get('format')!r} is not supported"
            )
        with np.load(directory / FACTORS_FILE, allow_pickle=False) as arrays:
            user_factors = arrays["user_factors"]
            item_factors = arrays["item_factors"]
            user_ids = arrays["user_ids"]
            track_ids = arrays["track_ids"]
        params = ALSParams(**metadata.pop("params"))
        fingerprint = metadata.pop("fingerprint")
        metadata.pop("format")
        return cls(user_factors, item_factors, user_ids, track_ids, params, fingerprint, metadata)


def train_als(
    matrix: InteractionMatrix, params: ALSParams, *, show_progress: bool = False
) -> ALSModel:
    """Fit implicit's CPU ALS on the confidence matrix.

    BLAS runs on one thread during the fit, as implicit recommends: its own threads already
    use every core and a multi-threaded BLAS underneath them slows the fit several times.
    """
    from implicit.cpu.als import AlternatingLeastSquares

    if matrix.user_items.nnz == 0:
        raise ValueError("cannot train on an empty interaction matrix")
    started = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.random_seed,
        )
        model.fit(matrix.user_items, show_progress=show_progress)
    seconds = time.perf_counter() - started
    log.info(
        "trained ALS on %d listeners x %d tracks (%d interactions) in %.2f s",
        matrix.shape[0],
        matrix.shape[1],
        matrix.user_items.nnz,
        seconds,
    )
    item_factors = np.asarray(model.item_factors, dtype=np.float32)
    # Tracks nobody interacted with keep their random initial factors in implicit; zero them
    # so that an unplayed track never scores by chance.
    unplayed = np.diff(matrix.user_items.tocsc().indptr) == 0
    item_factors[unplayed] = 0.0
    return ALSModel(
        user_factors=np.asarray(model.user_factors, dtype=np.float32),
        item_factors=item_factors,
        user_ids=matrix.user_ids,
        track_ids=matrix.track_ids,
        params=params,
        fingerprint=matrix.fingerprint(asdict(params)),
        metadata={
            "trained_at": dt.datetime.now(dt.UTC).isoformat(),
            "train_seconds": round(seconds, 3),
            "n_interactions": int(matrix.user_items.nnz),
        },
    )

"""Implicit-feedback ALS: training, the saved artifact, and scoring.

:class:`ALSModel` implements :class:`recsys.recommender.Recommender`; its scores come from
the trained factors, and for cold-start tracks from factors projected from their content
(:class:`ColdStartFactors`), so the playlist pipeline does not care which produced a
candidate.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from recsys.matrix import InteractionMatrix
from recsys.recommender import BlockRecommender

log = logging.getLogger(__name__)

#: Format 1: factors and id maps. Format 2: also cold-start arrays (``cold_mask``,
#: ``cold_factors``, optionally ``content``). :meth:`ALSModel.save` writes the lowest format
#: that holds the model, so a model without cold start stays readable by older code.
ARTIFACT_FORMAT = 2
READABLE_FORMATS = (1, 2)
FACTORS_FILE = "factors.npz"
METADATA_FILE = "model.json"


@dataclass(frozen=True)
class ALSParams:
    """Parameters of implicit's ALS; the defaults are the settings' ``als_*`` defaults."""

    factors: int = 32
    regularization: float = 1.0
    alpha: float = 5.0
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
class ColdStartFactors:
    """Factors projected from content for tracks with too little history of their own
    (see :func:`recsys.coldstart.cold_item_factors`), saved with the model.

    Attributes
    ----------
    cold_mask : numpy.ndarray
        bool array of shape (n_tracks,): the cold tracks.
    factors : numpy.ndarray
        float32 array of shape (n_cold, factors): the projected factors of the cold tracks,
        in column order.
    content : numpy.ndarray, optional
        float32 array of shape (n_tracks, d): the content features the projection read
        (:func:`recsys.coldstart.content_matrix`), kept to explain cold picks.
    """

    cold_mask: npt.NDArray[np.bool_]
    factors: npt.NDArray[np.float32]
    content: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        if self.cold_mask.ndim != 1 or self.cold_mask.dtype != np.bool_:
            raise ValueError(f"cold_mask must be a 1-D bool array, got {self.cold_mask.dtype}")
        n_cold = int(self.cold_mask.sum())
        if self.factors.ndim != 2 or self.factors.shape[0] != n_cold:
            raise ValueError(f"factors has shape {self.factors.shape} for {n_cold} cold tracks")
        if self.content is not None and (
            self.content.ndim != 2 or self.content.shape[0] != len(self.cold_mask)
        ):
            raise ValueError(
                f"content has shape {self.content.shape}, expected ({len(self.cold_mask)}, d)"
            )


@dataclass(frozen=True)
class ALSModel(BlockRecommender):
    """Trained factors with the id maps they belong to (a :class:`recsys.recommender.Recommender`).

    Scores are dot products with :attr:`scoring_item_factors`: the trained factors, with
    the rows of cold-start tracks replaced by the factors projected from their content.

    Attributes
    ----------
    user_factors : numpy.ndarray
        float32 array of shape (n_users, factors).
    item_factors : numpy.ndarray
        float32 array of shape (n_tracks, factors); rows of tracks without interactions
        are zero.
    user_ids, track_ids : numpy.ndarray
        Unicode arrays naming the rows of ``user_factors`` and ``item_factors``.
    cold_start : ColdStartFactors, optional
        Projected factors of the cold-start tracks (see :func:`with_cold_start`).
    """

    user_factors: npt.NDArray[np.float32]
    item_factors: npt.NDArray[np.float32]
    user_ids: npt.NDArray[np.str_]
    track_ids: npt.NDArray[np.str_]
    params: ALSParams
    fingerprint: str
    metadata: dict[str, Any] = field(default_factory=dict)
    cold_start: ColdStartFactors | None = None

    def __post_init__(self) -> None:
        if self.cold_start is not None:
            if len(self.cold_start.cold_mask) != len(self.track_ids):
                raise ValueError(
                    f"cold_start.cold_mask has {len(self.cold_start.cold_mask)} entries for "
                    f"{len(self.track_ids)} tracks"
                )
            if self.cold_start.factors.shape[1] != self.item_factors.shape[1]:
                raise ValueError(
                    f"cold_start.factors has {self.cold_start.factors.shape[1]} factors, "
                    f"item_factors {self.item_factors.shape[1]}"
                )

    @classmethod
    def fit(
        cls, matrix: InteractionMatrix, params: ALSParams, *, show_progress: bool = False
    ) -> ALSModel:
        """Train on ``matrix`` (:func:`train_als`)."""
        return train_als(matrix, params, show_progress=show_progress)

    @property
    def base(self) -> ALSModel:
        """The ALS model itself: the week's model's ALS part, as a blend's ``base`` is."""
        return self

    def score_into(self, user_rows: npt.NDArray[np.int64], out: npt.NDArray[np.float32]) -> None:
        """Dot products with :attr:`scoring_item_factors`, written straight into ``out``."""
        np.matmul(self.user_factors[user_rows], self.scoring_item_factors.T, out=out)

    def item_vectors(self) -> npt.NDArray[np.float32]:
        return self.scoring_item_factors

    @functools.cached_property
    def scoring_item_factors(self) -> npt.NDArray[np.float32]:
        """float32 array (n_tracks, factors): the trained item factors with the rows of the
        cold-start tracks replaced by their projected factors (the trained factors when the
        model has no cold start)."""
        if self.cold_start is None:
            return self.item_factors
        factors = self.item_factors.copy()
        factors[self.cold_start.cold_mask] = self.cold_start.factors
        return factors

    @functools.cached_property
    def _unit_item_factors(self) -> npt.NDArray[np.float32]:
        return super().unit_item_vectors()

    def unit_item_vectors(self) -> npt.NDArray[np.float32]:
        # Kept: the web app asks for similar tracks on every /tracks/{id}/similar request.
        return self._unit_item_factors

    @functools.cached_property
    def _track_rows(self) -> dict[str, int]:
        return {str(track_id): row for row, track_id in enumerate(self.track_ids)}

    def similar_tracks(self, track_id: str, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` tracks nearest to ``track_id`` by cosine of item factors (cold-start
        tracks included through their projected factors), best first, without the track
        itself (:meth:`similar_items` by id).

        Raises
        ------
        KeyError
            If the model has no factors for ``track_id``.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        row = self._track_rows[track_id]
        columns, similarity = self.similar_items(np.array([row]), min(n, len(self.track_ids)))
        return [
            (str(self.track_ids[c]), float(s))
            for c, s in zip(columns[0], similarity[0], strict=True)
            if c >= 0
        ]

    def save(self, directory: Path) -> Path:
        """Write ``factors.npz`` and ``model.json`` into ``directory`` (no pickle)."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (FACTORS_FILE + ".tmp.npz")
        arrays: dict[str, npt.NDArray[Any]] = {
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
            "user_ids": self.user_ids,
            "track_ids": self.track_ids,
        }
        artifact_format = 1
        if self.cold_start is not None:
            artifact_format = 2
            arrays["cold_mask"] = self.cold_start.cold_mask
            arrays["cold_factors"] = self.cold_start.factors
            if self.cold_start.content is not None:
                arrays["content"] = self.cold_start.content
        np.savez(tmp, allow_pickle=False, **arrays)
        tmp.replace(directory / FACTORS_FILE)
        metadata = {
            "format": artifact_format,
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
        artifact_format = metadata.get("format")
        if artifact_format not in READABLE_FORMATS:
            raise ValueError(f"{directory}: model format {artifact_format!r} is not supported")
        cold_start: ColdStartFactors | None = None
        with np.load(directory / FACTORS_FILE, allow_pickle=False) as arrays:
            user_factors = arrays["user_factors"]
            item_factors = arrays["item_factors"]
            user_ids = arrays["user_ids"]
            track_ids = arrays["track_ids"]
            if artifact_format >= 2 and "cold_mask" in arrays.files:
                cold_start = ColdStartFactors(
                    cold_mask=arrays["cold_mask"].astype(bool),
                    factors=arrays["cold_factors"],
                    content=arrays["content"] if "content" in arrays.files else None,
                )
        params = ALSParams(**metadata.pop("params"))
        fingerprint = metadata.pop("fingerprint")
        metadata.pop("format")
        return cls(
            user_factors,
            item_factors,
            user_ids,
            track_ids,
            params,
            fingerprint,
            metadata,
            cold_start,
        )


GpuChoice = Literal["auto", "true", "false"]


def gpu_available() -> bool:
    """Whether the installed implicit was built with CUDA and sees a GPU."""
    try:
        import implicit.gpu
    except ImportError:  # pragma: no cover - implicit always ships the module
        return False
    return bool(implicit.gpu.HAS_CUDA)


def use_gpu(choice: GpuChoice) -> bool:
    """Whether to train on the GPU (``CRATEDIGGER_ALS_USE_GPU``): ``auto`` when implicit
    has CUDA, ``true`` always, ``false`` never.

    Raises
    ------
    ValueError
        If the choice is ``true`` and implicit has no CUDA.
    """
    available = gpu_available()
    if choice == "true" and not available:
        raise ValueError(
            "CRATEDIGGER_ALS_USE_GPU=true but the installed implicit has no CUDA "
            "(install implicit's GPU build, e.g. from conda-forge, or set it to auto)"
        )
    return choice == "true" or (choice == "auto" and available)


def _host_array(factors: Any) -> npt.NDArray[np.float32]:
    """Factors as a float32 numpy array (implicit's GPU matrices copy to the host)."""
    return np.array(factors.to_numpy() if hasattr(factors, "to_numpy") else factors, np.float32)


def train_als(
    matrix: InteractionMatrix,
    params: ALSParams,
    *,
    show_progress: bool = False,
    checkpoint: tuple[int, Callable[[ALSModel], None]] | None = None,
    gpu: bool = False,
) -> ALSModel:
    """Fit implicit's ALS on the confidence matrix, on the CPU or (``gpu``) with its CUDA
    solver; the model holds host arrays either way.

    BLAS runs on one thread during the fit, as implicit recommends: its own threads already
    use every core and a multi-threaded BLAS underneath them slows the fit several times.

    Parameters
    ----------
    checkpoint : (int, callable), optional
        ``(i, look)``: after iteration ``i`` (1-based) ``look`` gets the model as trained so
        far (without a fingerprint); an exception it raises stops the fit (a search's
        pruning).
    """
    if gpu:
        from implicit.gpu.als import AlternatingLeastSquares
    else:
        from implicit.cpu.als import AlternatingLeastSquares

    if matrix.user_items.nnz == 0:
        raise ValueError("cannot train on an empty interaction matrix")
    started = time.perf_counter()
    unplayed = np.diff(matrix.user_items.tocsc().indptr) == 0

    def snapshot(fingerprint: str) -> ALSModel:
        item_factors = _host_array(model.item_factors)
        # Tracks nobody interacted with keep their random initial factors in implicit; zero
        # them so that an unplayed track never scores by chance.
        item_factors[unplayed] = 0.0
        seconds = time.perf_counter() - started
        return ALSModel(
            user_factors=_host_array(model.user_factors),
            item_factors=item_factors,
            user_ids=matrix.user_ids,
            track_ids=matrix.track_ids,
            params=params,
            fingerprint=fingerprint,
            metadata={
                "trained_at": dt.datetime.now(dt.UTC).isoformat(),
                "train_seconds": round(seconds, 3),
                "n_interactions": int(matrix.user_items.nnz),
            },
        )

    def callback(iteration: int, *_: Any) -> None:
        if checkpoint is not None and iteration + 1 == checkpoint[0]:
            checkpoint[1](snapshot(""))

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.random_seed,
        )
        model.fit(matrix.user_items, show_progress=show_progress, callback=callback)
    trained = snapshot(matrix.fingerprint(asdict(params)))
    log.info(
        "trained ALS on %d listeners x %d tracks (%d interactions) in %.2f s",
        matrix.shape[0],
        matrix.shape[1],
        matrix.user_items.nnz,
        trained.metadata["train_seconds"],
    )
    return trained


def with_cold_start(
    model: ALSModel,
    content: npt.NDArray[np.float32],
    has_content: npt.NDArray[np.bool_],
    listeners: npt.NDArray[np.int64],
    min_listeners: int,
) -> ALSModel:
    """The model with projected factors for its cold-start tracks.

    A ridge projection from content to item factors is fitted on the tracks with content and
    at least ``min_listeners`` listeners (:func:`recsys.coldstart.cold_item_factors`). The
    cold-start tracks are the tracks with content and no listener at all: ALS learnt nothing
    about them, and they keep the projected factors. Tracks with a few listeners keep their
    trained factors and stay in the personal ranking (the projection would make most of a
    small catalog "cold", and cold tracks only get a few slots per playlist). The
    fingerprint then also covers the content and ``min_listeners``, so that a model version
    names its cold-start factors too.

    Parameters
    ----------
    content : numpy.ndarray
        float32 array (n_tracks, d) from :func:`recsys.coldstart.content_matrix`, in the
        model's track order.
    has_content : numpy.ndarray
        bool array (n_tracks,).
    listeners : numpy.ndarray
        int64 array (n_tracks,): listeners with a positive interaction per track.
    min_listeners : int
        Tracks with at least this many listeners (and content) train the projection.

    Returns
    -------
    ALSModel
        ``model`` itself when no track is cold (nothing to add).
    """
    from recsys.coldstart import cold_item_factors

    n_tracks = len(model.track_ids)
    if content.shape[0] != n_tracks or has_content.shape != (n_tracks,):
        raise ValueError(
            f"content {content.shape} and has_content {has_content.shape} do not match "
            f"{n_tracks} tracks"
        )
    if listeners.shape != (n_tracks,):
        raise ValueError(f"listeners has shape {listeners.shape}, expected ({n_tracks},)")
    factors, projected = cold_item_factors(
        model.item_factors, content, has_content, listeners, min_listeners
    )
    cold_mask = projected & (listeners == 0)
    log.info(
        "cold start: %d of the %d tracks with content and fewer than %d listeners have none "
        "and are scored from content; the other %d keep the factors ALS trained on their "
        "listeners",
        int(cold_mask.sum()),
        int(projected.sum()),
        min_listeners,
        int(projected.sum() - cold_mask.sum()),
    )
    if not cold_mask.any():
        return model
    digest = hashlib.sha256(model.fingerprint.encode())
    digest.update(json.dumps({"cold_min_listeners": min_listeners}).encode())
    for array in (content, has_content):
        digest.update(np.ascontiguousarray(array).tobytes())
    cold_start = ColdStartFactors(
        cold_mask=cold_mask,
        factors=np.ascontiguousarray(factors[cold_mask], dtype=np.float32),
        content=np.ascontiguousarray(content, dtype=np.float32),
    )
    metadata = dict(model.metadata)
    metadata["cold_start"] = {
        "cold_tracks": int(cold_mask.sum()),
        "min_listeners": min_listeners,
        "tracks_with_content": int(has_content.sum()),
    }
    return replace(model, fingerprint=digest.hexdigest(), metadata=metadata, cold_start=cold_start)

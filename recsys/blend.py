"""The week's ensemble: ALS blended with item-to-item candidate generators.

A :class:`Blend` scores a listener as ALS's scores plus a weighted sum of partner models'
scores (:mod:`recsys.neighbors`: item-kNN on cosine or BM25 weights, RP3beta, EASE), each
standardised per listener (zero mean and unit variance over the catalog) so that a weight
means the same whatever each model's scale. ALS stays the *base*: its factors give the
diversity term, the cold-start slots and the explanations, and its artifact is the blend's
own directory, so a reader that knows only ALS still loads the base.

Which partners and weights (:class:`BlendParams`, ``CRATEDIGGER_BLEND``, e.g.
``"rp3beta:0.5,itemknn:0.3"``; ``"none"`` for ALS alone) are chosen by the weekly run's
self-tuning on its own validation split (:func:`recsys.tuning.blend_search`) and adopted
only when they beat the current ones on the gate's holdout. EASE joins only when its dense
track x track matrix fits the memory budget (:func:`recsys.neighbors.ease_fits`); otherwise
it is left out with a log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recsys.als import ALSModel, ALSParams, train_als
from recsys.contract import ConfidenceParams
from recsys.matrix import InteractionMatrix
from recsys.neighbors import (
    DEFAULT_EASE_MEMORY_MB,
    EASE,
    ItemKNN,
    ItemToItemModel,
    RP3beta,
    ease_fits,
)
from recsys.recommender import BlockRecommender

log = logging.getLogger(__name__)

BLEND_FILE = "blend.json"
PARTNERS_DIR = "partners"
#: Partner name -> fit(matrix, memory_budget_mb), at each model's usual settings.
PARTNER_FITS: dict[str, Callable[[InteractionMatrix, float], ItemToItemModel]] = {
    "itemknn": lambda matrix, _: ItemKNN.fit(matrix, weighting="cosine"),
    # implicit's BM25Recommender defaults (K 20, K1 1.2, B 0.75).
    "bm25": lambda matrix, _: ItemKNN.fit(matrix, weighting="bm25", K=20),
    "rp3beta": lambda matrix, _: RP3beta.fit(matrix),
    "ease": lambda matrix, budget: EASE.fit(matrix, memory_budget_mb=budget),
}
PARTNER_CLASSES: dict[str, type[ItemToItemModel]] = {
    "itemknn": ItemKNN,
    "bm25": ItemKNN,
    "rp3beta": RP3beta,
    "ease": EASE,
}
MAX_WEIGHT = 10.0


@dataclass(frozen=True)
class BlendParams:
    """The partners blended with ALS and their weights (ALS weighs 1).

    Attributes
    ----------
    weights : tuple of (str, float)
        ``(partner, weight)`` pairs, partners from :data:`PARTNER_FITS`, each once, weights
        in (0, :data:`MAX_WEIGHT`]; empty for ALS alone.
    """

    weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        names = [name for name, _ in self.weights]
        unknown = sorted(set(names) - set(PARTNER_FITS))
        if unknown:
            raise ValueError(
                f"unknown blend partner(s) {unknown}; choose from {sorted(PARTNER_FITS)}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"a blend partner appears twice in {names}")
        for name, weight in self.weights:
            if not 0.0 < weight <= MAX_WEIGHT:
                raise ValueError(
                    f"the weight of {name} must be in (0, {MAX_WEIGHT:g}], got {weight}"
                )

    @classmethod
    def parse(cls, text: str) -> BlendParams:
        """``"rp3beta:0.5,itemknn:0.3"`` (spaces allowed); ``"none"`` or ``""`` for ALS
        alone; a partner weighted 0 is left out.

        Raises
        ------
        ValueError
            If the text is not of that form or names an unknown partner.
        """
        stripped = text.strip()
        if stripped.lower() in ("", "none"):
            return cls()
        pairs = []
        for part in stripped.split(","):
            name, sep, weight = part.partition(":")
            if not sep:
                raise ValueError(f"blend entry {part.strip()!r} is not partner:weight")
            try:
                value = float(weight)
            except ValueError:
                raise ValueError(f"blend weight {weight.strip()!r} is not a number") from None
            if value != value:
                raise ValueError(f"blend weight of {name.strip()} is not a number")
            if value != 0.0:
                pairs.append((name.strip().lower(), value))
        return cls(tuple(pairs))

    def text(self) -> str:
        """The form :meth:`parse` reads; ``"none"`` for ALS alone."""
        return ",".join(f"{name}:{weight:g}" for name, weight in self.weights) or "none"


def standardise(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Each row of ``scores`` (B, n) shifted to zero mean and scaled to unit variance, in
    place (a constant row becomes zeros)."""
    scores -= scores.mean(axis=1, dtype=np.float64, keepdims=True).astype(np.float32)
    variance = np.einsum("ij,ij->i", scores, scores, dtype=np.float64) / max(scores.shape[1], 1)
    scale = np.where(variance > 0, 1.0 / np.sqrt(np.maximum(variance, 1e-30)), 0.0)
    scores *= scale.astype(np.float32)[:, None]
    return scores


@dataclass
class Blend(BlockRecommender):
    """ALS plus weighted, standardised partner scores (see the module docstring).

    Attributes
    ----------
    base : ALSModel
        The ALS model (with its cold-start factors, when any).
    partners : dict
        Partner name -> (fitted model, weight), in the order of ``params.weights``.
    """

    base: ALSModel
    partners: dict[str, tuple[ItemToItemModel, float]] = field(default_factory=dict)
    _local: threading.local = field(
        default_factory=threading.local, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for name, (model, _) in self.partners.items():
            if not np.array_equal(model.track_ids, self.base.track_ids) or not np.array_equal(
                model.user_ids, self.base.user_ids
            ):
                raise ValueError(f"partner {name} was fitted on other listeners or tracks")
        self.user_ids = self.base.user_ids
        self.track_ids = self.base.track_ids

    @property
    def params(self) -> BlendParams:
        return BlendParams(tuple((name, weight) for name, (_, weight) in self.partners.items()))

    @property
    def fingerprint(self) -> str:
        """The base's fingerprint with the blend's partners and weights."""
        text = f"{self.base.fingerprint}|{self.params.text()}"
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def metadata(self) -> dict[str, Any]:
        return self.base.metadata

    def with_base(self, base: ALSModel) -> Blend:
        """The same partners over another ALS model of the same listeners and tracks."""
        return Blend(base, dict(self.partners))

    def score_into(self, user_rows: npt.NDArray[np.int64], out: npt.NDArray[np.float32]) -> None:
        """Standardised ALS scores plus each partner's weight times its standardised
        scores, into ``out``; the partners score into one scratch buffer per thread, kept
        for the next block."""
        rows = np.asarray(user_rows, dtype=np.int64)
        self.base.score_into(rows, out)
        standardise(out)
        cold = None if self.base.cold_start is None else self.base.cold_start.cold_mask
        # A partner cannot score a track nobody played: a cold track takes ALS's opinion in
        # every partner's place, so cold and played tracks stay on one scale.
        cold_scores = None if cold is None else out[:, cold] * np.float32(1.0 + self.weight_sum)
        if self.partners:
            part = self._scratch(out.shape)
            for model, weight in self.partners.values():
                model.score_into(rows, part)
                standardise(part)
                part *= np.float32(weight)
                out += part
        if cold is not None:
            out[:, cold] = cold_scores

    def _scratch(self, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
        """A float32 view of ``shape`` on this thread's scratch buffer, grown as needed."""
        held: npt.NDArray[np.float32] | None = getattr(self._local, "buffer", None)
        size = int(np.prod(shape))
        if held is None or held.size < size:
            held = self._local.buffer = np.empty(size, dtype=np.float32)
        return held[:size].reshape(shape)

    @property
    def weight_sum(self) -> float:
        return float(sum(weight for _, weight in self.partners.values()))

    def item_vectors(self) -> npt.NDArray[np.float32]:
        return self.base.item_vectors()

    def save(self, directory: Path) -> Path:
        """Each partner under ``partners/NAME``, ``blend.json``, then the base's own files
        (its ``model.json`` last, so a directory with it is complete)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, (model, _) in self.partners.items():
            model.save(directory / PARTNERS_DIR / name)
        (directory / BLEND_FILE).write_text(json.dumps({"blend": self.params.text()}) + "\n")
        return self.base.save(directory)

    @classmethod
    def load(cls, directory: Path) -> Blend:
        """The blend :meth:`save` wrote into ``directory``.

        Raises
        ------
        ValueError
            If the directory does not hold a blend of partners this code knows.
        """
        blend_file = directory / BLEND_FILE
        try:
            params = BlendParams.parse(str(json.loads(blend_file.read_text())["blend"]))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{blend_file} is not a blend description: {exc}") from None
        partners = {
            name: (PARTNER_CLASSES[name].load(directory / PARTNERS_DIR / name), weight)
            for name, weight in params.weights
        }
        return cls(ALSModel.load(directory), partners)


WeekModel = ALSModel | Blend


def load_model(directory: Path) -> WeekModel:
    """The model saved in ``directory``: a :class:`Blend` when it holds ``blend.json``,
    else ALS alone.

    Raises
    ------
    ValueError
        If the directory holds no readable model.
    """
    return Blend.load(directory) if (directory / BLEND_FILE).is_file() else ALSModel.load(directory)


def fit_partners(
    matrix: InteractionMatrix, names: list[str] | tuple[str, ...], memory_budget_mb: float
) -> dict[str, ItemToItemModel]:
    """The partners ``names`` fitted on ``matrix``; EASE is left out (with a log line) when
    its dense matrix would not fit ``memory_budget_mb`` MiB."""
    fitted = {}
    for name in names:
        if name == "ease" and not ease_fits(matrix.shape[1], memory_budget_mb):
            log.info(
                "EASE left out of the blend: %d tracks do not fit CRATEDIGGER_EASE_MEMORY_MB=%g",
                matrix.shape[1],
                memory_budget_mb,
            )
            continue
        fitted[name] = PARTNER_FITS[name](matrix, memory_budget_mb)
    return fitted


def blended(
    base: ALSModel, partners: Mapping[str, ItemToItemModel], params: BlendParams
) -> WeekModel:
    """``base`` blended with the fitted ``partners`` at ``params``' weights (partners that
    were not fitted are left out); ``base`` itself when none is left."""
    chosen = {name: (partners[name], weight) for name, weight in params.weights if name in partners}
    return Blend(base, chosen) if chosen else base


@dataclass(frozen=True)
class ModelConfig:
    """How a week's model is trained: the confidence weights, ALS's parameters, the blend
    and EASE's memory budget.

    Attributes
    ----------
    als : ALSParams
    blend : BlendParams
    memory_budget_mb : float
        MiB EASE may take (``CRATEDIGGER_EASE_MEMORY_MB``); above it EASE is left out.
    confidence : ConfidenceParams
        The weights that turn the week's counts into the matrix trained on
        (:meth:`recsys.matrix.PairCounts.matrix`).
    gpu : bool
        Train ALS with implicit's CUDA solver (``CRATEDIGGER_ALS_USE_GPU``,
        :func:`recsys.als.use_gpu`); the device is not part of the configuration's
        identity (:meth:`to_dict`).
    """

    als: ALSParams = field(default_factory=ALSParams)
    blend: BlendParams = field(default_factory=BlendParams)
    memory_budget_mb: float = DEFAULT_EASE_MEMORY_MB
    confidence: ConfidenceParams = field(default_factory=ConfidenceParams)
    gpu: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.als),
            "blend": self.blend.text(),
            "confidence": asdict(self.confidence),
        }

    def train(self, matrix: InteractionMatrix, *, show_progress: bool = False) -> WeekModel:
        """ALS on ``matrix`` and the blend's partners fitted on the same matrix; the
        model's ``train_seconds`` counts both."""
        started = time.perf_counter()
        base = train_als(matrix, self.als, show_progress=show_progress, gpu=self.gpu)
        names = [name for name, _ in self.blend.weights]
        model = blended(base, fit_partners(matrix, names, self.memory_budget_mb), self.blend)
        model.metadata["train_seconds"] = round(time.perf_counter() - started, 3)
        model.metadata["blend"] = model.params.text() if isinstance(model, Blend) else "none"
        return model

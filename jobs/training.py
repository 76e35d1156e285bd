"""Training a week's model: the ALS parameters and blend of the run and where each came
from, ALS with the content cold-start projection blended with its partners
(:mod:`recsys.blend`), the artifact and its ``model_versions`` row, and the per-process
cache of a model that generation chunks share.

ALS parameters and the blend, by precedence: ``CRATEDIGGER_ALS_*`` and
``CRATEDIGGER_BLEND`` variables, then ``DATA_DIR/tuned_params.json`` (written by the weekly
run's own search or ``cratedigger tune``; unless ``CRATEDIGGER_USE_TUNED_PARAMS=false``),
then the defaults.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.week import PlaylistPolicy, Storage, Week, load_track_content
from recsys.als import ALSParams, use_gpu, with_cold_start
from recsys.blend import Blend, BlendParams, ModelConfig, WeekModel, load_model
from recsys.contract import ConfidenceParams
from recsys.db import repository
from recsys.db.models import ModelVersion
from recsys.settings import Settings
from recsys.tuning import TUNED_FIELDS

if TYPE_CHECKING:
    from jobs.aggregate import AggregationPaths

log = logging.getLogger(__name__)


def train_week(
    week: Week,
    resolved: ResolvedParams,
    db: Any,
    models_dir: Path,
    *,
    show_progress: bool = False,
) -> WeekModel:
    """Train ALS and its blend partners on the week, save the artifact under
    ``models_dir`` and record it in ``model_versions`` (``db``: a session factory).

    The version is the week plus a fingerprint of the input and parameters, so training the
    same week on the same data again yields the same version.
    """
    config, data = resolved.config, week.data
    if resolved.tuned_file is not None:
        log.info("training with tuned parameters from %s: %s", resolved.tuned_file, config)
    matrix = data.pairs.matrix(config.confidence)
    model = config.train(matrix, show_progress=show_progress)
    model = attach_cold_start(model, data.track_listeners, week.paths, week.policy)
    model.metadata["params_sources"] = resolved.to_dict()
    version = f"{week.start.isoformat()}-{model.fingerprint[:12]}"
    model.metadata["version"] = version
    model.metadata["week_start"] = week.start.isoformat()
    artifact = model.save(models_dir / version)
    with db.begin() as session:
        existing = session.get(ModelVersion, version)
        repository.save_model_version(
            session,
            ModelVersion(
                version=version,
                week_start=week.start,
                fingerprint=model.fingerprint,
                artifact_path=str(artifact),
                params=config.to_dict(),
                n_users=int(matrix.shape[0]),
                n_tracks=int(matrix.shape[1]),
                n_interactions=int(matrix.user_items.nnz),
                train_seconds=float(model.metadata["train_seconds"]),
                status=existing.status if existing is not None else "trained",
            ),
        )
    return model


def attach_cold_start(
    model: WeekModel, track_listeners: np.ndarray, paths: AggregationPaths, policy: PlaylistPolicy
) -> WeekModel:
    """The model with content-projected factors for its cold tracks (on the ALS base of a
    blend; content from the catalog of the aggregation at ``paths``, no listener; the
    projection is fitted on tracks with at least ``cold_min_plays`` listeners); unchanged
    when cold start is off (``cold_slots = 0``) or no track is cold."""
    if policy.rules.cold_slots == 0:
        return model
    content, has_content = load_track_content(paths, model.track_ids)
    cold = with_cold_start(
        model.base, content, has_content, track_listeners.astype(np.int64), policy.cold_min_plays
    )
    return model.with_base(cold) if isinstance(model, Blend) else cold


@functools.lru_cache(maxsize=2)
def cached_model(artifact_path: str) -> WeekModel:
    return load_model(Path(artifact_path))


# ------------------------------------------------------------------ which ALS parameters

_SETTING_OF = {name: f"als_{name}" for name in (*TUNED_FIELDS, "random_seed")}
_CONFIDENCE_FIELDS = [f.name for f in fields(ConfidenceParams)]


@dataclass(frozen=True)
class ResolvedParams:
    """The model configuration of a run and where each of its parts came from.

    Attributes
    ----------
    config : ModelConfig
        What the week's model is trained with: ALS's parameters, the blend and EASE's
        memory budget (``CRATEDIGGER_EASE_MEMORY_MB``).
    sources : dict
        ALS field name, confidence weight name and ``"blend"`` -> ``"environment"``,
        ``"tuned"`` or ``"default"``.
    tuned_file : str or None
        The tuned parameters' file when it supplied at least one parameter.
    """

    config: ModelConfig
    sources: dict[str, str]
    tuned_file: str | None = None

    @property
    def params(self) -> ALSParams:
        return self.config.als

    @property
    def blend(self) -> BlendParams:
        return self.config.blend

    @property
    def confidence(self) -> ConfidenceParams:
        return self.config.confidence

    def to_dict(self) -> dict[str, Any]:
        return {"sources": self.sources, "tuned_file": self.tuned_file}

    @classmethod
    def of(cls, settings: Settings) -> ResolvedParams:
        """The ALS parameters of the weekly run, by the precedence of this module's docstring.

        Raises
        ------
        ValueError
            If the tuned parameters' file exists, is to be used, and cannot be read.
        """
        explicit = settings.model_fields_set
        values = {name: getattr(settings, setting) for name, setting in _SETTING_OF.items()}
        sources = {
            name: "environment" if setting in explicit else "default"
            for name, setting in _SETTING_OF.items()
        }
        storage = Storage.of(settings)
        blend = BlendParams.parse(settings.blend)
        sources["blend"] = "environment" if "blend" in explicit else "default"
        weights = {name: getattr(settings, name) for name in _CONFIDENCE_FIELDS}
        for name in _CONFIDENCE_FIELDS:
            sources[name] = "environment" if name in explicit else "default"
        used_file: str | None = None
        tuned = storage.tuned(settings.use_tuned_params)
        if tuned is not None:
            tuned_values = {
                **{name: getattr(tuned.params, name) for name in TUNED_FIELDS},
                **(asdict(tuned.confidence) if tuned.confidence is not None else {}),
            }
            for name, value in tuned_values.items():
                if sources[name] == "default":
                    (values if name in TUNED_FIELDS else weights)[name] = value
                    sources[name] = "tuned"
                    used_file = str(storage.tuned_params)
            if sources["blend"] == "default" and tuned.blend is not None:
                blend, sources["blend"] = tuned.blend, "tuned"
                used_file = str(storage.tuned_params)
        config = ModelConfig(
            ALSParams(**values),
            blend,
            settings.ease_memory_mb,
            ConfidenceParams(**weights),
            gpu=use_gpu(settings.als_use_gpu),
        )
        if used_file is not None:
            log.info("model parameters %s (tuned ones from %s)", sources, used_file)
        return cls(config, sources, used_file)

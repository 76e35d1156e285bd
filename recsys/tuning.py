"""Reproducible hyper-parameter search for ALS, and the tuned parameters the weekly run uses.

The search (:func:`random_search`) draws distinct configurations of factors,
regularization, alpha and iterations from a small grid (:data:`SEARCH_SPACE`) with a fixed
seed, scores each with an objective (usually :func:`playlist_ndcg_objective`: NDCG@K of the
artist-capped playlists on a validation split, never on a test fold) and keeps every trial.
``cratedigger tune`` runs it on a week's aggregates and saves the best trial as
``tuned_params.json`` in the data directory (:func:`save_tuned_params`);
``benchmarks/quality.py`` runs the same search on its validation folds.

Which parameters the weekly run trains with (:meth:`jobs.training.ResolvedParams.of`),
per parameter:

1. a ``CRATEDIGGER_ALS_*`` variable that is set (or a keyword override of the settings);
2. else ``DATA_DIR/tuned_params.json``, when it exists and ``CRATEDIGGER_USE_TUNED_PARAMS``
   is true (the default);
3. else the settings' default.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys.als import ALSModel, ALSParams, train_als
from recsys.evaluation import ndcg_at_k
from recsys.matrix import InteractionMatrix
from recsys.pipeline import PlaylistPipeline

log = logging.getLogger(__name__)

#: Values tried per parameter. The grid of the issue (factors 32/64/128, regularization
#: 0.01/0.05/0.1) widened by 16 factors and regularization 1 and 10: on both benchmark
#: validation folds the best models sat at its edge.
SEARCH_SPACE: dict[str, tuple[float, ...]] = {
    "factors": (16, 32, 64, 128),
    "regularization": (0.01, 0.05, 0.1, 1.0, 10.0),
    "alpha": (1.0, 5.0, 10.0, 20.0, 40.0),
    "iterations": (15,),
}
SEARCH_SEED = 20261116
TUNED_PARAMS_FILE = "tuned_params.json"
#: The ALS parameters a search sets; ``random_seed`` stays the settings' own.
TUNED_FIELDS = ("factors", "regularization", "alpha", "iterations")


@dataclass(frozen=True)
class Trial:
    """One scored configuration.

    Attributes
    ----------
    params : ALSParams
        The configuration.
    score : float
        The objective's value (higher is better).
    seconds : float
        Wall-clock seconds of the objective.
    stage : str
        ``"start"`` for the configurations evaluated first, ``"search"`` for random draws.
    """

    params: ALSParams
    score: float
    seconds: float
    stage: str = "search"

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": asdict(self.params),
            "score": self.score,
            "seconds": round(self.seconds, 3),
            "stage": self.stage,
        }


def search_grid(
    space: Mapping[str, Sequence[float]] = SEARCH_SPACE,
    *,
    base: ALSParams | None = None,
    exclude: Iterable[ALSParams] = (),
) -> list[ALSParams]:
    """Every configuration of ``space`` in a fixed order, without those in ``exclude``.

    Parameters
    ----------
    space : mapping
        Values per name of :data:`TUNED_FIELDS` (every one required).
    base : ALSParams, optional
        Supplies the fields outside the space (``random_seed``); default ``ALSParams()``.
    exclude : iterable of ALSParams
        Configurations already tried (compared on :data:`TUNED_FIELDS` only).

    Raises
    ------
    ValueError
        If ``space`` lacks a field of :data:`TUNED_FIELDS`, has another key, or an empty list.
    """
    missing = [name for name in TUNED_FIELDS if not space.get(name)]
    unknown = sorted(set(space) - set(TUNED_FIELDS))
    if missing or unknown:
        raise ValueError(
            f"space needs non-empty values for {', '.join(TUNED_FIELDS)}; "
            f"missing or empty: {missing}, unknown: {unknown}"
        )
    base = base or ALSParams()
    tried = {_key(params) for params in exclude}
    grid = []
    for factors in space["factors"]:
        for regularization in space["regularization"]:
            for alpha in space["alpha"]:
                for iterations in space["iterations"]:
                    params = ALSParams(
                        factors=int(factors),
                        regularization=float(regularization),
                        alpha=float(alpha),
                        iterations=int(iterations),
                        random_seed=base.random_seed,
                    )
                    if _key(params) not in tried:
                        grid.append(params)
    return grid


def _key(params: ALSParams) -> tuple[float, ...]:
    return tuple(float(getattr(params, name)) for name in TUNED_FIELDS)


def random_search(
    objective: Callable[[ALSParams], float],
    *,
    trials: int,
    seed: int = SEARCH_SEED,
    space: Mapping[str, Sequence[float]] = SEARCH_SPACE,
    start: Sequence[ALSParams] = (),
    exclude: Iterable[ALSParams] = (),
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Score ``start``, then ``trials`` distinct random configurations of ``space``.

    The draws are a seeded permutation of :func:`search_grid` (without ``start`` and
    ``exclude``), so equal arguments try the same configurations in the same order.

    Parameters
    ----------
    objective : callable
        ALSParams -> score, higher is better (e.g. :func:`playlist_ndcg_objective`).
    trials : int
        Random configurations to try after ``start`` (>= 0; fewer if the grid runs out).
    seed : int
        Seed of the draws.
    start : sequence of ALSParams
        Configurations scored first (e.g. the current defaults), stage ``"start"``.
    exclude : iterable of ALSParams
        Configurations never drawn (already scored elsewhere).
    on_trial : callable, optional
        Called with each trial as it is scored (progress).

    Returns
    -------
    list of Trial
        In the order they were scored.
    """
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    base = start[0] if start else None
    grid = search_grid(space, base=base, exclude=[*start, *exclude])
    order = np.random.default_rng(seed).permutation(len(grid))[:trials]
    plan = [(params, "start") for params in start] + [(grid[int(i)], "search") for i in order]
    results = []
    for params, stage in plan:
        started = time.perf_counter()
        score = float(objective(params))
        trial = Trial(params, score, time.perf_counter() - started, stage)
        log.info("trial %s: score %.4f (%.1f s)", _label(params), score, trial.seconds)
        results.append(trial)
        if on_trial is not None:
            on_trial(trial)
    return results


def best_trial(trials: Sequence[Trial]) -> Trial:
    """The trial with the highest score; the earliest among equals (``start`` wins ties)."""
    if not trials:
        raise ValueError("no trials to choose from")
    return max(trials, key=lambda trial: trial.score)


def _label(params: ALSParams) -> str:
    return ", ".join(f"{name} {getattr(params, name)}" for name in TUNED_FIELDS)


def playlist_ndcg_objective(
    train: InteractionMatrix,
    known: sp.csr_matrix,
    test_rows: sp.csr_matrix,
    eval_users: npt.NDArray[np.int64],
    pipeline_of: Callable[[ALSModel], PlaylistPipeline],
) -> Callable[[ALSParams], float]:
    """An objective: train ALS on ``train`` and score NDCG@length of the playlists that
    ``pipeline_of(model)`` builds for ``eval_users`` against ``test_rows``.

    Parameters
    ----------
    train : InteractionMatrix
        Confidence matrix of the validation split's training part.
    known : scipy.sparse.csr_matrix
        (n_users, n_tracks): what each listener already had in training; never recommended.
    test_rows : scipy.sparse.csr_matrix
        (len(eval_users), n_tracks), binary: each evaluated listener's held-out tracks.
    eval_users : numpy.ndarray
        int64 rows of the evaluated listeners.
    pipeline_of : callable
        The playlist pipeline over a trained model.
    """
    if test_rows.shape != (len(eval_users), train.shape[1]):
        raise ValueError(
            f"test_rows has shape {test_rows.shape}, expected ({len(eval_users)}, {train.shape[1]})"
        )

    def objective(params: ALSParams) -> float:
        columns = pipeline_of(train_als(train, params)).columns(eval_users, known)
        return ndcg_at_k(columns, test_rows)

    return objective


# ------------------------------------------------------------------------ tuned parameters


@dataclass(frozen=True)
class TunedParams:
    """The result of a search, as saved in ``tuned_params.json``.

    Attributes
    ----------
    params : ALSParams
        The best configuration.
    score : float
        Its validation score.
    default_score : float
        The validation score of the configuration the search started from (the settings'
        parameters at the time), NaN if it was not scored.
    metric : str
        What the score is, e.g. "ndcg@50 of the artist-capped playlists on the validation
        split".
    details : dict
        Where and how the search ran (week, split, seed, space, trials).
    """

    params: ALSParams
    score: float
    default_score: float
    metric: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        payload = {
            "params": asdict(self.params),
            "score": self.score,
            "default_score": self.default_score,
            "metric": self.metric,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **self.details,
        }
        return json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"


def save_tuned_params(path: Path, tuned: TunedParams) -> Path:
    """Write ``tuned`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(tuned.to_json())
    tmp.replace(path)
    return path


def load_tuned_params(path: Path) -> TunedParams:
    """Read a file written by :func:`save_tuned_params`.

    Raises
    ------
    ValueError
        If the file is not JSON or its ``params`` are not valid ALS parameters; the message
        names the file.
    """
    try:
        payload = json.loads(path.read_text())
        raw = payload.pop("params")
        known = {f.name for f in fields(ALSParams)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}")
        params = ALSParams(**raw)
        score = float(payload.pop("score"))
        default_score = float(payload.pop("default_score", float("nan")))
        metric = str(payload.pop("metric", ""))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} does not hold tuned ALS parameters: {exc}") from None
    return TunedParams(params, score, default_score, metric, payload)

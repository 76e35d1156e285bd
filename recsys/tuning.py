"""Hyper-parameter search for ALS, the confidence weights and the blend, and the tuned
parameters the weekly run uses.

The search (:func:`search`) is Optuna's seeded TPE sampler with median pruning over
:data:`SEARCH_SPACE`: ALS's factors, regularization, alpha and iterations, and the
confidence's shape (log or linear), skip and thumb weights and recency half-life (each
trial rebuilds the matrix from the week's counts, :class:`recsys.matrix.PairCounts`),
within a number of trials and a time budget; :func:`blend_search` then picks the
partners of the best. It first scores the configurations it is given to start from
(the current ones), so its best is never worse than what runs today on the same data. An
objective (usually :func:`playlist_ndcg_objective`: NDCG@K of the playlists on a
validation split, never on a test fold) may report an intermediate score half-way through
training, and a trial below the median of earlier trials there is pruned. Every trial is
kept. The weekly run searches on its own every few weeks (``jobs.quality.self_tune``);
``cratedigger tune`` runs the same search on demand; the best configuration is saved as
``tuned_params.json`` in the data directory (:func:`save_tuned_params`).

Which parameters the weekly run trains with (:meth:`jobs.training.ResolvedParams.of`),
per parameter:

1. a ``CRATEDIGGER_ALS_*``, confidence (``CRATEDIGGER_SKIP_WEIGHT``...) or
   ``CRATEDIGGER_BLEND`` variable that is set (or a keyword override of the settings);
2. else ``DATA_DIR/tuned_params.json``, when it exists and ``CRATEDIGGER_USE_TUNED_PARAMS``
   is true (the default);
3. else the settings' default.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recsys.als import ALSModel, ALSParams, train_als
from recsys.blend import BlendParams, WeekModel, blended
from recsys.contract import ConfidenceParams
from recsys.evaluation import ndcg_at_k
from recsys.matrix import PairCounts
from recsys.neighbors import ItemToItemModel
from recsys.pipeline import PlaylistPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Range:
    """The values a parameter may take: ``low`` to ``high``, on a log scale if ``log``."""

    low: float
    high: float
    log: bool = True
    integer: bool = False


@dataclass(frozen=True)
class Choice:
    """A parameter that takes one of ``values``."""

    values: tuple[Any, ...]


#: What the search varies of ALS. Factors reach 256 (well-tuned iALS wants large
#: dimensions, Rendle et al. 2021); regularization and alpha span four and two decades.
ALS_SPACE: dict[str, Range | Choice] = {
    "factors": Range(16, 256, integer=True),
    "regularization": Range(1e-3, 30.0),
    "alpha": Range(0.5, 50.0),
    "iterations": Range(8, 30, log=False, integer=True),
}
#: What it varies of the confidence (:class:`recsys.contract.ConfidenceParams`): the shape,
#: the weight of skips and thumbs, and a recency half-life (ListenBrainz trains on the last
#: 180 days; 0 is no decay). The weights stay above 0, so every listened pair keeps a
#: confidence and the matrix keeps its rows and columns whatever the trial.
CONFIDENCE_SPACE: dict[str, Range | Choice] = {
    "confidence_scale": Choice(("log", "linear")),
    "skip_weight": Range(0.05, 1.0, log=False),
    "thumb_up_boost": Range(0.1, 10.0),
    "thumb_down_confidence": Range(0.1, 10.0),
    "half_life_days": Choice((0.0, 30.0, 90.0, 180.0, 365.0)),
}
SEARCH_SPACE: dict[str, Range | Choice] = {**ALS_SPACE, **CONFIDENCE_SPACE}
SEARCH_SEED = 20261116
TUNED_PARAMS_FILE = "tuned_params.json"
#: The ALS parameters a search sets; ``random_seed`` stays the settings' own.
TUNED_FIELDS = tuple(ALS_SPACE)
#: The confidence weights a search sets.
CONFIDENCE_FIELDS = tuple(CONFIDENCE_SPACE)


@dataclass(frozen=True)
class Candidate:
    """One point of the search: ALS's parameters and the confidence weights."""

    als: ALSParams = field(default_factory=ALSParams)
    confidence: ConfidenceParams = field(default_factory=ConfidenceParams)

    def value(self, name: str) -> Any:
        return getattr(self.als if name in TUNED_FIELDS else self.confidence, name)

    def with_values(self, values: Mapping[str, Any]) -> Candidate:
        """A copy with the named parameters of :data:`SEARCH_SPACE` replaced."""
        als = {n: v for n, v in values.items() if n in TUNED_FIELDS}
        weights = {n: v for n, v in values.items() if n in CONFIDENCE_FIELDS}
        return Candidate(replace(self.als, **als), replace(self.confidence, **weights))


#: ``report(step, value)``: an objective's intermediate score; raises when the trial is
#: pruned.
Report = Callable[[int, float], None]


class Pruned(Exception):
    """Raised by a :data:`Report` when the search stops the trial."""


@dataclass(frozen=True)
class Trial:
    """One configuration the search tried.

    Attributes
    ----------
    params : ALSParams
        The configuration's ALS parameters.
    score : float
        The objective's value (higher is better); for a pruned trial its last intermediate
        score, NaN if it failed.
    seconds : float
        Wall-clock seconds of the objective.
    stage : str
        ``"start"`` for the configurations scored first, ``"search"`` for the sampler's,
        ``"blend"`` for the blends of the best ALS (:func:`blend_search`).
    state : str
        ``"complete"``, ``"pruned"`` or ``"failed"``.
    blend : BlendParams
        The partners blended with ALS in the trial (none for the ALS search's trials).
    confidence : ConfidenceParams
        The confidence weights of the trial's matrix.
    rerank : RerankKnobs or None
        The re-ranking knobs of a ``"rerank"`` trial (:func:`rerank_search`), whose score
        is NDCG of the fully re-ranked playlists; None for the other stages, which score
        the model's artist-capped playlists.
    """

    params: ALSParams
    score: float
    seconds: float
    stage: str = "search"
    state: str = "complete"
    blend: BlendParams = field(default_factory=BlendParams)
    confidence: ConfidenceParams = field(default_factory=ConfidenceParams)
    rerank: RerankKnobs | None = None

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.params, self.confidence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": {
                **asdict(self.params),
                "blend": self.blend.text(),
                "confidence": asdict(self.confidence),
                **({} if self.rerank is None else {"rerank": asdict(self.rerank)}),
            },
            "score": self.score,
            "seconds": round(self.seconds, 3),
            "stage": self.stage,
            "state": self.state,
        }


def search(
    objective: Callable[[Candidate, Report], float],
    *,
    trials: int,
    budget_s: float | None = None,
    seed: int = SEARCH_SEED,
    space: Mapping[str, Range | Choice] = SEARCH_SPACE,
    start: Sequence[Candidate] = (),
    fixed: Sequence[str] = (),
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Score ``start``, then up to ``trials`` configurations drawn by Optuna's seeded TPE
    sampler, stopping early when ``budget_s`` seconds have passed (checked between trials).

    Parameters
    ----------
    objective : callable
        ``(candidate, report) -> score``, higher is better; it may call ``report(step, value)``
        with an intermediate score, which raises :class:`Pruned` when the trial falls below
        the median of the earlier trials at that step.
    trials : int
        Configurations to draw after ``start`` (>= 0).
    space : mapping
        Parameter name (of :data:`SEARCH_SPACE`) -> its values; the others stay the first
        start's.
    start : sequence of Candidate
        Configurations scored first (e.g. the current ones), stage ``"start"``, once each;
        the first also supplies ``random_seed`` and the values of ``fixed`` to all.
    fixed : sequence of str
        Names of :data:`SEARCH_SPACE` the search must not vary (e.g. set in the environment).
    on_trial : callable, optional
        Called with each trial as it ends (progress, storage).

    Returns
    -------
    list of Trial
        In the order they were tried. Equal arguments and scores give the same trials.
    """
    import optuna

    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    names = (*TUNED_FIELDS, *CONFIDENCE_FIELDS)
    unknown = sorted(set(space) - set(names)) + sorted(set(fixed) - set(names))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; the search sets {names}")
    base = start[0] if start else Candidate()
    varied = {name: bounds for name, bounds in space.items() if name not in fixed}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, max(trials, 1))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    distributions = {name: _distribution(bounds) for name, bounds in varied.items()}
    results: list[Trial] = []
    deadline = None if budget_s is None else time.monotonic() + budget_s

    def scored(candidate: Candidate, stage: str, report: Report) -> Trial:
        started, state, score, last = time.perf_counter(), "complete", math.nan, [math.nan]

        def reporting(step: int, value: float) -> None:
            last[0] = value
            report(step, value)

        try:
            score = float(objective(candidate, reporting))
        except Pruned:
            state, score = "pruned", last[0]
        finally:
            if state == "complete" and math.isnan(score):
                state = "failed"
            seconds = time.perf_counter() - started
            done = Trial(
                candidate.als, score, seconds, stage, state, confidence=candidate.confidence
            )
            log.debug("trial %s: %s %.4f (%.1f s)", _label(candidate), state, score, seconds)
            results.append(done)
            if on_trial is not None:
                on_trial(done)
        return done

    pinned = {n: base.value(n) for n in fixed}
    firsts = list(dict.fromkeys(c.with_values(pinned) for c in start))
    for candidate in firsts:  # scored as they are, even outside the space
        try:
            done = scored(candidate, "start", lambda step, value: None)
        except (ValueError, FloatingPointError):  # recorded as failed
            continue
        values = {name: candidate.value(name) for name in varied}
        inside = all(_inside(varied[name], value) for name, value in values.items())
        if done.state == "complete" and inside:  # what TPE learns from
            trial = optuna.trial.create_trial(
                params=values, distributions=distributions, value=done.score
            )
            study.add_trial(trial)

    def run(trial: optuna.Trial) -> float:
        values: dict[str, Any] = {n: _suggest(trial, n, bounds) for n, bounds in varied.items()}

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise Pruned

        done = scored(base.with_values(values), "search", report)
        if done.state == "pruned":
            raise optuna.TrialPruned
        if deadline is not None and time.monotonic() > deadline:
            study.stop()
        return done.score

    if trials and (deadline is None or time.monotonic() < deadline):
        study.optimize(run, n_trials=trials, catch=(ValueError, FloatingPointError))
    return results


def _inside(bounds: Range | Choice, value: Any) -> bool:
    if isinstance(bounds, Choice):
        return value in bounds.values
    return bool(bounds.low <= value <= bounds.high)


def _distribution(bounds: Range | Choice) -> Any:
    import optuna

    if isinstance(bounds, Choice):
        return optuna.distributions.CategoricalDistribution(bounds.values)
    if bounds.integer:
        return optuna.distributions.IntDistribution(
            int(bounds.low), int(bounds.high), log=bounds.log
        )
    return optuna.distributions.FloatDistribution(bounds.low, bounds.high, log=bounds.log)


def _suggest(trial: Any, name: str, bounds: Range | Choice) -> Any:
    if isinstance(bounds, Choice):
        return trial.suggest_categorical(name, bounds.values)
    if bounds.integer:
        return int(trial.suggest_int(name, int(bounds.low), int(bounds.high), log=bounds.log))
    return float(trial.suggest_float(name, bounds.low, bounds.high, log=bounds.log))


def best_trial(trials: Sequence[Trial]) -> Trial:
    """The complete model trial (not a ``"rerank"`` one: another objective) with the
    highest score; the earliest among equals (``start`` wins ties)."""
    complete = [t for t in trials if t.state == "complete" and t.stage != "rerank"]
    if not complete:
        raise ValueError("no complete trial to choose from")
    return max(complete, key=lambda trial: trial.score)


def _label(candidate: Candidate) -> str:
    return ", ".join(f"{name} {candidate.value(name)}" for name in SEARCH_SPACE)


def playlist_ndcg(
    known: sp.csr_matrix,
    test_rows: sp.csr_matrix,
    eval_users: npt.NDArray[np.int64],
    pipeline_of: Callable[[WeekModel], PlaylistPipeline],
) -> Callable[[WeekModel], float]:
    """``score(model)``: NDCG@length of the playlists ``pipeline_of(model)`` builds for
    ``eval_users`` (never a track of ``known``) against ``test_rows``."""

    def score(model: WeekModel) -> float:
        return ndcg_at_k(pipeline_of(model).columns(eval_users, known), test_rows)

    return score


#: The weights :func:`blend_search` tries for each partner (ALS weighs 1).
BLEND_WEIGHTS = (0.25, 0.5, 1.0, 2.0)


def blend_search(
    base: ALSModel,
    partners: Mapping[str, ItemToItemModel],
    score: Callable[[WeekModel], float],
    *,
    start: Sequence[BlendParams] = (),
    deadline: float | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    confidence: ConfidenceParams | None = None,
) -> list[Trial]:
    """Which partners to blend with ``base`` and how much: greedy forward selection.

    It scores the ``start`` blends and ALS alone, then adds to the best blend so far each
    partner it lacks at each of :data:`BLEND_WEIGHTS`, keeps the best addition if it
    scores higher, and repeats until no addition helps, every partner is in, or
    ``deadline`` (``time.monotonic()``) passes. Partners not in ``partners`` (not fitted)
    are dropped from the start blends.

    Returns
    -------
    list of Trial
        Stage ``"blend"``, ``params`` the base's (and ``confidence`` the one it was trained
        with), in the order tried; no blend twice.
    """
    weights = confidence or ConfidenceParams()
    results: list[Trial] = []

    def tried(blend: BlendParams) -> None:
        if any(trial.blend == blend for trial in results):
            return
        started, state = time.perf_counter(), "complete"
        try:
            value = float(score(blended(base, partners, blend)))
        except (ValueError, FloatingPointError):
            value, state = math.nan, "failed"
        if state == "complete" and math.isnan(value):
            state = "failed"
        seconds = time.perf_counter() - started
        done = Trial(base.params, value, seconds, "blend", state, blend, weights)
        log.debug("blend %s: %s %.4f (%.1f s)", blend.text(), state, value, done.seconds)
        results.append(done)
        if on_trial is not None:
            on_trial(done)

    def late() -> bool:
        return deadline is not None and time.monotonic() > deadline

    for blend in (*start, BlendParams()):
        tried(BlendParams(tuple((n, w) for n, w in blend.weights if n in partners)))
    if not any(trial.state == "complete" for trial in results):
        return results
    best = best_trial(results)
    while not late():
        chosen = best
        for name in (n for n in partners if n not in dict(chosen.blend.weights)):
            for weight in BLEND_WEIGHTS:
                if late():
                    return results
                tried(BlendParams((*chosen.blend.weights, (name, weight))))
        best = best_trial(results)
        if best is chosen:
            break
    return results


@dataclass(frozen=True)
class RerankKnobs:
    """The re-ranking's knobs the weekly search may set (``CRATEDIGGER_MMR_DIVERSITY`` and
    ``CRATEDIGGER_POPULARITY_PENALTY``)."""

    diversity: float
    popularity_penalty: float


#: What the re-ranking stage combines (MMR lambda x popularity penalty).
RERANK_DIVERSITY = (0.1, 0.2, 0.3, 0.4)
RERANK_PENALTY = (0.0, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class ListQuality:
    """What :func:`rerank_search` reads of one set of playlists."""

    ndcg: float
    intra_list_diversity: float
    novelty: float

    def within(self, bound: ListQuality) -> bool:
        """At least as diverse and as novel as ``bound`` (up to rounding)."""
        return bool(
            self.intra_list_diversity >= bound.intra_list_diversity - 1e-9
            and self.novelty >= bound.novelty - 1e-9
        )


def rerank_search(
    measure: Callable[[RerankKnobs], ListQuality],
    start: RerankKnobs,
    model: Trial,
    *,
    deadline: float | None = None,
    on_trial: Callable[[Trial], None] | None = None,
) -> tuple[list[Trial], RerankKnobs]:
    """The re-ranking knobs of the best model: the most accurate within the diversity bound.

    ``start`` (the configured knobs) is measured first; its lists' intra-list diversity
    and novelty are the bound. Every combination of :data:`RERANK_DIVERSITY` and
    :data:`RERANK_PENALTY` is then measured until ``deadline`` (``time.monotonic()``);
    one whose lists are at least as diverse and as novel as the bound's is a candidate
    (state ``"complete"``), any other is kept as ``"outside"``. The candidate with the
    highest NDCG wins (``start`` on ties): the search may trade one knob for the other, it
    never buys accuracy with diversity.

    Parameters
    ----------
    measure : callable
        knobs -> :class:`ListQuality` of the fully re-ranked playlists of the validation
        listeners.
    model : Trial
        The model trial the knobs are searched for (its parameters are recorded on each
        trial).

    Returns
    -------
    (trials, chosen)
        Stage ``"rerank"`` trials in the order measured, and the knobs chosen.
    """
    results: list[Trial] = []
    measured: dict[RerankKnobs, ListQuality] = {}

    def tried(knobs: RerankKnobs) -> None:
        started = time.perf_counter()
        try:
            quality = measure(knobs)
        except (ValueError, FloatingPointError):
            quality = ListQuality(math.nan, math.nan, math.nan)
        seconds = time.perf_counter() - started
        bound = measured.get(start, quality)
        state = (
            "failed"
            if math.isnan(quality.ndcg)
            else "complete"
            if quality.within(bound)
            else "outside"
        )
        measured[knobs] = quality
        done = replace(
            model, score=quality.ndcg, seconds=seconds, stage="rerank", state=state, rerank=knobs
        )
        results.append(done)
        if on_trial is not None:
            on_trial(done)

    tried(start)
    if math.isnan(measured[start].ndcg):
        return results, start
    for diversity in RERANK_DIVERSITY:
        for penalty in RERANK_PENALTY:
            knobs = RerankKnobs(diversity, penalty)
            if knobs in measured:
                continue
            if deadline is not None and time.monotonic() > deadline:
                break
            tried(knobs)
    return results, chosen_rerank(results) or start


def chosen_rerank(trials: Sequence[Trial]) -> RerankKnobs | None:
    """The knobs of the ``"rerank"`` trial within the bound with the highest NDCG (the
    earliest among equals: the configured knobs win ties); None without such a trial."""
    within = [t for t in trials if t.stage == "rerank" and t.state == "complete"]
    chosen = max(within, key=lambda t: t.score, default=None)
    return None if chosen is None else chosen.rerank


def playlist_ndcg_objective(
    train: PairCounts,
    known: sp.csr_matrix,
    test_rows: sp.csr_matrix,
    eval_users: npt.NDArray[np.int64],
    pipeline_of: Callable[[WeekModel], PlaylistPipeline],
    *,
    gpu: bool = False,
) -> Callable[[Candidate, Report], float]:
    """An objective: train ALS on the matrix of ``train`` under the candidate's confidence
    weights and score NDCG@length of the playlists that ``pipeline_of(model)`` builds for
    ``eval_users`` against ``test_rows``; half-way through training it reports the score of
    the model so far (pruning).

    Parameters
    ----------
    train : PairCounts
        The counts of the validation split's training pairs.
    known : scipy.sparse.csr_matrix
        (n_users, n_tracks): what each listener already had in training; never recommended.
    test_rows : scipy.sparse.csr_matrix
        (len(eval_users), n_tracks), binary: each evaluated listener's held-out tracks.
    eval_users : numpy.ndarray
        int64 rows of the evaluated listeners.
    pipeline_of : callable
        The playlist pipeline over a trained model.
    gpu : bool
        Train with implicit's CUDA solver (:func:`recsys.als.train_als`).
    """
    n_tracks = len(train.track_ids)
    if test_rows.shape != (len(eval_users), n_tracks):
        raise ValueError(
            f"test_rows has shape {test_rows.shape}, expected ({len(eval_users)}, {n_tracks})"
        )

    score = playlist_ndcg(known, test_rows, eval_users, pipeline_of)

    def objective(candidate: Candidate, report: Report) -> float:
        params = candidate.als
        half = params.iterations // 2
        look = (half, lambda model: report(half, score(model))) if half >= 1 else None
        matrix = train.matrix(candidate.confidence)
        return score(train_als(matrix, params, checkpoint=look, gpu=gpu))

    return objective


# ------------------------------------------------------------------------ tuned parameters


@dataclass(frozen=True)
class TunedParams:
    """The result of a search, as saved in ``tuned_params.json``.

    Attributes
    ----------
    params : ALSParams
        The best configuration's ALS parameters.
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
    blend : BlendParams or None
        The best configuration's blend; None in files written before blends were searched.
    confidence : ConfidenceParams or None
        Its confidence weights; None in files written before they were searched.
    rerank : RerankKnobs or None
        The re-ranking knobs chosen for it; None when they were not searched.
    """

    params: ALSParams
    score: float
    default_score: float
    metric: str
    details: dict[str, Any] = field(default_factory=dict)
    blend: BlendParams | None = None
    confidence: ConfidenceParams | None = None
    rerank: RerankKnobs | None = None

    def to_json(self) -> str:
        payload = {
            "params": asdict(self.params),
            **({} if self.blend is None else {"blend": self.blend.text()}),
            **({} if self.confidence is None else {"confidence": asdict(self.confidence)}),
            **({} if self.rerank is None else {"rerank": asdict(self.rerank)}),
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
        blend = BlendParams.parse(str(payload.pop("blend"))) if "blend" in payload else None
        weights = payload.pop("confidence", None)
        confidence = None if weights is None else _confidence_of(weights)
        knobs = payload.pop("rerank", None)
        rerank = None if knobs is None else _rerank_of(knobs)
        score = float(payload.pop("score"))
        default_score = float(payload.pop("default_score", float("nan")))
        metric = str(payload.pop("metric", ""))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} does not hold tuned ALS parameters: {exc}") from None
    return TunedParams(params, score, default_score, metric, payload, blend, confidence, rerank)


def _rerank_of(raw: Any) -> RerankKnobs:
    if not isinstance(raw, dict) or set(raw) != {"diversity", "popularity_penalty"}:
        raise ValueError(f"rerank must hold diversity and popularity_penalty, got {raw!r}")
    diversity, penalty = float(raw["diversity"]), float(raw["popularity_penalty"])
    if not (0.0 <= diversity <= 1.0 and 0.0 <= penalty <= 10.0):
        raise ValueError(
            f"rerank diversity must be in [0, 1] and popularity_penalty in [0, 10], got {raw!r}"
        )
    return RerankKnobs(diversity, penalty)


def _confidence_of(raw: Any) -> ConfidenceParams:
    if not isinstance(raw, dict):
        raise TypeError(f"confidence must be an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {f.name for f in fields(ConfidenceParams)})
    if unknown:
        raise ValueError(f"unknown confidence weight(s) {unknown}")
    return ConfidenceParams(**raw)

"""Offline quality of the shipped configuration on a week's aggregates: the validation
gate's holdout metrics, evaluation and tuning.

``cratedigger evaluate`` and ``cratedigger tune`` (``cli/quality.py``) call
:func:`evaluate_week` and :func:`tune_week`; the weekly run's gate step calls
:func:`holdout_metrics`, which uses the same time split.

Splits of the week's aggregates (one row per listener and track, :func:`week_split`):

* ``time``: the pairs a listener first met before ``week start - holdout_days`` train; the
  tracks each listener first played positively (confidence > 0) after that are the test
  items, as in the product, where a playlist only holds unheard tracks. The training pairs
  keep the confidence aggregated at the week's cut-off (counts are not split by time).
* ``leave-k-out``: ``k`` random positive tracks of every listener with more than ``k`` are
  held out (:func:`recsys.evaluation.leave_k_out`), for data without useful timestamps.

A *validation* split (what ``tune`` searches on) never looks at the test part of the
evaluation split of the same arguments: the time split drops the pairs first met in the last
``holdout_days`` and cuts ``holdout_days`` earlier; leave-k-out holds out ``k`` more tracks
of the evaluation split's training part with ``seed + 1``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from jobs.training import ResolvedParams, attach_cold_start
from jobs.week import COUNT_COLUMNS, PlaylistPolicy, Storage, pair_counts
from recsys.als import ALSParams, train_als
from recsys.blend import PARTNER_FITS, ModelConfig, WeekModel, blended, fit_partners
from recsys.contract import ConfidenceParams, week_cutoff
from recsys.evaluation import (
    evaluate,
    intra_list_diversity,
    leave_k_out,
    ndcg_at_k,
    novelty,
    recall_at_k,
    time_split,
)
from recsys.matrix import InteractionMatrix, PairCounts
from recsys.neighbors import ItemToItemModel
from recsys.pipeline import PlaylistPipeline
from recsys.playlist import PlaylistRules
from recsys.recommender import PopularityModel
from recsys.settings import Settings
from recsys.tuning import (
    SEARCH_SEED,
    SEARCH_SPACE,
    Candidate,
    ListQuality,
    RerankKnobs,
    Trial,
    TunedParams,
    best_trial,
    blend_search,
    chosen_rerank,
    playlist_ndcg,
    playlist_ndcg_objective,
    rerank_search,
    save_tuned_params,
    search,
)

if TYPE_CHECKING:
    from jobs.aggregate import AggregationPaths

log = logging.getLogger(__name__)

SPLITS = ("time", "leave-k-out")


@dataclass(frozen=True)
class WeekSplit:
    """A week's aggregates split for offline evaluation.

    Attributes
    ----------
    user_ids, track_ids : numpy.ndarray
        str: sorted listeners of the aggregates and sorted catalog tracks (rows, columns).
    train : scipy.sparse.csr_matrix
        float32 (n_users, n_tracks): confidence of the training pairs (thumbs-down negative).
    test : scipy.sparse.csr_matrix
        float32 (n_users, n_tracks), binary: the held-out discoveries.
    eval_users : numpy.ndarray
        int64: rows with both a training pair and a test item.
    track_artist : numpy.ndarray
        int64 (n_tracks,): dense artist number.
    listeners : numpy.ndarray
        int64 (n_tracks,): training listeners with a positive confidence per track.
    pairs : PairCounts
        The counts of the training pairs: their matrix under other confidence weights
        (:meth:`matrix`).
    description : str
        The split in words, for reports.
    source : AggregationPaths or None
        The aggregation the split was read from (its catalog gives the cold-start content).
    """

    user_ids: np.ndarray
    track_ids: np.ndarray
    train: sp.csr_matrix
    test: sp.csr_matrix
    eval_users: np.ndarray
    track_artist: np.ndarray
    listeners: np.ndarray
    pairs: PairCounts
    description: str
    source: AggregationPaths | None = None

    @property
    def test_rows(self) -> sp.csr_matrix:
        """Test items of the evaluated listeners, rows aligned with ``eval_users``."""
        rows: sp.csr_matrix = self.test[self.eval_users]
        return rows

    @property
    def cold_items(self) -> np.ndarray:
        """int64: test items of evaluated listeners that nobody had in training."""
        tested = np.unique(self.test_rows.indices)
        cold: np.ndarray = tested[self.listeners[tested] == 0].astype(np.int64)
        return cold

    def matrix(self, confidence: ConfidenceParams) -> InteractionMatrix:
        """The training pairs' matrix under ``confidence`` (same rows and columns)."""
        return self.pairs.matrix(confidence)


def week_split(
    paths: AggregationPaths,
    week_start: dt.date,
    *,
    method: str = "time",
    holdout_days: int = 7,
    k_out: int = 10,
    seed: int = 0,
    validation: bool = False,
) -> WeekSplit:
    """Split the week's aggregation at ``paths`` as described in the module.

    Raises
    ------
    ValueError
        If ``method`` is unknown, ``holdout_days`` or ``k_out`` is below 1, or the week has
        no aggregates (the message says how to make them).
    """
    if method not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {method!r}")
    if holdout_days < 1 or k_out < 1:
        raise ValueError(f"holdout_days and k_out must be >= 1, got {holdout_days}, {k_out}")
    if not paths.interactions.exists():
        raise ValueError(
            f"no aggregates for the week of {week_start} in {paths.root}; pass --data DIR, or "
            "run `cratedigger aggregate --data DIR --week W` first"
        )
    table = pq.read_table(
        paths.interactions,
        columns=["user_id", "track_id", "confidence", "first_event_at", *COUNT_COLUMNS],
    )
    tracks = pq.read_table(paths.tracks, columns=["track_id", "artist_id"])
    users = table.column("user_id").to_numpy(zero_copy_only=False).astype(str)
    items = table.column("track_id").to_numpy(zero_copy_only=False).astype(str)
    confidence = table.column("confidence").to_numpy().astype(np.float32)
    unsorted = tracks.column("track_id").to_numpy(zero_copy_only=False).astype(str)
    order = np.argsort(unsorted)
    catalog = unsorted[order]
    artists = tracks.column("artist_id").to_numpy(zero_copy_only=False).astype(str)
    _, track_artist = np.unique(artists[order], return_inverse=True)
    user_ids, rows = np.unique(users, return_inverse=True)
    cols = np.searchsorted(catalog, items)
    shape = (len(user_ids), len(catalog))
    kept = np.arange(len(users), dtype=np.int64)  # the table row of each pair still in play
    if method == "time":
        cutoff = week_cutoff(week_start) - dt.timedelta(days=holdout_days)
        first = pc.cast(table.column("first_event_at"), "int64").to_numpy()  # microseconds
        if validation:
            before = first < int(cutoff.timestamp() * 1e6)
            rows, cols, confidence, first, kept = (
                rows[before],
                cols[before],
                confidence[before],
                first[before],
                kept[before],
            )
            cutoff -= dt.timedelta(days=holdout_days)
        split = time_split(rows, cols, confidence, first, int(cutoff.timestamp() * 1e6), shape)
        # Discoveries are positive pairs: a thumbs-down met in the holdout is not one.
        liked = confidence > 0
        positive = sp.csr_matrix(
            (np.ones(int(liked.sum()), dtype=np.float32), (rows[liked], cols[liked])),
            shape=shape,
        )
        test = split.test.multiply(positive).tocsr()
        description = f"time split at {cutoff.isoformat()} ({holdout_days} days held out" + (
            ", the last ones dropped)" if validation else ")"
        )
    else:
        matrix = sp.csr_matrix((confidence, (rows, cols)), shape=shape, dtype=np.float32)
        split = leave_k_out(matrix, k_out, seed)
        if validation:
            split = leave_k_out(split.train, k_out, seed + 1)
        test = split.test
        description = f"leave-{k_out}-out, seed {seed + 1 if validation else seed}"
    train = split.train.tocsr()
    train.eliminate_zeros()
    test.eliminate_zeros()
    train.sort_indices()
    has_train = np.diff(train.indptr) > 0
    has_test = np.diff(test.indptr) > 0
    listeners = np.asarray((train > 0).sum(axis=0), dtype=np.int64).ravel()
    # Each training entry's row of the table (one row per pair): its counts.
    train_rows = np.repeat(np.arange(shape[0], dtype=np.int64), np.diff(train.indptr))
    train_cols = train.indices.astype(np.int64)
    keys = rows.astype(np.int64) * shape[1] + cols
    order = np.argsort(keys)
    found = kept[order[np.searchsorted(keys[order], train_rows * shape[1] + train_cols)]]
    pairs = pair_counts(
        table.take(pa.array(found)),
        week_cutoff(week_start),
        user_ids,
        catalog,
        train_rows,
        train_cols,
    )
    return WeekSplit(
        user_ids=user_ids,
        track_ids=catalog,
        train=train,
        test=test,
        eval_users=np.flatnonzero(has_train & has_test).astype(np.int64),
        track_artist=track_artist.astype(np.int64),
        listeners=listeners,
        pairs=pairs,
        description=description,
        source=paths,
    )


def _require_listeners(split: WeekSplit) -> None:
    if len(split.eval_users) == 0:
        raise ValueError(
            "no listener has both training pairs and held-out discoveries in the "
            f"{split.description}; hold out more days or use --split leave-k-out"
        )


def popular_lists(split: WeekSplit, rules: PlaylistRules, block: int = 2048) -> np.ndarray:
    """int64 (len(eval_users), length): the most popular unheard tracks, artist-capped (the
    baseline: :class:`recsys.recommender.PopularityModel` through the pipeline with only
    the length and the cap)."""
    model = PopularityModel(split.listeners, split.user_ids, split.track_ids)
    pipeline = PlaylistPipeline(
        rules.baseline(), model, split.track_artist, split.listeners, block_size=block
    )
    return pipeline.columns(split.eval_users, split.train)


def split_playlists(policy: PlaylistPolicy, model: WeekModel, split: WeekSplit) -> np.ndarray:
    """int64 (len(eval_users), length): the evaluated listeners' playlists from ``model``,
    built by the pipeline the weekly run publishes with (:meth:`PlaylistPolicy.pipeline`)."""
    pipeline = policy.pipeline(model, split.track_artist, split.listeners)
    # A thumbs-down is the only negative confidence (jobs/aggregate.py).
    return pipeline.columns(split.eval_users, split.train, thumbs_down=split.train < 0)


def shipped_lists(
    policy: PlaylistPolicy, split: WeekSplit, config: ModelConfig
) -> tuple[WeekModel, np.ndarray]:
    """Train ``config`` (ALS and its blend) on the split, with cold-start factors from the
    content of the split's aggregation, and build the evaluated listeners' playlists the
    way the weekly run does."""
    model = config.train(split.matrix(config.confidence))
    if split.source is not None:
        model = attach_cold_start(model, split.listeners, split.source, policy)
    return model, split_playlists(policy, model, split)


def holdout_metrics(
    paths: AggregationPaths,
    week_start: dt.date,
    policy: PlaylistPolicy,
    config: ModelConfig,
    holdout_days: int,
) -> dict[str, Any]:
    """NDCG@K and recall@K of the week's model kind and of popularity on the last
    ``holdout_days`` of the week's aggregation at ``paths``: what the validation gate decides on.

    The week's model is judged the way the product is used: a model of the same kind
    (``config``: ALS and its blend) is trained on the pairs a listener first met before
    ``week start - holdout_days`` and must rank the tracks each listener discovered (first played
    positively) in those last days, in the playlists of the ``policy``'s pipeline (cold-start
    slots from the same content, the same re-ranking and artist cap). The same split scores
    the most-popular baseline. The held-out pairs' confidence is as aggregated at the week's
    cut-off (counts are not split by time); only pairs first met before the holdout cut-off
    enter the model.
    """
    split = week_split(paths, week_start, holdout_days=holdout_days)
    holdout_cutoff = week_cutoff(week_start) - dt.timedelta(days=holdout_days)
    result: dict[str, Any] = {
        "holdout_cutoff": holdout_cutoff.isoformat(),
        "holdout_listeners": len(split.eval_users),
    }
    if len(split.eval_users) == 0 or split.train.nnz == 0:
        return result
    k, truth = policy.rules.length, split.test_rows
    recommended = {
        "model": shipped_lists(policy, split, config)[1],
        "popular": popular_lists(split, policy.rules),
    }
    for name, columns in recommended.items():
        result[name] = {
            f"ndcg@{k}": ndcg_at_k(columns, truth),
            f"recall@{k}": recall_at_k(columns, truth),
        }
    return result


def evaluate_week(
    settings: Settings,
    split: WeekSplit,
    *,
    step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Metrics at the playlist length of the shipped configuration and of most popular.

    Returns
    -------
    dict
        ``split``, ``params`` (with their sources), ``listeners`` and ``methods``: method ->
        :func:`recsys.evaluation.evaluate` of its lists.
    """
    _require_listeners(split)
    resolved = ResolvedParams.of(settings)
    policy = PlaylistPolicy.of(settings)
    lists: dict[str, np.ndarray] = {}
    _, lists["shipped"] = shipped_lists(policy, split, resolved.config)
    if step is not None:
        step("shipped configuration")
    lists["most popular"] = popular_lists(split, policy.rules)
    if step is not None:
        step("most popular")
    methods = {
        name: evaluate(
            columns,
            split.test_rows,
            split.train,
            item_artist=split.track_artist,
            cold_items=split.cold_items,
        )
        for name, columns in lists.items()
    }
    if step is not None:
        step("metrics")
    return {
        "split": split.description,
        "params": {**resolved.config.to_dict(), **resolved.to_dict()},
        "listeners": len(split.eval_users),
        "test_items": int(split.test_rows.nnz),
        "methods": methods,
    }


#: Share of a search's budget the ALS search may take; the blend search has the rest.
ALS_BUDGET_SHARE = 0.7


def _search(
    policy: PlaylistPolicy,
    split: WeekSplit,
    start: ResolvedParams,
    *,
    trials: int,
    budget_s: float | None,
    seed: int,
    on_trial: Callable[[Trial], None] | None,
    also: Sequence[Candidate] = (),
) -> list[Trial]:
    """:func:`recsys.tuning.search` on ``split`` from ``start`` (then ``also``), then
    :func:`recsys.tuning.blend_search` over the best ALS and its confidence weights, then,
    when the policy has a re-ranking bound (:attr:`PlaylistPolicy.rerank_bound`: knobs not
    set in the environment), :func:`recsys.tuning.rerank_search` over the best model; the
    parameters ``start`` took from the environment stay fixed (a blend set in the
    environment: no blend search)."""
    _require_listeners(split)
    # The search compares models, not re-rankers: the pipeline cuts with length and cap only.
    baseline = replace(policy, rules=policy.rules.baseline())

    def pipeline_of(model: WeekModel) -> PlaylistPipeline:
        return baseline.pipeline(model, split.track_artist, split.listeners)

    blending = start.sources.get("blend") != "environment"
    deadline = None if budget_s is None else time.monotonic() + budget_s
    gpu = start.config.gpu
    objective = playlist_ndcg_objective(
        split.pairs, split.train, split.test_rows, split.eval_users, pipeline_of, gpu=gpu
    )
    fixed = [name for name in SEARCH_SPACE if start.sources[name] == "environment"]
    tried = search(
        objective,
        trials=trials,
        budget_s=None if budget_s is None else budget_s * (ALS_BUDGET_SHARE if blending else 1),
        seed=seed,
        start=[Candidate(start.params, start.confidence), *also],
        fixed=fixed,
        on_trial=on_trial,
    )
    bound = policy.rerank_bound
    if not any(trial.state == "complete" for trial in tried) or (not blending and bound is None):
        return tried
    best = best_trial(tried)
    matrix = split.matrix(best.confidence)
    base = train_als(matrix, best.params, gpu=gpu)
    partners: dict[str, ItemToItemModel] = {}
    if blending:
        for name in PARTNER_FITS:  # EASE, the slowest to fit, last
            if deadline is None or time.monotonic() < deadline:
                partners.update(fit_partners(matrix, (name,), start.config.memory_budget_mb))
        score = playlist_ndcg(split.train, split.test_rows, split.eval_users, pipeline_of)
        tried += blend_search(
            base,
            partners,
            score,
            start=[start.blend],
            deadline=deadline,
            on_trial=on_trial,
            confidence=best.confidence,
        )
        best = best_trial(tried)
    if bound is not None and (deadline is None or time.monotonic() < deadline):
        if not blending:  # the blend of the environment, fitted once
            best = replace(best, blend=start.blend)
            names = [name for name, _ in start.blend.weights]
            partners = fit_partners(matrix, names, start.config.memory_budget_mb)
        model = blended(base, partners, best.blend)
        tried += rerank_search(
            _list_quality(policy, split, model),
            bound,
            best,
            deadline=deadline,
            on_trial=on_trial,
        )[0]
    return tried


def _list_quality(
    policy: PlaylistPolicy, split: WeekSplit, model: WeekModel
) -> Callable[[RerankKnobs], ListQuality]:
    """knobs -> NDCG@K, intra-list diversity and novelty of the split's playlists by the
    shipped pipeline with those re-ranking knobs."""

    def measure(knobs: RerankKnobs) -> ListQuality:
        lists = split_playlists(policy.with_rerank(knobs), model, split)
        vectors = model.base.scoring_item_factors
        return ListQuality(
            ndcg_at_k(lists, split.test_rows),
            intra_list_diversity(lists, vectors),
            novelty(lists, split.listeners, split.train.shape[0]),
        )

    return measure


def _tuned(
    policy: PlaylistPolicy, week_start: dt.date, split: WeekSplit, trials: list[Trial], seed: int
) -> TunedParams:
    best = best_trial(trials)
    searched_blend = any(trial.stage == "blend" for trial in trials)
    return TunedParams(
        params=best.params,
        score=best.score,
        default_score=trials[0].score,
        metric=f"ndcg@{policy.rules.length} of the artist-capped playlists",
        details={
            "week_start": week_start.isoformat(),
            "split": split.description,
            "listeners": len(split.eval_users),
            "search_seed": seed,
            "search_space": {name: asdict(bounds) for name, bounds in SEARCH_SPACE.items()},
            "trials": [trial.to_dict() for trial in trials],
        },
        blend=best.blend if searched_blend else None,
        confidence=best.confidence,
        rerank=chosen_rerank(trials),
    )


def tune_week(
    settings: Settings,
    week_start: dt.date,
    split: WeekSplit,
    *,
    trials: int,
    budget_s: float | None = None,
    seed: int = SEARCH_SEED,
    on_trial: Callable[[Trial], None] | None = None,
) -> tuple[TunedParams, Path]:
    """Search ALS parameters on ``split`` (validation data, never a test fold) and save the
    best in ``DATA_DIR/tuned_params.json``; the search starts from the parameters the run
    would use without the file (the environment's or the defaults).

    Returns
    -------
    (tuned, path)
    """
    untuned = ResolvedParams.of(settings.model_copy(update={"use_tuned_params": False}))
    policy = PlaylistPolicy.of(settings)
    tried = _search(
        policy,
        split,
        untuned,
        trials=trials,
        budget_s=budget_s,
        seed=seed,
        on_trial=on_trial,
    )
    tuned = _tuned(policy, week_start, split, tried, seed)
    path = save_tuned_params(Storage.of(settings).tuned_params, tuned)
    log.info("tuned parameters %s (score %.4f) saved to %s", tuned.params, tuned.score, path)
    return tuned, path


@dataclass(frozen=True)
class SelfTuning:
    """What a weekly run's own search found, and whether its best is adopted.

    Attributes
    ----------
    trials : list of Trial
        Every configuration tried; the first is the one the run had.
    split : str
        The validation split searched on.
    listeners : int
        Its evaluated listeners.
    holdout : dict
        ``current`` and ``best``: NDCG@K on the gate's holdout of the configuration the run
        had and of the search's best, built by the shipped pipeline; empty when the best is
        the current one.
    tuned : TunedParams or None
        The configuration to adopt, when it beat the current one on the holdout.
    reason : str
        The decision in words.
    """

    trials: list[Trial]
    split: str
    listeners: int
    holdout: dict[str, float]
    tuned: TunedParams | None
    reason: str


def self_tune(
    paths: AggregationPaths,
    week_start: dt.date,
    policy: PlaylistPolicy,
    current: ResolvedParams,
    *,
    holdout_days: int,
    trials: int,
    budget_s: float,
    seed: int = SEARCH_SEED,
    on_trial: Callable[[Trial], None] | None = None,
) -> SelfTuning:
    """Search on the week's validation split (the gate's time split, ``holdout_days``
    earlier) from the ``current`` parameters and the defaults (and the re-ranking knobs
    within the ``policy``'s bound), then adopt the best only if it beats the
    current one on the gate's own holdout (the last ``holdout_days``), both built by the
    shipped pipeline (gorse's rule: a new model only when it is better).

    Raises
    ------
    ValueError
        If the validation split has no evaluated listener (too little history yet).
    """
    validation = week_split(paths, week_start, holdout_days=holdout_days, validation=True)
    tried = _search(
        policy,
        validation,
        current,
        trials=trials,
        budget_s=budget_s,
        seed=seed,
        on_trial=on_trial,
        also=[Candidate(ALSParams(random_seed=current.params.random_seed))],
    )
    tuned = _tuned(policy, week_start, validation, tried, seed)
    found = (validation.description, len(validation.eval_users))
    best = replace(
        current.config,
        als=tuned.params,
        blend=tuned.blend or current.blend,
        confidence=tuned.confidence or current.confidence,
    )
    best_policy = policy if tuned.rerank is None else policy.with_rerank(tuned.rerank)
    if best == current.config and best_policy == policy:
        reason = f"kept: the current configuration scored best on validation ({tuned.score:.4f})"
        return SelfTuning(tried, *found, {}, None, reason)
    holdout = week_split(paths, week_start, holdout_days=holdout_days)
    scores = {
        name: ndcg_at_k(shipped_lists(rules, holdout, config)[1], holdout.test_rows)
        for name, rules, config in (
            ("current", policy, current.config),
            ("best", best_policy, best),
        )
    }
    verdict = f"holdout NDCG {scores['best']:.4f} vs {scores['current']:.4f} now"
    if scores["best"] > scores["current"]:
        return SelfTuning(tried, *found, scores, tuned, f"adopted: {verdict}")
    return SelfTuning(tried, *found, scores, None, f"kept: the search's best had {verdict}")

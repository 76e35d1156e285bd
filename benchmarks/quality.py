"""Playlist quality against what a team would get off the shelf, on the same split, one run.

Usage::

    python benchmarks/quality.py --dataset both --k 50 --out benchmarks/results [--quick]

``--dataset`` is one of ``hetrec``, ``lastfm1k``, ``cm100k``, ``ambar``, ``simulated``,
``both`` (hetrec and simulated), ``real`` (the four real sets) or ``all``. The data sets
(:mod:`benchmarks.datasets`): HetRec 2011 Last.fm 2K and AMBAR with leave-10-out folds,
CM100k with leave-5-out folds among the tracks each listener liked and had never heard,
and Last.fm 1K and the simulator with a time split at a Monday two weeks or so before the
end. For each this measures, on the same test fold and with the same exclusion of
everything the listener already had:

* ``most popular``: the most-listened items the listener does not know yet;
* ``implicit ALS (defaults)``: ``implicit.cpu.als.AlternatingLeastSquares()`` with its
  default parameters on raw play counts (BLAS on one thread, as implicit recommends);
* ``implicit BM25 item-kNN``: ``implicit.nearest_neighbours.BM25Recommender()`` defaults
  on raw play counts;
* ``Spark ALS (ListenBrainz)``: ``pyspark.ml.recommendation.ALS(implicitPrefs=True)`` on
  ListenBrainz's listen-count transform (1 -> 20, 2..20 -> count + 20, more -> 50), with
  ListenBrainz's parameters (see :data:`LISTENBRAINZ_PARAMS`);
* ``ours``: the project's confidence formula, :func:`recsys.als.train_als` and the
  playlist assembly of :mod:`recsys.playlist` (artist cap 2), with the project's default
  parameters and with parameters tuned on the validation fold (never on the test fold),
  each also without the artist cap to show what the cap costs.

Tuning never looks at the test fold: every trial is scored on the validation fold (carved
out of the test fold's training data), in two stages: each confidence formula at the
project's default factors and regularization for each alpha, then a seeded random search
over :data:`recsys.tuning.ALS_SPACE` for the best formula. The best trial is saved to
``tuned_params.json`` and retrained on the test fold's training data.

On the simulated world two diagnostic rows (not contenders) bound what is achievable: the
generative model picks tracks with probability taste[genre] x popularity, so ranking by the
listener's genre shares x popularity, or by the true tastes the simulator drew, is close to
the best possible ranking.

Also per data set: a cold-start benchmark (:func:`cold_start_benchmark`: 10 % of the items
held out entirely from training, ranked by factors projected from content, against a random
order and tag popularity; skipped, saying so, on sets without content: Last.fm 1K, CM100k)
and a re-ranking sweep (:func:`diversity_sweep`: NDCG against artists per list, top artist
share and novelty as MMR and the popularity penalty move).

Outputs in ``--out``: ``quality.md``, ``quality.json``, ``quality.png``,
``quality-diversity.png`` and ``tuned_params.json`` (``-quick`` before the extension with
``--quick``); the two figures need matplotlib (the ``bench`` extra) and are skipped, saying
so, without it. Timings are wall clock on the machine of the run and include any load other
processes put on it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make recsys, jobs and benchmarks importable
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.datasets import (  # noqa: E402
    DATASET_GROUPS,
    REAL_LOADERS,
    BenchmarkDataset,
    Fold,
    PairFeatures,
    load_dataset,
)
from jobs.week import PlaylistPolicy  # noqa: E402
from recsys.als import ALSParams, train_als  # noqa: E402
from recsys.blend import PARTNER_FITS, BlendParams, ModelConfig, fit_partners  # noqa: E402
from recsys.contract import ConfidenceParams, confidence  # noqa: E402
from recsys.evaluation import evaluate, ndcg_at_k, ndcg_per_user  # noqa: E402
from recsys.matrix import InteractionMatrix  # noqa: E402
from recsys.neighbors import EASE, ItemKNN, RP3beta, ease_fits  # noqa: E402
from recsys.pipeline import PlaylistPipeline  # noqa: E402
from recsys.playlist import PlaylistRules, mask_known_tracks  # noqa: E402
from recsys.recommender import PopularityModel, top_n  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.tuning import (  # noqa: E402
    ALS_SPACE,
    SEARCH_SEED,
    SEARCH_SPACE,
    Candidate,
    Trial,
    blend_search,
    search,
)

log = logging.getLogger("quality")

#: ListenBrainz's ``request_model`` defaults are the grid rank {100, 120}, iterations
#: {5, 10}, lambda {0.1, 10.0}, alpha 3.0, picked by RMSE on held-out transformed counts
#: (listenbrainz/spark/request_manage.py, listenbrainz_spark/recommendations/recording/
#: train_models.py). RMSE against counts of 20..50 says little about ranking, so rather than
#: run that 8-model grid we take its first rank, the larger iteration count and the smaller
#: lambda: the combination least handicapped for top-K ranking.
LISTENBRAINZ_PARAMS: dict[str, Any] = {"rank": 100, "maxIter": 10, "regParam": 0.1, "alpha": 3.0}
#: Alphas of the first tuning stage (each confidence formula at each); quick mode: 10 only.
FORMULA_ALPHAS = [1.0, 5.0, 10.0, 20.0, 40.0]
#: Memory EASE's items x items inverse may take; larger catalogues skip it (logged).
EASE_MEMORY_MB = 6144.0
BOOTSTRAP_SEED = 7
#: A peer ranks this many times ``k`` tracks, so that its list under the product's artist
#: cap (:func:`artist_capped`) can be filled from its own order.
PEER_DEPTH = 4
#: The off-the-shelf methods "ours" is compared with (the best of them is the bar).
PEERS = (
    "implicit ALS (defaults)",
    "implicit ALS (tuned)",
    "implicit BM25 item-kNN",
    "Spark ALS (ListenBrainz)",
    "item-kNN cosine",
    "RP3beta",
    "EASE",
)
#: The blend the weekly run ships with (``CRATEDIGGER_BLEND``'s default).
SHIPPED_BLEND = BlendParams.parse(str(Settings.model_fields["blend"].default))
BLOCK = 1024
METRIC_COLUMNS = (
    ("ndcg", "NDCG"),
    ("recall", "Recall"),
    ("precision", "Prec"),
    ("map", "MAP"),
    ("coverage", "Coverage"),
    ("artists_per_list", "Artists/list"),
    ("top_artist_share", "Top artist share"),
    ("novelty", "Novelty (bits)"),
    ("gini", "Gini"),
    ("cold_recall", "Cold recall"),
)


# ------------------------------------------------------------------- confidence formulas


Counts = tuple[np.ndarray, np.ndarray, np.ndarray]

#: The formulas that are the product's own (``recsys.contract.confidence``) on counts taken
#: from a fold's pair features: (completed, skips, thumb) per pair. The weekly run's search
#: varies the formula's weights on them (:data:`recsys.tuning.CONFIDENCE_SPACE`).
PRODUCT_COUNTS: dict[str, Callable[[PairFeatures], Counts]] = {
    "product": lambda f: (f.completed, f.skips, f.thumb),
    "product_no_thumbs": lambda f: (f.completed, f.skips, np.zeros_like(f.thumb)),
    "log": lambda f: (f.raw_count, np.zeros_like(f.raw_count), np.zeros_like(f.thumb)),
    # What the README's pipeline sees after convert_hetrec: ceil(log2(1 + count)) plays.
    "product_converted": lambda f: (
        np.ceil(np.log2(1.0 + f.raw_count)),
        np.zeros_like(f.raw_count),
        np.zeros_like(f.thumb),
    ),
}


def product_confidence(
    formula: str, features: PairFeatures, weights: ConfidenceParams | None = None
) -> np.ndarray:
    """The product's confidence of the fold's pairs under ``weights`` (default: the shipped
    ones), from the counts of ``formula`` (:data:`PRODUCT_COUNTS`); ages from the fold's
    features where it has them."""
    completed, skips, thumb = PRODUCT_COUNTS[formula](features)
    ages = features.age_days if features.age_days is not None else np.zeros(len(completed))
    return confidence(completed, skips, thumb, weights or ConfidenceParams(), ages)


def _bm25(features: PairFeatures) -> np.ndarray:
    from implicit.nearest_neighbours import bm25_weight

    weighted = sp.csr_matrix(bm25_weight(features.matrix(features.raw_count), K1=100, B=0.8))
    weighted.sort_indices()
    if not (
        np.array_equal(weighted.indptr, features.pattern.indptr)
        and np.array_equal(weighted.indices, features.pattern.indices)
    ):
        raise RuntimeError("bm25_weight changed the sparsity pattern")
    return np.asarray(weighted.data, dtype=np.float64)


#: Every confidence formula ``ours`` may train on, from a fold's pair features.
FORMULAS: dict[str, Callable[[PairFeatures], np.ndarray]] = {
    **{
        name: (lambda f, name=name: product_confidence(name, f))  # type: ignore[misc]
        for name in PRODUCT_COUNTS
    },
    "raw": lambda f: f.raw_count,
    "bm25": _bm25,
}
#: The formulas compared on each data set, the project's own first. HetRec has only counts
#: (the product formula is ln(1 + count), "log"); Last.fm 1K and AMBAR have plays without
#: skips or thumbs (the product formula is ln(1 + plays)); CM100k and the simulator have
#: skips and thumbs.
DATASET_FORMULAS: dict[str, tuple[str, ...]] = {
    "simulated": ("product", "product_no_thumbs", "log", "raw", "bm25"),
    "hetrec": ("log", "product_converted", "raw", "bm25"),
    "lastfm1k": ("product", "raw", "bm25"),
    "cm100k": ("product", "product_no_thumbs", "raw", "bm25"),
    "ambar": ("product", "raw", "bm25"),
}


def confidence_formulas(dataset: str) -> dict[str, Callable[[PairFeatures], np.ndarray]]:
    """Confidence formulas compared for ``ours``; the first is the project's own."""
    return {name: FORMULAS[name] for name in DATASET_FORMULAS[dataset]}


def listenbrainz_confidence(count: np.ndarray) -> np.ndarray:
    """ListenBrainz's transformed listen count: 1 -> 20, 2..20 -> count + 20, > 20 -> 50."""
    return np.where(count <= 1, 20.0, np.where(count <= 20, count + 20.0, 50.0))


# ---------------------------------------------------------------------------- top-K lists


def top_k_unheard(
    score: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float32]],
    rows: npt.NDArray[np.int64],
    known: sp.csr_matrix,
    k: int,
) -> npt.NDArray[np.int64]:
    """Top ``k`` columns per row of ``score(rows)`` excluding ``known``; -1 pads, -inf never."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for start in range(0, len(rows), BLOCK):
        block = rows[start : start + BLOCK]
        scores = score(block)
        mask_known_tracks(scores, known[block])
        out[start : start + len(block)] = top_n(scores, k)[0]
    return out


def _implicit_lists(ids: np.ndarray, scores: np.ndarray) -> npt.NDArray[np.int64]:
    # implicit fills a list that runs out of candidates with filtered items scored -FLT_MAX.
    lowest = np.finfo(np.float32).min
    return np.where((ids >= 0) & (scores > lowest), ids, -1).astype(np.int64)


@dataclass
class MethodRun:
    name: str
    recommended: npt.NDArray[np.int64]
    fit_seconds: float
    recommend_seconds: float
    note: str = ""
    #: A peer's longer ranking (``PEER_DEPTH * k`` columns), whose first ``k`` are
    #: ``recommended``; what :func:`artist_capped` fills a capped list from.
    ranking: npt.NDArray[np.int64] | None = None


def artist_capped(
    ranking: npt.NDArray[np.int64], item_artist: npt.NDArray[np.int64], cap: int, k: int
) -> npt.NDArray[np.int64]:
    """Each row's first ``k`` columns of ``ranking`` (-1 pads) taking at most ``cap``
    tracks of one artist: the peer's own order under the product's artist cap, without
    MMR or popularity penalty."""
    out = np.full((ranking.shape[0], k), -1, dtype=np.int64)
    for row, columns in enumerate(ranking):
        taken: dict[int, int] = {}
        filled = 0
        for column in columns[columns >= 0]:
            artist = int(item_artist[column])
            if taken.get(artist, 0) < cap:
                taken[artist] = taken.get(artist, 0) + 1
                out[row, filled] = column
                filled += 1
                if filled == k:
                    break
    return out


def most_popular(fold: Fold, k: int) -> MethodRun:
    """The product's popularity baseline (:class:`recsys.recommender.PopularityModel`),
    without an artist cap: the most listened unheard tracks."""
    started = time.perf_counter()
    train = fold.split.train
    listeners = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32)
    model = PopularityModel(
        listeners, np.arange(train.shape[0]).astype(str), np.arange(train.shape[1]).astype(str)
    )
    fitted = time.perf_counter()
    # A track nobody played is no popular pick.
    out = top_k_unheard(
        lambda rows: np.where(listeners > 0, model.score(rows), -np.inf).astype(np.float32),
        fold.eval_users,
        train,
        k,
    )
    return MethodRun("most popular", out, fitted - started, time.perf_counter() - fitted)


def _implicit_run(fold: Fold, k: int, name: str, model: Any, note: str) -> MethodRun:
    """An implicit model fitted on the raw counts, its own top ``k`` unheard (BLAS on one
    thread, as implicit recommends), and its top ``PEER_DEPTH * k`` as the ranking."""
    counts = fold.features.matrix(fold.features.raw_count)
    started = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model.fit(counts, show_progress=False)
        fitted = time.perf_counter()
        ids, scores = model.recommend(
            fold.eval_users,
            counts[fold.eval_users],
            N=PEER_DEPTH * k,
            filter_already_liked_items=True,
        )
    lists = _implicit_lists(ids, scores)
    seconds = time.perf_counter() - fitted
    return MethodRun(name, lists[:, :k], fitted - started, seconds, note, lists)


def implicit_als_defaults(fold: Fold, k: int, seed: int) -> MethodRun:
    from implicit.cpu.als import AlternatingLeastSquares

    note = "AlternatingLeastSquares(): factors 100, regularization 0.01, alpha 1, 15 iterations"
    model = AlternatingLeastSquares(random_state=seed)
    return _implicit_run(fold, k, "implicit ALS (defaults)", model, f"{note}; raw counts")


def implicit_als_tuned(data: BenchmarkDataset, k: int, trials: int, seed: int) -> MethodRun:
    """implicit's ALS on raw counts with the parameters our own search finds for it with the
    same number of trials (Optuna TPE over :data:`recsys.tuning.ALS_SPACE`, NDCG@k of its own top k
    unheard on the validation fold), then fitted on the test fold."""
    from implicit.cpu.als import AlternatingLeastSquares

    def fitted(params: ALSParams) -> Any:
        return AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=seed,
        )

    def objective(candidate: Candidate, _: Any) -> float:
        run = _implicit_run(data.validation, k, "", fitted(candidate.als), "")
        return ndcg_at_k(run.recommended, data.validation.test_rows)

    started = time.perf_counter()
    defaults = ALSParams(factors=100, regularization=0.01, alpha=1.0, iterations=15)
    tried = search(
        objective, trials=trials, seed=SEARCH_SEED, space=ALS_SPACE, start=[Candidate(defaults)]
    )
    best = max((t for t in tried if t.state == "complete"), key=lambda t: t.score).params
    searched = time.perf_counter() - started
    run = _implicit_run(
        data.test,
        k,
        "implicit ALS (tuned)",
        fitted(best),
        f"factors {best.factors}, reg {best.regularization:.3g}, alpha {best.alpha:.3g}, "
        f"{best.iterations} it, from {len(tried)} trials of the same search ({searched:.0f} s); "
        "raw counts",
    )
    return run


def implicit_bm25(fold: Fold, k: int) -> MethodRun:
    from implicit.nearest_neighbours import BM25Recommender

    note = "BM25Recommender(): K 20, K1 1.2, B 0.75; raw counts"
    return _implicit_run(fold, k, "implicit BM25 item-kNN", BM25Recommender(), note)


def _neighbors(fold: Fold, k: int, name: str, fit: Callable[..., Any], note: str) -> MethodRun:
    """A model of :mod:`recsys.neighbors` fitted on the raw counts, top ``k`` unheard."""
    counts = fold.features.matrix(fold.features.raw_count).astype(np.float32)
    ids = np.arange(counts.shape[0]).astype(str), np.arange(counts.shape[1]).astype(str)
    started = time.perf_counter()
    model = fit(InteractionMatrix(counts, *ids))
    fitted = time.perf_counter()
    out = top_k_unheard(model.score, fold.eval_users, counts, PEER_DEPTH * k)
    seconds = time.perf_counter() - fitted
    return MethodRun(name, out[:, :k], fitted - started, seconds, note, out)


def neighbor_peers(fold: Fold, k: int) -> list[MethodRun]:
    """The literature's strongest simple baselines on raw counts, at their usual settings:
    item-kNN with cosine similarity (K 100), RP3beta (alpha 1, beta 0.5, K 100; Dacrema et
    al. 2019) and EASE (lambda 500, binary; Steck 2019) when the catalogue fits."""
    runs = [
        _neighbors(
            fold, k, "item-kNN cosine", lambda m: ItemKNN.fit(m, weighting="cosine"), "K 100"
        ),
        _neighbors(fold, k, "RP3beta", RP3beta.fit, "alpha 1.0, beta 0.5, K 100"),
    ]
    n_items = fold.split.train.shape[1]
    if ease_fits(n_items, EASE_MEMORY_MB):
        fit = lambda m: EASE.fit(m, memory_budget_mb=EASE_MEMORY_MB)  # noqa: E731
        runs.append(_neighbors(fold, k, "EASE", fit, "lambda 500, binary"))
    else:
        log.warning("EASE skipped: %d items do not fit in %.0f MiB", n_items, EASE_MEMORY_MB)
    return runs


class SparkALS:
    """Spark MLlib ALS the way ListenBrainz trains it, on one local[2] session."""

    def __init__(self) -> None:
        self._spark: Any = None
        self.start_seconds = 0.0

    def session(self) -> Any:
        if self._spark is None:
            from pyspark.sql import SparkSession

            started = time.perf_counter()
            self._spark = (
                SparkSession.builder.master("local[2]")
                .appName("cratedigger-quality")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.driver.host", "127.0.0.1")
                .config("spark.sql.shuffle.partitions", "2")
                .config("spark.driver.memory", "3g")
                .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                .getOrCreate()
            )
            self._spark.sparkContext.setLogLevel("ERROR")
            self.start_seconds = time.perf_counter() - started
        return self._spark

    def stop(self) -> None:
        if self._spark is not None:
            self._spark.stop()
            self._spark = None

    def run(self, fold: Fold, k: int, seed: int) -> MethodRun:
        import pandas as pd
        from pyspark.ml.recommendation import ALS

        spark = self.session()
        train = fold.split.train
        coo = train.tocoo()
        ratings = pd.DataFrame(
            {
                "user": coo.row.astype(np.int32),
                "item": coo.col.astype(np.int32),
                "rating": listenbrainz_confidence(fold.features.raw_count).astype(np.float32),
            }
        )
        started = time.perf_counter()
        frame = spark.createDataFrame(ratings)
        als = ALS(
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            implicitPrefs=True,
            coldStartStrategy="drop",
            seed=seed,
            **LISTENBRAINZ_PARAMS,
        )
        model = als.fit(frame)
        users: Any = model.userFactors.toPandas()
        items: Any = model.itemFactors.toPandas()
        fitted = time.perf_counter()
        rank = int(LISTENBRAINZ_PARAMS["rank"])
        user_factors = np.zeros((train.shape[0], rank), dtype=np.float32)
        user_factors[users["id"].to_numpy()] = np.stack(users["features"].to_numpy())
        item_factors = np.zeros((train.shape[1], rank), dtype=np.float32)
        item_factors[items["id"].to_numpy()] = np.stack(items["features"].to_numpy())
        has_factors = np.zeros(train.shape[1], dtype=bool)
        has_factors[items["id"].to_numpy()] = True

        def score(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
            scores: npt.NDArray[np.float32] = user_factors[rows] @ item_factors.T
            scores[:, ~has_factors] = -np.inf  # items Spark never saw get no score
            return scores

        # ListenBrainz asks recommendForUserSubset for many candidates and drops the listened
        # ones; the exact equivalent here is masking the heard items before the top-K.
        ranking = top_k_unheard(score, fold.eval_users, train, PEER_DEPTH * k)
        return MethodRun(
            "Spark ALS (ListenBrainz)",
            ranking[:, :k],
            fitted - started,
            time.perf_counter() - fitted,
            "pyspark.ml ALS implicitPrefs, "
            + ", ".join(f"{key} {value}" for key, value in LISTENBRAINZ_PARAMS.items())
            + "; ListenBrainz count transform",
            ranking,
        )


@dataclass(frozen=True)
class OursConfig:
    """A configuration of ours: the confidence formula (with the product's weights, when
    ``confidence`` is set and the formula is one of :data:`PRODUCT_COUNTS`), ALS, blend."""

    formula: str
    params: ALSParams
    blend: BlendParams = field(default_factory=BlendParams)
    confidence: ConfidenceParams | None = None

    def label(self) -> str:
        p, c = self.params, self.confidence
        weights = (
            ""
            if c is None
            else f" ({c.confidence_scale}, skips {c.skip_weight:.2g}, thumbs "
            f"{c.thumb_up_boost:.2g}/{c.thumb_down_confidence:.2g}, half-life "
            f"{c.half_life_days:g} d)"
        )
        return (
            f"{self.formula}{weights}, factors {p.factors}, reg {p.regularization:.3g}, "
            f"alpha {p.alpha:.3g}, {p.iterations} it, blend {self.blend.text()}"
        )

    def values(self, data: BenchmarkDataset, features: PairFeatures) -> np.ndarray:
        """The confidence of ``features``' pairs this configuration trains on."""
        if self.confidence is not None and self.formula in PRODUCT_COUNTS:
            return product_confidence(self.formula, features, self.confidence)
        return confidence_formulas(data.name)[self.formula](features)


def ours(
    data: BenchmarkDataset,
    fold: Fold,
    config: OursConfig,
    k: int,
    *,
    caps: tuple[int, ...] = (2,),
) -> dict[int, MethodRun]:
    """Train the project's ALS on ``config.formula`` and assemble playlists per artist cap.

    A capped playlist is re-ranked with the shipped settings' MMR diversity and popularity
    penalty (:func:`shipped_rules`); ``cap == k`` is the plain top ``k``, no re-ranking."""
    features = fold.features
    values = config.values(data, features)
    matrix = InteractionMatrix(
        user_items=features.matrix(values),
        user_ids=np.asarray(data.user_ids),
        track_ids=np.asarray(data.item_ids),
    )
    started = time.perf_counter()
    model = ModelConfig(config.params, config.blend, EASE_MEMORY_MB).train(matrix)
    fitted = time.perf_counter()
    runs = {}
    for cap in caps:
        begun = time.perf_counter()
        rules = shipped_rules(k, cap) if cap < k else PlaylistRules(k, k)
        recommended = playlists(data, fold, model, rules)
        runs[cap] = MethodRun(
            "ours",
            recommended,
            fitted - started,
            time.perf_counter() - begun,
            config.label()
            + (
                f"; artist cap {cap}, MMR {rules.diversity}, popularity penalty "
                f"{rules.popularity_penalty}"
                if cap < k
                else "; no artist cap, no re-ranking"
            ),
        )
    return runs


def shipped_rules(k: int, cap: int = 2, **changes: float) -> PlaylistRules:
    """The weekly run's rules (the settings' defaults, :meth:`jobs.week.PlaylistPolicy.of`)
    for lists of ``k``."""
    rules = PlaylistPolicy.of(Settings.model_construct()).rules
    return replace(rules, length=k, max_tracks_per_artist=cap, **changes)


def playlists(
    data: BenchmarkDataset, fold: Fold, model: Any, rules: PlaylistRules
) -> npt.NDArray[np.int64]:
    """Playlists of the fold's evaluated listeners through the product's pipeline (no cold
    slots: the benchmark's models have no cold-start factors)."""
    listeners = np.bincount(fold.split.train.indices, minlength=fold.split.train.shape[1])
    pipeline = PlaylistPipeline(rules, model, data.item_artist, listeners, block_size=BLOCK)
    return pipeline.columns(fold.eval_users, fold.split.train)


# ------------------------------------------------------------------------------- search


def _trial(data: BenchmarkDataset, config: OursConfig, k: int, stage: str) -> dict[str, Any]:
    fold = data.validation
    run = ours(data, fold, config, k)[2]
    ndcg = ndcg_at_k(run.recommended, fold.test_rows)
    log.info("  %s validation %-58s NDCG@%d %.4f", stage, config.label(), k, ndcg)
    return {
        "stage": stage,
        "formula": config.formula,
        "params": asdict(config.params),
        "blend": config.blend.text(),
        "confidence": None if config.confidence is None else asdict(config.confidence),
        "validation_ndcg": ndcg,
        "seconds": round(run.fit_seconds + run.recommend_seconds, 2),
    }


def tune(
    data: BenchmarkDataset, k: int, formula_alphas: list[float], n_random: int
) -> list[dict[str, Any]]:
    """Validation-fold trials: formulas first, then the weekly run's search for the best one.

    Stage ``formula``: every confidence formula at the project's default factors and
    regularization, for each alpha in ``formula_alphas`` (alpha sets the scale, which differs
    between formulas). Stage ``search``: ``n_random`` configurations drawn by the weekly
    run's seeded TPE search for the formula that did best in the first stage, over
    :data:`recsys.tuning.SEARCH_SPACE` (ALS and the confidence weights) when it is one of
    the product's formulas, else over ALS alone; weights the data set cannot inform (no
    skips, no thumbs, no timestamps) stay the shipped ones. Stage ``blend``: the weekly
    run's blend search over the best. Every trial is scored by NDCG@k of the capped playlist
    on the validation fold.
    """
    defaults = ALSParams()
    trials = [
        _trial(data, OursConfig(formula, replace(defaults, alpha=alpha)), k, "formula")
        for formula in confidence_formulas(data.name)
        for alpha in formula_alphas
    ]
    best_formula = max(trials, key=lambda t: t["validation_ndcg"])["formula"]
    weighted = best_formula in PRODUCT_COUNTS
    space = SEARCH_SPACE if weighted else ALS_SPACE
    search(
        lambda candidate, report: _trial(
            data,
            OursConfig(
                best_formula, candidate.als, confidence=candidate.confidence if weighted else None
            ),
            k,
            "search",
        )["validation_ndcg"],
        trials=n_random,
        seed=SEARCH_SEED,
        space=space,
        fixed=_uninformed_weights(data, best_formula) if weighted else (),
        on_trial=lambda trial: trials.append(_trial_row(best_formula, trial, weighted)),
    )
    best = max(trials, key=lambda t: t["validation_ndcg"])
    config = _config_of(best)
    blend_search(
        *_blend_candidates(data, config, k),
        on_trial=lambda trial: trials.append(
            _trial_row(config.formula, trial, config.confidence is not None)
        ),
        confidence=config.confidence,
    )
    return trials


def _uninformed_weights(data: BenchmarkDataset, formula: str) -> list[str]:
    """The confidence weights that cannot change the validation fold's matrix."""
    features = data.validation.features
    _, skips, thumb = PRODUCT_COUNTS[formula](features)
    fixed = []
    if not np.any(skips):
        fixed.append("skip_weight")
    if not np.any(thumb == 1):
        fixed.append("thumb_up_boost")
    if not np.any(thumb == -1):
        fixed.append("thumb_down_confidence")
    if features.age_days is None:
        fixed.append("half_life_days")
    return fixed


def _config_of(row: dict[str, Any]) -> OursConfig:
    weights = row.get("confidence")
    return OursConfig(
        row["formula"],
        ALSParams(**row["params"]),
        BlendParams.parse(row["blend"]),
        None if weights is None else ConfidenceParams(**weights),
    )


def _trial_row(formula: str, trial: Trial, weighted: bool) -> dict[str, Any]:
    return {
        "stage": trial.stage,
        "formula": formula,
        "params": asdict(trial.params),
        "blend": trial.blend.text(),
        "confidence": asdict(trial.confidence) if weighted else None,
        "validation_ndcg": trial.score,
        "seconds": round(trial.seconds, 2),
    }


def _blend_candidates(
    data: BenchmarkDataset, config: OursConfig, k: int
) -> tuple[Any, dict[str, Any], Callable[[Any], float]]:
    """The blend search's arguments on the validation fold, as the weekly run's: the best
    ALS (on the best configuration's confidence), every partner that fits, and NDCG@k of
    the capped playlists."""
    fold = data.validation
    matrix = InteractionMatrix(
        fold.features.matrix(config.values(data, fold.features)),
        np.asarray(data.user_ids),
        np.asarray(data.item_ids),
    )
    base = train_als(matrix, config.params)
    partners = fit_partners(matrix, tuple(PARTNER_FITS), EASE_MEMORY_MB)

    def score(model: Any) -> float:
        return ndcg_at_k(playlists(data, fold, model, shipped_rules(k)), fold.test_rows)

    return base, partners, score


# ----------------------------------------------------------------------------- diagnostics


def genre_popularity(data: BenchmarkDataset, fold: Fold, k: int, *, oracle: bool) -> MethodRun:
    """Simulator ceiling: P(track) is taste[genre] x taste[mood] x popularity in the
    generative model.

    ``oracle=False`` estimates each listener's genre shares from the training pairs (a
    content-aware popularity any team could build from the genre tags); ``oracle=True``
    uses the true genre and mood tastes the simulator drew. Popularity is the training
    listener count.
    """
    assert data.item_genre is not None and data.true_taste is not None
    started = time.perf_counter()
    train = fold.split.train
    genre = data.item_genre
    n_genres = data.true_taste.shape[1]
    listeners = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float64) + 0.5
    if oracle:
        taste = data.true_taste
    else:
        pair_rows = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
        counts = np.zeros((train.shape[0], n_genres))
        np.add.at(counts, (pair_rows, genre[train.indices]), 1.0)
        taste = (counts + 1.0) / (counts + 1.0).sum(axis=1, keepdims=True)
    fitted = time.perf_counter()

    mood_weight: npt.NDArray[np.float64] | None = None
    if oracle and data.item_mood is not None and data.true_mood_taste is not None:
        mood_weight = data.true_mood_taste

    def score(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        weight = taste[rows][:, genre] * listeners
        if mood_weight is not None and data.item_mood is not None:
            weight *= mood_weight[rows][:, data.item_mood]
        result: npt.NDArray[np.float32] = weight.astype(np.float32)
        return result

    recommended = top_k_unheard(score, fold.eval_users, train, k)
    label = "true taste" if oracle else "genre shares of the training pairs"
    return MethodRun(
        "oracle" if oracle else "genre-aware popularity",
        recommended,
        fitted - started,
        time.perf_counter() - fitted,
        f"diagnostic, not a contender: {label} x training popularity",
    )


def taste_matches_plays(data: BenchmarkDataset) -> float:
    """Correlation of the rebuilt true tastes with the genre shares listeners played."""
    assert data.item_genre is not None and data.true_taste is not None
    train = data.test.split.train
    pair_rows = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
    counts = np.zeros(data.true_taste.shape)
    np.add.at(counts, (pair_rows, data.item_genre[train.indices]), 1.0)
    shares = (counts + 1.0) / (counts + 1.0).sum(axis=1, keepdims=True)
    return float(np.corrcoef(shares.ravel(), data.true_taste.ravel())[0, 1])


# ---------------------------------------------------------------------- cold start, sweep

COLD_FRACTION = 0.1
COLD_SEED = 20261117
#: (MMR diversity, popularity penalty) pairs of the diversity sweep, artist cap 2 each.
SWEEP = (
    [(lam, 0.0) for lam in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)]
    + [(0.0, beta) for beta in (0.05, 0.1, 0.2, 0.5)]
    + [(0.2, 0.1), (0.3, 0.2)]
)


def _content(data: BenchmarkDataset) -> tuple[np.ndarray, np.ndarray, str]:
    """Content of every item: the simulator's embeddings, HetRec's tags (as TF-IDF + SVD)."""
    from recsys.coldstart import content_matrix

    if data.item_embeddings is not None:
        content, has = content_matrix(data.item_embeddings, None)
        return content, has, "embedding"
    tags = data.item_tags.tocsr()
    names = np.asarray(data.tag_names, dtype=object)
    lists = [names[tags.indices[a:b]].tolist() for a, b in itertools.pairwise(tags.indptr)]
    content, has = content_matrix(None, lists)
    return content, has, "tags"


def cold_start_benchmark(data: BenchmarkDataset, k: int) -> dict[str, Any]:
    """Hold out 10 % of the items entirely from training and rank only them.

    The held-out items (drawn among the items with content that some evaluated listener has
    as a test item, :func:`recsys.evaluation.holdout_items`) lose every training pair; ALS
    with the shipped defaults trains on the rest, a ridge projection from content to item
    factors is fitted on the warm items (:func:`recsys.coldstart.cold_item_factors`, with the
    weekly run's minimum of listeners) and gives the held-out items factors. Each evaluated
    listener with a held-out test item gets the top ``k`` of the held-out items by (a) the
    projected factors, (b) a seeded random order, (c) tag popularity: the mean, over an
    item's tags, of the training listeners of warm items with that tag. Cold recall@k =
    hits / min(k, held-out test items), averaged over those listeners.

    Without item content (or no test item with content) it returns only ``{"skipped":
    reason}``.
    """
    from recsys.coldstart import cold_item_factors
    from recsys.evaluation import holdout_items, remove_items_from_train

    if data.item_embeddings is None and data.item_tags.nnz == 0:
        return {"skipped": f"it needs item content (tags or embeddings); {data.name} has none"}
    fold = data.test
    train_full = fold.split.train
    n_items = train_full.shape[1]
    content, has_content, kind = _content(data)
    tested = np.zeros(n_items, dtype=bool)
    tested[fold.test_rows.indices] = True
    held = holdout_items(n_items, COLD_FRACTION, COLD_SEED, eligible=tested & has_content)
    if len(held) == 0:
        return {"skipped": f"no test item of {data.name} with content to hold out"}
    split = remove_items_from_train(fold.split, held)
    train = split.train
    values = confidence_formulas(data.name)[next(iter(confidence_formulas(data.name)))](
        fold.features
    )
    confidence = fold.features.matrix(values)
    is_held = np.zeros(n_items, dtype=bool)
    is_held[held] = True
    confidence.data[is_held[confidence.indices]] = 0.0
    confidence.eliminate_zeros()
    model = train_als(
        InteractionMatrix(confidence, np.asarray(data.user_ids), np.asarray(data.item_ids)),
        ALSParams(),
    )
    listeners = np.bincount(train.indices, minlength=n_items)
    min_listeners = int(Settings.model_fields["cold_min_plays"].default)
    factors, projected = cold_item_factors(
        model.item_factors, content, has_content, listeners, min_listeners
    )
    truth = fold.test_rows[:, held]
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    truth = truth[users]
    rows = fold.eval_users[users]
    top = min(k, len(held))

    def ranked(scores: np.ndarray) -> npt.NDArray[np.int64]:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
        return order.astype(np.int64)

    projected_scores = model.user_factors[rows] @ factors[held].T
    rng = np.random.default_rng(COLD_SEED)
    random_scores = rng.random((len(rows), len(held)))
    tag_matrix = (data.item_tags > 0).astype(np.float64).tocsr()
    warm = listeners > 0
    tag_listeners = tag_matrix[warm].T @ listeners[warm].astype(np.float64)
    held_tags = tag_matrix[held]
    n_tags = np.maximum(np.diff(held_tags.indptr), 1)
    tag_score = (held_tags @ tag_listeners) / n_tags
    tag_scores = np.tile(tag_score, (len(rows), 1))
    from recsys.evaluation import recall_at_k

    result = {
        "held_out_items": len(held),
        "listeners": len(rows),
        "content": kind,
        "projected_items": int(projected[held].sum()),
        "recall": {
            "projected factors": recall_at_k(ranked(projected_scores), truth),
            "random": recall_at_k(ranked(random_scores), truth),
            "tag popularity": recall_at_k(ranked(tag_scores), truth),
        },
        "random_expected": top / len(held),
    }
    log.info("%s cold start: %s", data.name, json.dumps(result))
    return result


def diversity_sweep(data: BenchmarkDataset, k: int) -> list[dict[str, Any]]:
    """NDCG@k and diversity of the shipped model as MMR and the popularity penalty move.

    One model (the project's formula and default parameters) on the test fold; every point
    has the artist cap 2 and the shipped pool; the first row is the same model without any
    re-ranking (no cap), the reference of the NDCG loss.
    """
    fold = data.test
    formula = next(iter(confidence_formulas(data.name)))
    values = confidence_formulas(data.name)[formula](fold.features)
    model = train_als(
        InteractionMatrix(
            fold.features.matrix(values), np.asarray(data.user_ids), np.asarray(data.item_ids)
        ),
        ALSParams(),
    )
    train = fold.split.train
    points: list[dict[str, Any]] = []
    settings: list[tuple[str, PlaylistRules]] = [("no re-ranking", PlaylistRules(k, k))]
    settings += [
        (
            f"cap 2, MMR {lam}, penalty {beta}",
            shipped_rules(k, 2, diversity=lam, popularity_penalty=beta),
        )
        for lam, beta in SWEEP
    ]
    for label, rules in settings:
        recommended = playlists(data, fold, model, rules)
        metrics = evaluate(recommended, fold.test_rows, train, item_artist=data.item_artist)
        points.append(
            {
                "label": label,
                "diversity": rules.diversity,
                "popularity_penalty": rules.popularity_penalty,
                "cap": rules.max_tracks_per_artist,
                **{
                    key: metrics[key]
                    for key in (
                        "ndcg",
                        "recall",
                        "artists_per_list",
                        "top_artist_share",
                        "novelty",
                        "coverage",
                    )
                },
            }
        )
        points[-1]["ndcg_loss"] = 1.0 - points[-1]["ndcg"] / points[0]["ndcg"]
        log.info("%s sweep %-34s %s", data.name, label, json.dumps(points[-1]))
    return points


# ------------------------------------------------------------------------------ running


def _evaluate(data: BenchmarkDataset, fold: Fold, run: MethodRun) -> dict[str, Any]:
    metrics = evaluate(
        run.recommended,
        fold.test_rows,
        fold.split.train,
        item_artist=data.item_artist,
        cold_items=fold.cold_items,
    )
    return {
        **metrics,
        "fit_seconds": round(run.fit_seconds, 2),
        "recommend_seconds": round(run.recommend_seconds, 2),
        "note": run.note,
    }


def _bootstrap_ratio(a: np.ndarray, b: np.ndarray, rounds: int = 1000) -> tuple[float, float]:
    """95 % paired bootstrap interval of mean(a) / mean(b) over listeners."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    ratios = np.empty(rounds)
    for r in range(rounds):
        index = rng.integers(0, len(a), len(a))
        ratios[r] = a[index].mean() / max(b[index].mean(), 1e-12)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def run_dataset(
    data: BenchmarkDataset,
    spark: SparkALS,
    k: int,
    *,
    formula_alphas: list[float],
    n_random: int,
    seed: int,
) -> dict[str, Any]:
    fold = data.test
    methods: dict[str, dict[str, Any]] = {}
    per_user: dict[str, np.ndarray] = {}

    runs_by_name: dict[str, MethodRun] = {}

    def record(name: str, run: MethodRun) -> None:
        runs_by_name[name] = run
        methods[name] = _evaluate(data, fold, run)
        per_user[name] = ndcg_per_user(run.recommended, fold.test_rows)
        log.info(
            "%s %-34s NDCG@%d %.4f  recall %.4f  coverage %.3f  fit %.1f s  recommend %.1f s",
            data.name,
            name,
            k,
            methods[name]["ndcg"],
            methods[name]["recall"],
            methods[name]["coverage"],
            run.fit_seconds,
            run.recommend_seconds,
        )

    record("most popular", most_popular(fold, k))
    record("implicit ALS (defaults)", implicit_als_defaults(fold, k, seed))
    # As many ALS trainings as our own search (formula stage, then TPE), the defaults first.
    same_budget = len(confidence_formulas(data.name)) * len(formula_alphas) + n_random - 1
    record("implicit ALS (tuned)", implicit_als_tuned(data, k, same_budget, seed))
    record("implicit BM25 item-kNN", implicit_bm25(fold, k))
    record("Spark ALS (ListenBrainz)", spark.run(fold, k, seed))
    for run in neighbor_peers(fold, k):
        record(run.name, run)
    # The same peers under the product's artist cap of 2 (their own order, no re-ranking).
    for name in [name for name in methods if name in PEERS]:
        ranking = runs_by_name[name].ranking
        assert ranking is not None
        capped = artist_capped(ranking, data.item_artist, 2, k)
        record(f"{name}, artist cap 2", replace(runs_by_name[name], recommended=capped))

    formulas = list(confidence_formulas(data.name))
    default_config = OursConfig(formulas[0], ALSParams(), SHIPPED_BLEND)
    runs = ours(data, fold, default_config, k, caps=(2, k))
    record("ours (defaults)", runs[2])
    record("ours (defaults, no re-ranking)", runs[k])
    record(
        "ours (defaults, ALS alone)", ours(data, fold, OursConfig(formulas[0], ALSParams()), k)[2]
    )

    started = time.perf_counter()
    trials = tune(data, k, formula_alphas, n_random)
    search_seconds = time.perf_counter() - started
    best = max(trials, key=lambda t: t["validation_ndcg"])
    tuned_config = _config_of(best)
    runs = ours(data, fold, tuned_config, k, caps=(2, k))
    record("ours (tuned)", runs[2])
    record("ours (tuned, no re-ranking)", runs[k])
    alone = replace(tuned_config, blend=BlendParams())
    record("ours (tuned, ALS alone)", ours(data, fold, alone, k)[2])

    cold_start = cold_start_benchmark(data, k)
    if "skipped" in cold_start:
        log.warning("%s: cold-start benchmark skipped: %s", data.name, cold_start["skipped"])
    sweep = diversity_sweep(data, k)

    diagnostics: dict[str, Any] = {}
    if data.item_genre is not None and data.true_taste is not None:
        record("genre-aware popularity (diagnostic)", genre_popularity(data, fold, k, oracle=False))
        correlation = taste_matches_plays(data)
        diagnostics["true_taste_vs_played_genres_correlation"] = correlation
        if correlation > 0.5:
            record("oracle: true taste x popularity", genre_popularity(data, fold, k, oracle=True))
        else:
            log.warning("rebuilt tastes do not match the plays (r = %.2f): no oracle", correlation)

    # Confidence formulas: each at the project defaults and at its best alpha.
    formula_rows = []
    for formula in formulas:
        own = [t for t in trials if t["formula"] == formula and t["stage"] == "formula"]
        at_defaults = [t for t in own if t["params"] == asdict(ALSParams())]
        best_own = max(own, key=lambda t: t["validation_ndcg"])
        config = OursConfig(formula, ALSParams(**best_own["params"]))
        test_run = ours(data, fold, config, k)[2]
        formula_rows.append(
            {
                "formula": formula,
                "validation_ndcg_defaults": (
                    at_defaults[0]["validation_ndcg"] if at_defaults else float("nan")
                ),
                "best_alpha": best_own["params"]["alpha"],
                "validation_ndcg_best_alpha": best_own["validation_ndcg"],
                "test_ndcg_best_alpha": ndcg_at_k(test_run.recommended, fold.test_rows),
            }
        )

    def ratio(a: str, b: str) -> dict[str, Any]:
        low, high = _bootstrap_ratio(per_user[a], per_user[b])
        value = methods[a]["ndcg"] / methods[b]["ndcg"] if methods[b]["ndcg"] > 0 else math.nan
        return {"ratio": value, "ci95": [low, high]}

    ratios: dict[str, dict[str, Any]] = {}
    for variant in ("ours (defaults)", "ours (tuned)"):
        ratios[variant] = {
            "vs implicit ALS (defaults)": {
                **ratio(variant, "implicit ALS (defaults)"),
                "target": 1.05,
            },
            "vs Spark ALS (ListenBrainz)": {
                **ratio(variant, "Spark ALS (ListenBrainz)"),
                "target": 1.0,
            },
            "vs most popular": {**ratio(variant, "most popular"), "target": 1.5},
            "vs its own ALS alone": {
                **ratio(variant, variant.replace(")", ", ALS alone)")),
                "target": 1.0,
            },
            "vs implicit BM25 item-kNN": {
                **ratio(variant, "implicit BM25 item-kNN"),
                "target": None,
            },
            **{
                f"vs {peer}": {**ratio(variant, peer), "target": None}
                for peer in ("item-kNN cosine", "RP3beta", "EASE")
                if peer in methods
            },
        }
        peers = [name for name in methods if name in PEERS]
        capped = [f"{name}, artist cap 2" for name in peers]
        for label, among in (
            ("the best peer", peers),
            ("the best peer under the artist cap", capped),
        ):
            best_peer = max(among, key=lambda name: methods[name]["ndcg"])
            best_recall = max(among, key=lambda name: methods[name]["recall"])
            ratios[variant][f"vs {label} ({best_peer})"] = {
                **ratio(variant, best_peer),
                "recall_ratio": methods[variant]["recall"]
                / max(methods[best_recall]["recall"], 1e-12),
                "recall_peer": best_recall,
                "target": 1.1,
            }
        if "oracle: true taste x popularity" in methods:
            ratios[variant]["vs oracle (ceiling)"] = {
                **ratio(variant, "oracle: true taste x popularity"),
                "target": None,
            }
        uncapped = methods[variant.replace(")", ", no re-ranking)")]["ndcg"]
        ratios[variant]["cap + MMR NDCG loss vs no re-ranking"] = {
            "loss": 1.0 - methods[variant]["ndcg"] / uncapped,
            "target_max": 0.05,
        }
    if "oracle: true taste x popularity" in methods:
        diagnostics["oracle_vs_most_popular"] = ratio(
            "oracle: true taste x popularity", "most popular"
        )
    return {
        "dataset": data.summary(),
        "k": k,
        "methods": methods,
        "ratios": ratios,
        "diagnostics": diagnostics,
        "formulas": formula_rows,
        "cold_start": cold_start,
        "diversity_sweep": sweep,
        "search": {
            "space": {"formula": formulas, **{n: asdict(r) for n, r in SEARCH_SPACE.items()}},
            "formula_stage_alphas": formula_alphas,
            "random_trials": n_random,
            "seed": SEARCH_SEED,
            "trials": trials,
            "seconds": round(search_seconds, 1),
            "selected_on": f"NDCG@{k} of the capped playlist on the validation fold",
            "best": best,
        },
        "spark_session_start_seconds": round(spark.start_seconds, 1),
    }


# ------------------------------------------------------------------------------ reports


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _ratio_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(ours variant, comparison, value, 95 % interval, target, verdict) for every ratio."""
    rows = []
    for variant, comparisons in result["ratios"].items():
        for label, entry in comparisons.items():
            if "loss" in entry:
                met = entry["loss"] <= entry["target_max"]
                rows.append(
                    (
                        variant,
                        label,
                        f"{entry['loss'] * 100:.1f} %",
                        "",
                        f"<= {entry['target_max'] * 100:.0f} %",
                        "met" if met else "MISSED",
                    )
                )
            else:
                target = entry["target"]
                verdict = (
                    "" if target is None else ("met" if entry["ratio"] >= target else "MISSED")
                )
                rows.append(
                    (
                        variant,
                        f"NDCG {label}",
                        f"{entry['ratio']:.3f}",
                        f"{entry['ci95'][0]:.3f}-{entry['ci95'][1]:.3f}",
                        "" if target is None else f">= {target}",
                        verdict,
                    )
                )
                if "recall_ratio" in entry:
                    recall_met = entry["recall_ratio"] >= target
                    rows.append(
                        (
                            variant,
                            f"Recall vs {label.removeprefix('vs ').split(' (')[0]} "
                            f"({entry['recall_peer']})",
                            f"{entry['recall_ratio']:.3f}",
                            "",
                            f">= {target}",
                            "met" if recall_met else "MISSED",
                        )
                    )
    return rows


def markdown_report(results: dict[str, Any], header: dict[str, Any]) -> str:
    lines = [
        "# Playlist quality benchmark",
        "",
        f"`python benchmarks/quality.py {header['arguments']}` on {header['machine']}: "
        f"{header['total_seconds']:.0f} s in all. Every number below comes from that one run.",
        "",
        "Conventions (recsys/evaluation.py): recall@K = hits / min(K, test items); "
        "precision@K = hits / K; NDCG@K binary, ideal DCG over min(K, test items); "
        "novelty = mean -log2((listeners + 1) / (users + 1)) of recommended items; Gini of "
        "recommendation counts over all items; cold recall = recall on test items nobody had "
        "in training. Every method excludes every item the listener had in training.",
        "",
    ]
    for name, result in results.items():
        k = result["k"]
        summary = result["dataset"]
        test = summary["test"]
        lines += [
            f"## {name}",
            "",
            f"{summary['users']} listeners x {summary['items']} items. Test fold: "
            f"{test['cutoff']}; {test['train_pairs']} training pairs, "
            f"{test['eval_users']} listeners evaluated on {test['eval_test_pairs']} test pairs "
            f"({test['cold_items']} test items nobody had in training). Metrics at K = {k}; "
            f"{result['seconds']:.0f} s for this data set.",
            "",
            "| method | "
            + " | ".join(label for _, label in METRIC_COLUMNS)
            + " | fit s | recommend s |",
            "|---|" + "---:|" * (len(METRIC_COLUMNS) + 2),
        ]
        for method, metrics in result["methods"].items():
            cells = [
                _fmt(metrics[key], 4 if key in ("ndcg", "recall", "precision", "map") else 3)
                for key, _ in METRIC_COLUMNS
            ]
            lines.append(
                f"| {method} | "
                + " | ".join(cells)
                + f" | {metrics['fit_seconds']:.1f} | {metrics['recommend_seconds']:.1f} |"
            )
        lines += [
            "",
            f"Ratios of NDCG@{k}, with 95 % paired bootstrap intervals over listeners:",
            "",
            "| ours | comparison | value | 95 % interval | target | verdict |",
            "|---|---|---:|---|---|---|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in _ratio_rows(result)]
        lines += [
            "",
            f"Confidence formulas for ours (validation fold, project defaults factors "
            f"{ALSParams().factors} and regularization {ALSParams().regularization}; test "
            f"NDCG@{k} at the formula's best validation alpha):",
            "",
            f"| formula | val NDCG, alpha {ALSParams().alpha:g} | best alpha | "
            "val NDCG, best alpha | test NDCG |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in result["formulas"]:
            lines.append(
                f"| {row['formula']} | {_fmt(row['validation_ndcg_defaults'])} | "
                f"{row['best_alpha']:g} | {row['validation_ndcg_best_alpha']:.4f} | "
                f"{row['test_ndcg_best_alpha']:.4f} |"
            )
        search = result["search"]
        best = search["best"]
        lines += [
            "",
            f"Tuning: {len(search['trials'])} trials on the validation fold in "
            f"{search['seconds']:.0f} s (seed {search['seed']}); selected "
            f"{_config_of(best).label()} (validation NDCG@{k} {best['validation_ndcg']:.4f}).",
            "",
        ]
        lines += _cold_start_lines(result["cold_start"], k)
        lines += [
            f"Re-ranking sweep (ours, default parameters; NDCG loss against the same model "
            f"without re-ranking; shipped: MMR {shipped_rules(k).diversity}, popularity "
            f"penalty {shipped_rules(k).popularity_penalty}):",
            "",
            "| re-ranking | NDCG | loss | Artists/list | Top artist share | Novelty | Coverage |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for point in result["diversity_sweep"]:
            lines.append(
                f"| {point['label']} | {point['ndcg']:.4f} | {point['ndcg_loss'] * 100:.1f} % | "
                f"{point['artists_per_list']:.2f} | {point['top_artist_share']:.3f} | "
                f"{point['novelty']:.3f} | {point['coverage']:.3f} |"
            )
        lines.append("")
        if result["diagnostics"]:
            lines += ["Diagnostics: " + json.dumps(result["diagnostics"]), ""]
        lines += ["Method details:", ""]
        for method, metrics in result["methods"].items():
            if metrics["note"]:
                lines.append(f"* {method}: {metrics['note']}")
        lines.append("")
    return "\n".join(lines)


def _cold_start_lines(cold: dict[str, Any], k: int) -> list[str]:
    """The report's cold-start paragraph and table, or why the benchmark was skipped."""
    if "skipped" in cold:
        return [f"Cold start: skipped: {cold['skipped']}.", ""]
    recall = cold["recall"]
    return [
        f"Cold start: {cold['held_out_items']} items ({COLD_FRACTION:.0%} of the items that "
        f"are test items of an evaluated listener and have content) held out entirely "
        f"from training, factors projected from {cold['content']}; cold recall@{k} over "
        f"the {cold['listeners']} listeners with a held-out test item, ranking only the "
        "held-out items:",
        "",
        "| ranking of the held-out items | cold recall | vs random | target |",
        "|---|---:|---:|---|",
        f"| projected factors (ours) | {recall['projected factors']:.4f} | "
        f"{recall['projected factors'] / recall['random']:.2f}x | >= 2x random, > tag "
        f"popularity: {_cold_verdict(cold)} |",
        f"| random order (seeded) | {recall['random']:.4f} | 1.00x | |",
        f"| tag popularity | {recall['tag popularity']:.4f} | "
        f"{recall['tag popularity'] / recall['random']:.2f}x | |",
        "",
    ]


def _cold_verdict(cold: dict[str, Any]) -> str:
    recall = cold["recall"]
    met = (
        recall["projected factors"] >= 2 * recall["random"]
        and recall["projected factors"] > recall["tag popularity"]
    )
    return "met" if met else "MISSED"


def plot_sweep(results: dict[str, Any], path: Path) -> None:
    """NDCG@k against three diversity measures as the re-ranking knobs move."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = (
        ("artists_per_list", "distinct artists per list"),
        ("top_artist_share", "largest share of one artist"),
        ("novelty", "novelty (bits)"),
    )
    names = list(results)
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 4.4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        points = results[name]["diversity_sweep"]
        shipped = shipped_rules(results[name]["k"])
        for col, (key, label) in enumerate(measures):
            ax = axes[row][col]
            for kind, color in (("mmr", "tab:orange"), ("penalty", "tab:blue")):
                chosen = [
                    p
                    for p in points
                    if p["cap"] < results[name]["k"]
                    and (
                        (kind == "mmr" and p["popularity_penalty"] == 0.0)
                        or (kind == "penalty" and p["diversity"] == 0.0)
                    )
                ]
                chosen.sort(key=lambda p: p["diversity"] + p["popularity_penalty"])
                ax.plot(
                    [p[key] for p in chosen],
                    [p["ndcg"] for p in chosen],
                    "o-",
                    color=color,
                    label="MMR lambda 0..0.7" if kind == "mmr" else "popularity penalty 0..0.5",
                )
            for p in points:
                is_shipped = (
                    p["cap"] < results[name]["k"]
                    and p["diversity"] == shipped.diversity
                    and p["popularity_penalty"] == shipped.popularity_penalty
                )
                if p["cap"] >= results[name]["k"] or is_shipped:
                    ax.scatter(
                        p[key],
                        p["ndcg"],
                        s=90,
                        marker="*",
                        color="black" if is_shipped else "tab:gray",
                        zorder=3,
                    )
                    ax.annotate(
                        "shipped" if is_shipped else "no re-ranking",
                        (p[key], p["ndcg"]),
                        fontsize=7,
                        xytext=(4, 4),
                        textcoords="offset points",
                    )
            reference = points[0]["ndcg"]
            ax.axhline(
                0.95 * reference, color="tab:red", linestyle=":", linewidth=1, label="-5 % NDCG"
            )
            ax.set_xlabel(label)
            ax.set_ylabel(f"NDCG@{results[name]['k']}")
            ax.set_title(f"{name}: NDCG vs {label}", fontsize=9)
            if col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(len(names), 2, figsize=(14, 4.6 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        methods = results[name]["methods"]
        labels = list(methods)
        colors = [
            "tab:orange"
            if m.startswith("ours")
            else ("tab:blue" if "diagnostic" in m or m.startswith("oracle") else "tab:gray")
            for m in labels
        ]
        k = results[name]["k"]
        ax = axes[row][0]
        y = np.arange(len(labels))
        values = [methods[m]["ndcg"] for m in labels]
        ax.barh(y, values, color=colors)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"NDCG@{k} on the test fold")
        ax.set_title(f"{name}: ranking quality (orange: ours, blue: diagnostics)")
        for i, value in enumerate(values):
            ax.text(value, i, f" {value:.3f}", va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.18)
        ax = axes[row][1]
        for m, color in zip(labels, colors, strict=True):
            if m.endswith("no re-ranking)"):
                continue  # on top of its capped twin
            ax.scatter(methods[m]["coverage"], methods[m]["recall"], color=color)
            ax.annotate(
                m,
                (methods[m]["coverage"], methods[m]["recall"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel("catalogue coverage (log scale)")
        ax.set_ylabel(f"Recall@{k}")
        ax.set_title(f"{name}: accuracy vs catalogue coverage")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(name: str, result: dict[str, Any]) -> None:
    k = result["k"]
    print(f"\n=== {name}: K = {k}, {result['dataset']['test']['eval_users']} listeners ===")
    heading = ["NDCG", "Recall", "Prec", "MAP", "Cover", "Art/l", "TopArt", "Novel", "Gini"]
    print(f"{'method':38s}" + "".join(f"{h:>8s}" for h in [*heading, "Cold", "fit s", "rec s"]))
    for method, m in result["methods"].items():
        cells = [
            _fmt(m[key], 4 if key in ("ndcg", "recall", "precision", "map") else 3)
            for key, _ in METRIC_COLUMNS
        ]
        print(
            f"{method:38s}"
            + "".join(f"{c:>8s}" for c in cells)
            + f"{m['fit_seconds']:8.1f}{m['recommend_seconds']:8.1f}"
        )
    for variant, label, value, interval, target, verdict in _ratio_rows(result):
        extra = f" [{interval}]" if interval else ""
        goal = f" (target {target}: {verdict})" if target else ""
        print(f"  {variant} {label}: {value}{extra}{goal}")
    for row in result["formulas"]:
        print(
            f"  formula {row['formula']:18s} val NDCG at default alpha "
            f"{_fmt(row['validation_ndcg_defaults'])}, best alpha {row['best_alpha']:g}: "
            f"val {row['validation_ndcg_best_alpha']:.4f}, test {row['test_ndcg_best_alpha']:.4f}"
        )
    best = result["search"]["best"]
    print(
        f"  tuned on validation: {_config_of(best).label()} "
        f"(val NDCG {best['validation_ndcg']:.4f})"
    )
    cold = result["cold_start"]
    if "skipped" in cold:
        print(f"  cold start: skipped: {cold['skipped']}")
    else:
        print(
            f"  cold start ({cold['held_out_items']} held-out items): {cold['recall']} "
            f"(target >= 2x random and > tag popularity: {_cold_verdict(cold)})"
        )
    for point in result["diversity_sweep"]:
        print(
            f"  sweep {point['label']:34s} NDCG {point['ndcg']:.4f} "
            f"(loss {point['ndcg_loss'] * 100:.1f} %), artists/list "
            f"{point['artists_per_list']:.2f}, top artist share {point['top_artist_share']:.3f}, "
            f"novelty {point['novelty']:.3f}"
        )
    if result["diagnostics"]:
        print(f"  diagnostics: {json.dumps(result['diagnostics'])}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        choices=list(DATASET_GROUPS),
        default="both",
        help="one data set, 'both' (hetrec and simulated), 'real' (every real set) or 'all'",
    )
    parser.add_argument("--k", type=int, default=50, help="playlist length and metric cut-off")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--quick", action="store_true", help="smaller simulated world, fewer tuning trials"
    )
    for name, (_, default) in REAL_LOADERS.items():
        parser.add_argument(f"--{name}", type=Path, default=default, help=f"{name} folder")
    parser.add_argument("--trials", type=int, default=None, help="random search trials")
    parser.add_argument("--seed", type=int, default=42, help="seed of the baselines' models")
    return parser


def _load(name: str, args: argparse.Namespace) -> BenchmarkDataset:
    if name == "simulated" and args.quick:
        return load_dataset(name, users=1000, tracks=8000)
    return load_dataset(name, getattr(args, name, None))


def _tuned_params(results: dict[str, Any]) -> dict[str, Any]:
    """What ``tuned_params.json`` holds: the selected trial of every data set."""
    return {
        name: {
            "formula": result["search"]["best"]["formula"],
            "params": result["search"]["best"]["params"],
            "blend": result["search"]["best"]["blend"],
            "confidence": result["search"]["best"].get("confidence"),
            "validation_ndcg": result["search"]["best"]["validation_ndcg"],
            "test_ndcg": result["methods"]["ours (tuned)"]["ndcg"],
            "selected_on": result["search"]["selected_on"],
            "search_space": result["search"]["space"],
            "formula_stage_alphas": result["search"]["formula_stage_alphas"],
            "random_trials": result["search"]["random_trials"],
            "search_seed": result["search"]["seed"],
            "trials": len(result["search"]["trials"]),
        }
        for name, result in results.items()
    }


def write_outputs(results: dict[str, Any], header: dict[str, Any], out: Path, suffix: str) -> None:
    """Write the report, the results and the tuned parameters, then the figures (skipped,
    with one line saying so, when matplotlib is not installed: it is in the ``bench``
    extra)."""
    (out / f"quality{suffix}.json").write_text(
        json.dumps({"run": header, "results": results}, indent=2, default=str)
    )
    (out / f"quality{suffix}.md").write_text(markdown_report(results, header))
    (out / f"tuned_params{suffix}.json").write_text(
        json.dumps(_tuned_params(results), indent=2) + "\n"
    )
    print(f"wrote {out}/quality{suffix}.{{md,json}} and tuned_params{suffix}.json")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plots skipped: matplotlib is not installed (pip install -e '.[bench]')")
        return
    plot(results, out / f"quality{suffix}.png")
    plot_sweep(results, out / f"quality-diversity{suffix}.png")
    print(f"wrote {out}/quality{suffix}.png and quality-diversity{suffix}.png")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("recsys").setLevel(logging.WARNING)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    n_random = args.trials if args.trials is not None else (3 if args.quick else 16)
    formula_alphas: list[float] = [10.0] if args.quick else FORMULA_ALPHAS
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    spark = SparkALS()
    results: dict[str, Any] = {}
    try:
        for name in DATASET_GROUPS[args.dataset]:
            loaded = time.perf_counter()
            data = _load(name, args)
            log.info(
                "loaded %s in %.1f s: %s",
                name,
                time.perf_counter() - loaded,
                json.dumps(data.summary(), default=str),
            )
            results[name] = run_dataset(
                data,
                spark,
                args.k,
                formula_alphas=formula_alphas,
                n_random=n_random,
                seed=args.seed,
            )
            results[name]["seconds"] = round(time.perf_counter() - loaded, 1)
    finally:
        spark.stop()
    total = time.perf_counter() - started

    header = {
        "arguments": " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "total_seconds": total,
    }
    for name, result in results.items():
        print_summary(name, result)
    print(f"\ntotal {total:.0f} s")
    write_outputs(results, header, args.out, "-quick" if args.quick else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Holdout evaluation for the validation gate.

The week's model is judged the way the product is used: a model of the same kind is trained
on the pairs a listener first met before ``week start - gate_holdout_days``, and must rank
the tracks each listener discovered (first played positively) in those last days. Its
playlists are built by the product's own pipeline (:func:`jobs.generation.pipeline_for`:
cold-start slots from the same content, the same re-ranking and artist cap). The same split
scores the most-popular baseline (artist-capped top tracks). The published model of an
earlier week brought its own holdout metrics, recorded when it passed the gate.

The holdout model learns the held-out pairs' confidence as aggregated at the week's cut-off
(counts are not split by time); only pairs first met before the holdout cut-off enter it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from recsys.contract import week_cutoff
from recsys.db import repository
from recsys.evaluation import ndcg_at_k, recall_at_k
from recsys.gate import GateDecision, GateThresholds, decide
from recsys.settings import Settings

log = logging.getLogger(__name__)


def holdout_metrics(
    settings: Settings, week_start: dt.date, aggregation: str | None = None
) -> dict[str, Any]:
    """NDCG@K and recall@K of the week's model kind and of popularity on the holdout of the
    week's aggregation ``aggregation`` (default: its newest)."""
    from jobs.generation import playlist_rules
    from jobs.quality import popular_lists, shipped_lists, week_split
    from jobs.training import als_params

    split = week_split(
        settings, week_start, holdout_days=settings.gate_holdout_days, aggregation=aggregation
    )
    holdout_cutoff = week_cutoff(week_start) - dt.timedelta(days=settings.gate_holdout_days)
    result: dict[str, Any] = {
        "holdout_cutoff": holdout_cutoff.isoformat(),
        "holdout_listeners": len(split.eval_users),
    }
    if len(split.eval_users) == 0 or split.train.nnz == 0:
        return result
    rules = playlist_rules(settings)
    k = settings.playlist_length
    truth = split.test_rows
    recommended = {
        "model": shipped_lists(settings, week_start, split, als_params(settings))[1],
        "popular": popular_lists(split, rules),
    }
    for name, columns in recommended.items():
        result[name] = {
            f"ndcg@{k}": ndcg_at_k(columns, truth),
            f"recall@{k}": recall_at_k(columns, truth),
        }
    return result


def evaluate_for_gate(
    settings: Settings, week_start: dt.date, version: str, aggregation: str | None = None
) -> tuple[GateDecision, dict[str, Any]]:
    """The gate's decision for the week's model and the metrics it was based on."""
    from jobs.db import sessions

    metrics = holdout_metrics(settings, week_start, aggregation)
    if "model" not in metrics:
        decision = GateDecision(True, "no holdout listeners: nothing to compare, published")
        return decision, metrics
    thresholds = GateThresholds(
        metric=f"ndcg@{settings.playlist_length}",
        min_vs_popular=settings.gate_min_vs_popular,
        min_vs_previous=settings.gate_min_vs_previous,
    )
    with sessions(settings)() as session:
        previous = repository.published_model_before(session, week_start)
        previous_metrics = (previous.metrics or {}).get("model") if previous is not None else None
    decision = decide(metrics["model"], metrics["popular"], previous_metrics, thresholds)
    log.info("gate for %s: %s", version, decision.reason)
    return decision, metrics

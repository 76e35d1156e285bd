"""The validation gate: publish a model only if it beats popularity and keeps up with the
previously published model on a recent holdout."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateThresholds:
    """A candidate's ``metric`` must reach ``min_vs_popular`` times the popularity
    baseline's and ``min_vs_previous`` times the previous published model's."""

    metric: str = "ndcg@50"
    min_vs_popular: float = 1.0
    min_vs_previous: float = 0.9

    def __post_init__(self) -> None:
        if self.min_vs_popular < 0 or self.min_vs_previous < 0:
            raise ValueError("gate thresholds must be >= 0")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def decide(
    candidate: dict[str, float],
    popular: dict[str, float],
    previous: dict[str, float] | None,
    thresholds: GateThresholds,
) -> GateDecision:
    """Compare the candidate's holdout metrics with the baselines'.

    Parameters
    ----------
    candidate, popular : dict
        Holdout metrics of the new model and of the most-popular baseline on the same split.
    previous : dict or None
        Holdout metrics recorded for the previously published model (its own week's
        holdout), or None for the first model.

    Raises
    ------
    ValueError
        If ``thresholds.metric`` is missing from ``candidate`` or ``popular``.
    """
    name = thresholds.metric
    for label, metrics in (("candidate", candidate), ("popular", popular)):
        if name not in metrics:
            raise ValueError(f"{label} metrics lack {name!r}")
    value, baseline = candidate[name], popular[name]
    if value < thresholds.min_vs_popular * baseline:
        return GateDecision(
            False,
            f"{name} {value:.4f} is below {thresholds.min_vs_popular:g} x the popularity "
            f"baseline's {baseline:.4f}",
        )
    if previous is not None and name in previous:
        before = previous[name]
        if value < thresholds.min_vs_previous * before:
            return GateDecision(
                False,
                f"{name} {value:.4f} is below {thresholds.min_vs_previous:g} x the previous "
                f"published model's {before:.4f}",
            )
        return GateDecision(
            True,
            f"{name} {value:.4f}: popularity {baseline:.4f}, previous model {before:.4f}",
        )
    return GateDecision(True, f"{name} {value:.4f}: popularity {baseline:.4f}, no previous model")

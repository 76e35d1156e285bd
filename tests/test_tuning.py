"""The seeded Optuna search (TPE, pruning, budget) and which ALS parameters the weekly run
trains with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from jobs.training import ResolvedParams
from jobs.week import PlaylistPolicy, Storage
from recsys.als import ALSModel, ALSParams
from recsys.contract import ConfidenceParams
from recsys.matrix import PairCounts
from recsys.pipeline import PlaylistPipeline
from recsys.playlist import PlaylistRules
from recsys.settings import Settings
from recsys.tuning import (
    CONFIDENCE_SPACE,
    RERANK_DIVERSITY,
    RERANK_PENALTY,
    SEARCH_SPACE,
    Candidate,
    Choice,
    ListQuality,
    Range,
    RerankKnobs,
    Trial,
    TunedParams,
    best_trial,
    chosen_rerank,
    load_tuned_params,
    playlist_ndcg_objective,
    rerank_search,
    save_tuned_params,
    search,
)

SMALL_SPACE = {
    "factors": Range(2, 64, integer=True),
    "regularization": Range(0.01, 10.0),
    "alpha": Range(1.0, 40.0),
    "iterations": Range(5, 5, log=False, integer=True),
}


def _known(params: ALSParams) -> float:
    """A known objective: best at many factors, little regularization, high alpha."""
    return float(np.log2(params.factors) + params.alpha / 100 - params.regularization)


def _score(candidate: Candidate, report: object = None) -> float:
    return _known(candidate.als)


def test_search_is_seeded_and_starts_with_the_given_configurations() -> None:
    start = ALSParams(factors=2, regularization=1.0, alpha=1.0, iterations=5)
    first = search(_score, trials=10, seed=3, space=SMALL_SPACE, start=[Candidate(start)])
    again = search(_score, trials=10, seed=3, space=SMALL_SPACE, start=[Candidate(start)])
    other = search(_score, trials=10, seed=4, space=SMALL_SPACE, start=[Candidate(start)])
    assert [t.params for t in first] == [t.params for t in again]
    assert [t.params for t in first] != [t.params for t in other]
    assert first[0].params == start and first[0].stage == "start"
    assert len(first) == 11 and {t.stage for t in first[1:]} == {"search"}
    assert [t.score for t in first] == [_known(t.params) for t in first]
    for trial in first:  # within the space, the integer ones whole
        assert 2 <= trial.params.factors <= 64 and trial.params.iterations == 5
        assert 0.01 <= trial.params.regularization <= 10.0 and 1.0 <= trial.params.alpha <= 40.0


def test_tpe_finds_better_configurations_than_it_starts_from() -> None:
    start = ALSParams(factors=2, regularization=5.0, alpha=1.0, iterations=5)
    trials = search(_score, trials=40, seed=1, space=SMALL_SPACE, start=[Candidate(start)])
    best = best_trial(trials)
    assert best.score > trials[0].score + 4  # log2(factors) grew by 4 or regularization fell
    # The second half of the search (TPE's model at work) beats its random start-up draws.
    assert np.median([t.score for t in trials[21:]]) > np.median([t.score for t in trials[1:9]])


def test_fixed_parameters_stay_as_the_first_start_sets_them() -> None:
    start = ALSParams(factors=48, regularization=1.0, alpha=7.0, iterations=5)
    trials = search(
        _score, trials=8, space=SMALL_SPACE, start=[Candidate(start)], fixed=["factors"]
    )
    assert {t.params.factors for t in trials} == {48}
    assert len({t.params.alpha for t in trials}) > 1
    with pytest.raises(ValueError, match="unknown parameter"):
        search(_score, trials=1, space=SMALL_SPACE, fixed=["learning_rate"])


def test_the_budget_stops_the_search_between_trials() -> None:
    import time

    def slow(candidate: Candidate, report: object) -> float:
        time.sleep(0.3)
        return _score(candidate)

    trials = search(slow, trials=100, budget_s=0.5, space=SMALL_SPACE)
    assert 1 <= len(trials) <= 3


def test_trials_that_trail_at_their_checkpoint_are_pruned_and_failures_kept() -> None:
    seen: list[Trial] = []

    def objective(candidate: Candidate, report) -> float:  # type: ignore[no-untyped-def]
        params = candidate.als
        if params.alpha > 35:
            raise ValueError("diverged")
        report(1, _known(params))  # the checkpoint: a trailing trial stops here
        return _known(params) + 1.0

    trials = search(objective, trials=30, seed=2, space=SMALL_SPACE, on_trial=seen.append)
    assert seen == trials
    states = {t.state for t in trials}
    assert {"complete", "pruned"} <= states
    for trial in trials:
        if trial.state == "pruned":  # scored at the checkpoint only
            assert trial.score == _known(trial.params)
        elif trial.state == "failed":
            assert np.isnan(trial.score) and trial.params.alpha > 35
        else:
            assert trial.score == _known(trial.params) + 1.0
    assert best_trial(trials).state == "complete"


def test_best_trial_prefers_the_earliest_of_equal_complete_scores() -> None:
    a, b, c = ALSParams(factors=2), ALSParams(factors=4), ALSParams(factors=8)
    trials = [Trial(a, 0.5, 0.0, "start"), Trial(b, 0.5, 0.0), Trial(c, 0.9, 0.0, state="pruned")]
    assert best_trial(trials).params == a
    with pytest.raises(ValueError, match="no complete trial"):
        best_trial([])


def _two_groups() -> tuple[PairCounts, sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """40 listeners in two groups of 20 tracks; each listener's last 3 group tracks are
    held out. A model that learns the groups ranks them first."""
    rng = np.random.default_rng(0)
    rows, cols, test_rows, test_cols = [], [], [], []
    for user in range(40):
        group = user % 2
        tracks = rng.permutation(20) + 20 * group
        rows += [user] * 10
        cols += tracks[:10].tolist()
        test_rows += [user] * 3
        test_cols += tracks[10:13].tolist()
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(40, 40))
    test = sp.csr_matrix(
        (np.ones(len(test_rows), np.float32), (test_rows, test_cols)), shape=(40, 40)
    )
    train.sort_indices()
    entry_rows, entry_cols = train.nonzero()
    pairs = PairCounts(
        np.array([f"u{i:02d}" for i in range(40)]),
        np.array([f"t{i:02d}" for i in range(40)]),
        entry_rows.astype(np.int64),
        entry_cols.astype(np.int64),
        completed=np.ones(len(entry_rows)),
        skips=np.zeros(len(entry_rows)),
        thumb=np.zeros(len(entry_rows), dtype=np.int8),
        age_days=np.zeros(len(entry_rows)),
    )
    return pairs, train, test, np.arange(40, dtype=np.int64)


def test_the_playlist_objective_rewards_a_model_that_learns_the_groups() -> None:
    pairs, known, test, users = _two_groups()
    listeners = np.asarray((known > 0).sum(axis=0), dtype=np.int64).ravel()

    def pipeline_of(model: ALSModel) -> PlaylistPipeline:
        return PlaylistPipeline(PlaylistRules(length=5), model, np.arange(40), listeners)

    objective = playlist_ndcg_objective(pairs, known, test, users, pipeline_of)
    halfway: list[tuple[int, float]] = []

    def report(step: int, value: float) -> None:
        halfway.append((step, value))

    learns = objective(
        Candidate(ALSParams(factors=4, regularization=0.01, alpha=10.0, iterations=10)), report
    )
    assert [step for step, _ in halfway] == [5] and 0.0 < halfway[0][1] <= 1.0
    flattened = objective(
        Candidate(ALSParams(factors=2, regularization=100.0, alpha=0.01, iterations=1)), report
    )
    assert len(halfway) == 1  # one iteration: no checkpoint
    assert 0.0 <= flattened < learns <= 1.0
    # Within its group a listener has 3 held-out tracks among 10 unheard ones, against
    # 3 among 30 for a model that ranks every unheard track alike.
    assert learns > 1.5 * flattened and learns > 0.3
    with pytest.raises(ValueError, match="test_rows has shape"):
        playlist_ndcg_objective(pairs, known, test[:10], users, pipeline_of)


# -------------------------------------------------------------------- tuned parameters


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]


def _save(tmp_path: Path, params: ALSParams) -> Path:
    tuned = TunedParams(params, 0.3, 0.25, "ndcg@50", {"week_start": "2026-11-16"})
    return save_tuned_params(Storage.of(_settings(tmp_path)).tuned_params, tuned)


def test_tuned_parameters_round_trip_and_a_bad_file_names_itself(tmp_path: Path) -> None:
    params = ALSParams(factors=16, regularization=0.1, alpha=20.0, iterations=15)
    path = _save(tmp_path, params)
    loaded = load_tuned_params(path)
    assert loaded.params == params and loaded.score == 0.3 and loaded.default_score == 0.25
    assert loaded.details["week_start"] == "2026-11-16"
    for text in ("{not json", json.dumps({"params": {"factors": 0}, "score": 1}), "[]"):
        path.write_text(text)
        with pytest.raises(ValueError, match=r"tuned_params\.json does not hold"):
            load_tuned_params(path)


def test_without_a_file_the_settings_defaults_train(tmp_path: Path) -> None:
    resolved = ResolvedParams.of(_settings(tmp_path))
    defaults = Settings.model_fields
    assert resolved.params.factors == defaults["als_factors"].default
    assert resolved.params.alpha == defaults["als_alpha"].default
    assert set(resolved.sources.values()) == {"default"} and resolved.tuned_file is None


def test_the_tuned_file_fills_what_the_environment_does_not_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(tmp_path, ALSParams(factors=16, regularization=0.1, alpha=20.0, iterations=7))
    tuned = ResolvedParams.of(_settings(tmp_path))
    assert (tuned.params.factors, tuned.params.alpha, tuned.params.iterations) == (16, 20.0, 7)
    assert tuned.sources["factors"] == "tuned" and tuned.tuned_file == str(path)
    assert tuned.sources["random_seed"] == "default"

    monkeypatch.setenv("CRATEDIGGER_ALS_FACTORS", "48")
    mixed = ResolvedParams.of(Settings(data_dir=tmp_path))
    assert (mixed.params.factors, mixed.params.alpha) == (48, 20.0)
    assert mixed.sources["factors"] == "environment" and mixed.sources["alpha"] == "tuned"

    off = ResolvedParams.of(_settings(tmp_path, use_tuned_params=False, als_factors=48))
    assert off.tuned_file is None
    assert off.params.alpha == Settings.model_fields["als_alpha"].default


def test_a_corrupt_tuned_file_stops_the_run_instead_of_being_ignored(tmp_path: Path) -> None:
    Storage.of(_settings(tmp_path)).tuned_params.write_text("{}")
    with pytest.raises(ValueError, match=r"tuned_params\.json"):
        ResolvedParams.of(_settings(tmp_path))


def test_the_search_space_covers_the_shipped_defaults() -> None:
    defaults = ALSParams()
    for name, bounds in SEARCH_SPACE.items():
        value = Candidate().value(name)
        if isinstance(bounds, Choice):
            assert value in bounds.values, name
        else:
            assert bounds.low <= value <= bounds.high, name
    for name in CONFIDENCE_SPACE:
        assert Settings.model_fields[name].default == getattr(ConfidenceParams(), name)
    assert Settings.model_fields["als_factors"].default == defaults.factors
    assert Settings.model_fields["als_regularization"].default == defaults.regularization
    assert Settings.model_fields["als_alpha"].default == defaults.alpha


# ------------------------------------------------------------------ confidence weights


def _confidence_score(candidate: Candidate, report: object = None) -> float:
    """Best with linear confidence, skips weighing 0.6 and a 90-day half-life."""
    weights = candidate.confidence
    return (
        (1.0 if weights.confidence_scale == "linear" else 0.0)
        - abs(weights.skip_weight - 0.6)
        + (0.5 if weights.half_life_days == 90.0 else 0.0)
    )


def test_the_search_varies_the_confidence_shape_and_finds_the_better_one() -> None:
    space = {
        "confidence_scale": CONFIDENCE_SPACE["confidence_scale"],
        "skip_weight": CONFIDENCE_SPACE["skip_weight"],
        "half_life_days": CONFIDENCE_SPACE["half_life_days"],
    }
    trials = search(_confidence_score, trials=40, seed=5, space=space, start=[Candidate()])
    assert trials[0].confidence == ConfidenceParams()  # the defaults first, as they are
    seen = {t.confidence.confidence_scale for t in trials}
    assert seen == {"log", "linear"}
    assert {t.confidence.half_life_days for t in trials} <= set(space["half_life_days"].values)
    assert all(0.05 <= t.confidence.skip_weight <= 1.0 for t in trials)
    best = best_trial(trials)
    assert best.confidence.confidence_scale == "linear" and best.score > trials[0].score + 1.0
    assert all(t.params == ALSParams() for t in trials)  # ALS is not in this space
    payload = best.to_dict()["params"]["confidence"]
    assert payload["confidence_scale"] == "linear" and "skip_weight" in payload


def test_confidence_weights_set_in_the_environment_stay_fixed() -> None:
    start = Candidate(confidence=ConfidenceParams(skip_weight=0.3))
    trials = search(
        _confidence_score,
        trials=6,
        space=CONFIDENCE_SPACE,
        start=[start],
        fixed=["skip_weight", "confidence_scale"],
    )
    assert {t.confidence.skip_weight for t in trials} == {0.3}
    assert {t.confidence.confidence_scale for t in trials} == {"log"}
    assert len({t.confidence.thumb_up_boost for t in trials}) > 1


def test_the_objective_trains_on_the_candidates_confidence() -> None:
    pairs, known, test, users = _two_groups()
    listeners = np.asarray((known > 0).sum(axis=0), dtype=np.int64).ravel()
    matrices: list[str] = []

    def pipeline_of(model: ALSModel) -> PlaylistPipeline:
        matrices.append(model.fingerprint)
        return PlaylistPipeline(PlaylistRules(length=5), model, np.arange(40), listeners)

    objective = playlist_ndcg_objective(pairs, known, test, users, pipeline_of)
    als = ALSParams(factors=4, regularization=0.01, alpha=10.0, iterations=1)
    logs = objective(Candidate(als), lambda step, value: None)
    linear = objective(
        Candidate(als, ConfidenceParams(confidence_scale="linear")), lambda step, value: None
    )
    # One completed play: ln 2 under log, 1 under linear, so the models differ.
    assert pairs.matrix(ConfidenceParams()).user_items.data[0] == pytest.approx(np.log(2))
    assert pairs.matrix(ConfidenceParams(confidence_scale="linear")).user_items.data[0] == 1.0
    assert matrices[0] != matrices[1]  # the fingerprint covers the confidence values
    assert 0.0 <= logs <= 1.0 and 0.0 <= linear <= 1.0


def test_tuned_confidence_round_trips_and_fills_what_the_environment_does_not_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = ConfidenceParams(skip_weight=0.7, confidence_scale="linear", half_life_days=90.0)
    tuned = TunedParams(ALSParams(factors=16), 0.3, 0.25, "ndcg@50", confidence=weights)
    path = save_tuned_params(Storage.of(_settings(tmp_path)).tuned_params, tuned)
    assert load_tuned_params(path).confidence == weights
    resolved = ResolvedParams.of(_settings(tmp_path))
    assert resolved.confidence == weights and resolved.sources["half_life_days"] == "tuned"
    assert resolved.config.to_dict()["confidence"]["confidence_scale"] == "linear"

    monkeypatch.setenv("CRATEDIGGER_SKIP_WEIGHT", "0.1")
    mixed = ResolvedParams.of(Settings(data_dir=tmp_path))
    assert mixed.confidence.skip_weight == 0.1 and mixed.sources["skip_weight"] == "environment"
    assert mixed.confidence.half_life_days == 90.0

    # A file from before confidence was searched still loads: the settings' weights train.
    monkeypatch.delenv("CRATEDIGGER_SKIP_WEIGHT")
    path.write_text(json.dumps({"params": {"factors": 16}, "score": 0.3}))
    assert load_tuned_params(path).confidence is None
    assert ResolvedParams.of(_settings(tmp_path)).confidence == ConfidenceParams()


@pytest.mark.parametrize(
    "confidence",
    [
        {"skip_weight": 7.0},
        {"confidence_scale": "cubic"},
        {"half_life_days": -1},
        {"half_life_days": "soon"},
        {"learning_rate": 1},
        ["log"],
        {"skip_weight": float("nan")},
    ],
)
def test_a_tuned_file_with_bad_confidence_weights_names_itself(
    tmp_path: Path, confidence: object
) -> None:
    path = Storage.of(_settings(tmp_path)).tuned_params
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"params": {"factors": 16}, "score": 0.3, "confidence": confidence}))
    with pytest.raises(ValueError, match=r"tuned_params\.json does not hold"):
        load_tuned_params(path)


# ------------------------------------------------------------------ re-ranking knobs


def _quality(knobs: RerankKnobs) -> ListQuality:
    """Known lists: MMR buys diversity and costs accuracy, the penalty buys novelty and costs
    a little; only a penalty of 0.05 with MMR 0.3 (more diverse and as novel as the
    configured 0.2 / 0.1) is more accurate than them. MMR 0.4 is the most accurate of all,
    but below the configured novelty: outside the bound."""
    d, p = knobs.diversity, knobs.popularity_penalty
    ndcg = 0.5 - 0.1 * d - 0.2 * p + (0.05 if (d, p) in ((0.3, 0.05), (0.4, 0.0)) else 0.0)
    ndcg += 0.2 if (d, p) == (0.4, 0.0) else 0.0
    novelty = 10.0 + 10.0 * p + (1.0 if (d, p) == (0.3, 0.05) else 0.0)
    return ListQuality(ndcg, 0.5 + d, novelty)


def test_the_rerank_stage_takes_the_most_accurate_knobs_within_the_diversity_bound() -> None:
    start = RerankKnobs(0.2, 0.1)
    model = Trial(ALSParams(factors=8), 0.6, 1.0, "blend")
    seen: list[Trial] = []
    trials, chosen = rerank_search(_quality, start, model, on_trial=seen.append)
    assert seen == trials and trials[0].rerank == start and trials[0].state == "complete"
    assert len(trials) == len(RERANK_DIVERSITY) * len(RERANK_PENALTY)  # start is one of them
    assert all(t.stage == "rerank" and t.params == model.params for t in trials)
    by_knobs = {t.rerank: t for t in trials}
    assert by_knobs[RerankKnobs(0.4, 0.0)].state == "outside"  # accurate, not novel enough
    assert by_knobs[RerankKnobs(0.1, 0.2)].state == "outside"  # novel, not diverse enough
    assert chosen == RerankKnobs(0.3, 0.05) == chosen_rerank(trials)
    assert by_knobs[chosen].score > by_knobs[start].score
    assert trials[0].to_dict()["params"]["rerank"] == {"diversity": 0.2, "popularity_penalty": 0.1}
    # The model's best is never a re-ranking trial, even one that scores higher.
    assert best_trial([model, *trials]) is model


def test_the_configured_knobs_stay_when_nothing_within_the_bound_beats_them() -> None:
    def only_worse(knobs: RerankKnobs) -> ListQuality:
        better = knobs != RerankKnobs(0.2, 0.1)
        return ListQuality(0.6 if better else 0.5, 0.1 if better else 0.5, 10.0)

    model = Trial(ALSParams(), 0.6, 1.0)
    trials, chosen = rerank_search(only_worse, RerankKnobs(0.2, 0.1), model)
    assert chosen == RerankKnobs(0.2, 0.1)
    assert {t.state for t in trials[1:]} == {"outside"}
    # A deadline in the past: the configured knobs only.
    late, kept = rerank_search(_quality, RerankKnobs(0.2, 0.1), model, deadline=0.0)
    assert len(late) == 1 and kept == RerankKnobs(0.2, 0.1)


def test_tuned_rerank_knobs_set_the_policy_unless_the_environment_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    knobs = RerankKnobs(0.3, 0.05)
    tuned = TunedParams(ALSParams(), 0.3, 0.25, "ndcg@50", rerank=knobs)
    path = save_tuned_params(Storage.of(_settings(tmp_path)).tuned_params, tuned)
    assert load_tuned_params(path).rerank == knobs
    assert PlaylistPolicy.of(_settings(tmp_path)).rerank == knobs
    assert PlaylistPolicy.of(_settings(tmp_path, use_tuned_params=False)).rerank == RerankKnobs(
        0.2, 0.1
    )
    monkeypatch.setenv("CRATEDIGGER_MMR_DIVERSITY", "0.0")
    assert PlaylistPolicy.of(Settings(data_dir=tmp_path)).rerank == RerankKnobs(0.0, 0.05)
    assert PlaylistPolicy.of(Settings(data_dir=tmp_path)).rerank_bound is None  # not searched
    monkeypatch.delenv("CRATEDIGGER_MMR_DIVERSITY")
    # The bound is the configured knobs, never the tuned ones.
    assert PlaylistPolicy.of(Settings(data_dir=tmp_path)).rerank_bound == RerankKnobs(0.2, 0.1)


@pytest.mark.parametrize(
    "rerank",
    [
        {"diversity": 2.0, "popularity_penalty": 0.1},
        {"diversity": 0.2},
        {"diversity": "much", "popularity_penalty": 0.1},
        {"diversity": float("nan"), "popularity_penalty": 0.1},
        {"diversity": 0.2, "popularity_penalty": -1},
        [0.2, 0.1],
    ],
)
def test_a_tuned_file_with_bad_rerank_knobs_names_itself(tmp_path: Path, rerank: object) -> None:
    path = Storage.of(_settings(tmp_path)).tuned_params
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"params": {"factors": 16}, "score": 0.3, "rerank": rerank}))
    with pytest.raises(ValueError, match=r"tuned_params\.json does not hold"):
        load_tuned_params(path)

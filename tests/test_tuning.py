"""The seeded Optuna search (TPE, pruning, budget) and which ALS parameters the weekly run
trains with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from jobs.training import ResolvedParams
from jobs.week import Storage
from recsys.als import ALSModel, ALSParams
from recsys.matrix import InteractionMatrix
from recsys.pipeline import PlaylistPipeline
from recsys.playlist import PlaylistRules
from recsys.settings import Settings
from recsys.tuning import (
    SEARCH_SPACE,
    Range,
    Trial,
    TunedParams,
    best_trial,
    load_tuned_params,
    playlist_ndcg_objective,
    save_tuned_params,
    search,
)

SMALL_SPACE = {
    "factors": Range(2, 64, integer=True),
    "regularization": Range(0.01, 10.0),
    "alpha": Range(1.0, 40.0),
    "iterations": Range(5, 5, log=False, integer=True),
}


def _score(params: ALSParams, report: object = None) -> float:
    """A known objective: best at many factors, little regularization, high alpha."""
    return float(np.log2(params.factors) + params.alpha / 100 - params.regularization)


def test_search_is_seeded_and_starts_with_the_given_configurations() -> None:
    start = ALSParams(factors=2, regularization=1.0, alpha=1.0, iterations=5)
    first = search(_score, trials=10, seed=3, space=SMALL_SPACE, start=[start])
    again = search(_score, trials=10, seed=3, space=SMALL_SPACE, start=[start])
    other = search(_score, trials=10, seed=4, space=SMALL_SPACE, start=[start])
    assert [t.params for t in first] == [t.params for t in again]
    assert [t.params for t in first] != [t.params for t in other]
    assert first[0].params == start and first[0].stage == "start"
    assert len(first) == 11 and {t.stage for t in first[1:]} == {"search"}
    assert [t.score for t in first] == [_score(t.params) for t in first]
    for trial in first:  # within the space, the integer ones whole
        assert 2 <= trial.params.factors <= 64 and trial.params.iterations == 5
        assert 0.01 <= trial.params.regularization <= 10.0 and 1.0 <= trial.params.alpha <= 40.0


def test_tpe_finds_better_configurations_than_it_starts_from() -> None:
    start = ALSParams(factors=2, regularization=5.0, alpha=1.0, iterations=5)
    trials = search(_score, trials=40, seed=1, space=SMALL_SPACE, start=[start])
    best = best_trial(trials)
    assert best.score > trials[0].score + 4  # log2(factors) grew by 4 or regularization fell
    # The second half of the search (TPE's model at work) beats its random start-up draws.
    assert np.median([t.score for t in trials[21:]]) > np.median([t.score for t in trials[1:9]])


def test_fixed_parameters_stay_as_the_first_start_sets_them() -> None:
    start = ALSParams(factors=48, regularization=1.0, alpha=7.0, iterations=5)
    trials = search(_score, trials=8, space=SMALL_SPACE, start=[start], fixed=["factors"])
    assert {t.params.factors for t in trials} == {48}
    assert len({t.params.alpha for t in trials}) > 1
    with pytest.raises(ValueError, match="unknown parameter"):
        search(_score, trials=1, space=SMALL_SPACE, fixed=["learning_rate"])


def test_the_budget_stops_the_search_between_trials() -> None:
    import time

    def slow(params: ALSParams, report: object) -> float:
        time.sleep(0.3)
        return _score(params)

    trials = search(slow, trials=100, budget_s=0.5, space=SMALL_SPACE)
    assert 1 <= len(trials) <= 3


def test_trials_that_trail_at_their_checkpoint_are_pruned_and_failures_kept() -> None:
    seen: list[Trial] = []

    def objective(params: ALSParams, report) -> float:  # type: ignore[no-untyped-def]
        if params.alpha > 35:
            raise ValueError("diverged")
        report(1, _score(params))  # the checkpoint: a trailing trial stops here
        return _score(params) + 1.0

    trials = search(objective, trials=30, seed=2, space=SMALL_SPACE, on_trial=seen.append)
    assert seen == trials
    states = {t.state for t in trials}
    assert {"complete", "pruned"} <= states
    for trial in trials:
        if trial.state == "pruned":  # scored at the checkpoint only
            assert trial.score == _score(trial.params)
        elif trial.state == "failed":
            assert np.isnan(trial.score) and trial.params.alpha > 35
        else:
            assert trial.score == _score(trial.params) + 1.0
    assert best_trial(trials).state == "complete"


def test_best_trial_prefers_the_earliest_of_equal_complete_scores() -> None:
    a, b, c = ALSParams(factors=2), ALSParams(factors=4), ALSParams(factors=8)
    trials = [Trial(a, 0.5, 0.0, "start"), Trial(b, 0.5, 0.0), Trial(c, 0.9, 0.0, state="pruned")]
    assert best_trial(trials).params == a
    with pytest.raises(ValueError, match="no complete trial"):
        best_trial([])


def _two_groups() -> tuple[InteractionMatrix, sp.csr_matrix, sp.csr_matrix, np.ndarray]:
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
    matrix = InteractionMatrix(
        train,
        np.array([f"u{i:02d}" for i in range(40)]),
        np.array([f"t{i:02d}" for i in range(40)]),
    )
    return matrix, train, test, np.arange(40, dtype=np.int64)


def test_the_playlist_objective_rewards_a_model_that_learns_the_groups() -> None:
    matrix, known, test, users = _two_groups()
    listeners = np.asarray((known > 0).sum(axis=0), dtype=np.int64).ravel()

    def pipeline_of(model: ALSModel) -> PlaylistPipeline:
        return PlaylistPipeline(PlaylistRules(length=5), model, np.arange(40), listeners)

    objective = playlist_ndcg_objective(matrix, known, test, users, pipeline_of)
    halfway: list[tuple[int, float]] = []

    def report(step: int, value: float) -> None:
        halfway.append((step, value))

    learns = objective(ALSParams(factors=4, regularization=0.01, alpha=10.0, iterations=10), report)
    assert [step for step, _ in halfway] == [5] and 0.0 < halfway[0][1] <= 1.0
    flattened = objective(
        ALSParams(factors=2, regularization=100.0, alpha=0.01, iterations=1), report
    )
    assert len(halfway) == 1  # one iteration: no checkpoint
    assert 0.0 <= flattened < learns <= 1.0
    # Within its group a listener has 3 held-out tracks among 10 unheard ones, against
    # 3 among 30 for a model that ranks every unheard track alike.
    assert learns > 1.5 * flattened and learns > 0.3
    with pytest.raises(ValueError, match="test_rows has shape"):
        playlist_ndcg_objective(matrix, known, test[:10], users, pipeline_of)


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
        assert bounds.low <= getattr(defaults, name) <= bounds.high, name
    assert Settings.model_fields["als_factors"].default == defaults.factors
    assert Settings.model_fields["als_regularization"].default == defaults.regularization
    assert Settings.model_fields["als_alpha"].default == defaults.alpha

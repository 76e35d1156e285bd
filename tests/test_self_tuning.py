"""The weekly run's own parameter search (the ``tune`` step): when it runs, what it stores,
what it adopts, and that the train step then uses it."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

import numpy as np
import pytest
from sqlalchemy import select

from jobs.db import sessions
from jobs.quality import self_tune, week_split
from jobs.training import ResolvedParams
from jobs.week import PlaylistPolicy, Storage, Week
from jobs.weekly import start_run, step_train, step_tune, tuning_due
from migrations import upgrade
from recsys.als import ALSParams
from recsys.blend import BlendParams
from recsys.contract import ConfidenceParams
from recsys.db import repository
from recsys.db.models import ModelVersion, TuningRun, TuningTrial
from recsys.settings import Settings
from recsys.tuning import TunedParams, load_tuned_params, save_tuned_params
from tests.test_cli_quality import staged  # noqa: F401  (the fixture: a four-week world)
from tests.test_playlist_quality import WEEK

#: A configuration that learns next to nothing: the search must find better ones.
POOR = ALSParams(factors=2, regularization=30.0, alpha=0.5, iterations=8)


@pytest.fixture
def tuning(staged: Settings) -> Settings:  # noqa: F811
    settings = staged.model_copy(
        update={"tune_every_weeks": 4, "tune_trials": 6, "tune_budget_s": 300.0}
    )
    upgrade(settings.database_url)
    save_tuned_params(
        Storage.of(settings).tuned_params,
        TunedParams(POOR, 0.0, float("nan"), "by hand", blend=BlendParams()),
    )
    return settings


def _searches(settings: Settings) -> list[TuningRun]:
    with sessions(settings)() as session:
        return repository.recent_tunings(session)


def _end(settings: Settings, run_id: int) -> None:
    with sessions(settings).begin() as session:
        repository.end_weekly_run(session, run_id, "succeeded")


def test_a_due_search_stores_every_trial_adopts_a_better_one_and_training_uses_it(
    tuning: Settings,
) -> None:
    run_id = start_run(tuning, tuning.data_dir, WEEK, "test")
    counts = step_tune(tuning, run_id)
    assert counts["searched"] and counts["adopted"], counts
    (search,) = _searches(tuning)
    assert search.status == "succeeded" and search.weekly_run_id == run_id and search.adopted
    # Every trial is stored, in order; the first is the configuration the run had.
    assert counts["trials"] == len(search.trials) >= 3
    assert [t.number for t in search.trials] == list(range(len(search.trials)))
    assert search.trials[0].stage == "start" and search.trials[0].params == {
        **asdict(POOR),
        "blend": "none",
        "confidence": asdict(ConfidenceParams()),
    }
    # The search varied the confidence weights too, within their space.
    weights = [t.params["confidence"] for t in search.trials if t.stage == "search"]
    assert len({w["skip_weight"] for w in weights}) > 1
    assert {w["half_life_days"] for w in weights} <= {0.0, 30.0, 90.0, 180.0, 365.0}
    assert search.current_score == search.trials[0].score
    # The best is the best model (re-ranking trials score the re-ranked lists, apart).
    complete = [t.score for t in search.trials if t.state == "complete" and t.stage != "rerank"]
    assert search.best_score == max(complete) > search.current_score
    # Adopted because it beat the current parameters on the gate's holdout, by the file.
    assert search.holdout_best > search.holdout_current
    adopted = load_tuned_params(Storage.of(tuning).tuned_params)
    assert adopted.blend is not None and adopted.confidence is not None
    model_params = {k: v for k, v in search.best_params.items() if k != "rerank"}
    assert {
        **asdict(adopted.params),
        "blend": adopted.blend.text(),
        "confidence": asdict(adopted.confidence),
    } == model_params
    # The re-ranking stage ran over the best model, the configured knobs first; what it
    # chose is as diverse and novel as they are (state "complete") and is what it adopted.
    reranks = [t for t in search.trials if t.stage == "rerank"]
    assert reranks and reranks[0].params["rerank"] == {"diversity": 0.2, "popularity_penalty": 0.1}
    assert {t.state for t in reranks} <= {"complete", "outside"}
    assert adopted.rerank is not None
    assert search.best_params["rerank"] == asdict(adopted.rerank)
    chosen = [t for t in reranks if t.params["rerank"] == asdict(adopted.rerank)]
    assert chosen[0].state == "complete"
    assert chosen[0].score == max(t.score for t in reranks if t.state == "complete")
    assert PlaylistPolicy.of(tuning).rerank == adopted.rerank
    assert adopted.params != POOR
    assert "adopted" in search.reason and search.listeners > 0

    version = step_train(tuning, run_id)
    with sessions(tuning)() as session:
        model = session.get(ModelVersion, version)
        assert model is not None and model.params == model_params

    # The same week again, and the next three: not due; four weeks on it is.
    _end(tuning, run_id)
    again = start_run(tuning, tuning.data_dir, WEEK, "test")
    assert step_tune(tuning, again) == {
        "searched": False,
        "reason": "searched 0 week(s) ago (week of 2026-11-16); every 4 weeks",
    }
    assert len(_searches(tuning)) == 1
    db = sessions(tuning)
    assert tuning_due(db, tuning, WEEK + dt.timedelta(days=21)) is not None
    assert tuning_due(db, tuning, WEEK + dt.timedelta(days=28)) is None


def test_the_current_parameters_are_kept_when_nothing_beats_them(tuning: Settings) -> None:
    # No draws: the only candidates are the current parameters and the defaults, and the
    # defaults are the current ones here; a blend and re-ranking knobs set in the
    # environment are not searched.
    Storage.of(tuning).tuned_params.unlink()
    fixed = tuning.model_copy(update={"blend": "rp3beta:0.5", "mmr_diversity": 0.2})
    current = ResolvedParams.of(fixed)
    assert current.sources["blend"] == "environment"
    policy = PlaylistPolicy.of(fixed)
    assert policy.rerank_bound is None
    found = self_tune(
        Storage.of(tuning).paths(WEEK),
        WEEK,
        policy,
        current,
        holdout_days=tuning.gate_holdout_days,
        trials=0,
        budget_s=60.0,
    )
    assert len(found.trials) == 1 and found.trials[0].params == current.params
    assert found.tuned is None and found.holdout == {}
    assert found.reason.startswith("kept: the current configuration scored best")


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"tune_every_weeks": 0}, "self-tuning is off"),
        ({"use_tuned_params": False}, "tuned parameters are not used"),
    ],
)
def test_a_search_is_not_due_when_its_result_could_not_be_used(
    tuning: Settings, update: dict, reason: str
) -> None:
    settings = tuning.model_copy(update=update)
    assert reason in (tuning_due(sessions(settings), settings, WEEK) or "")


def test_parameters_all_set_in_the_environment_leave_nothing_to_search(
    tuning: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "FACTORS": "8",
        "REGULARIZATION": "0.1",
        "ALPHA": "2",
        "ITERATIONS": "5",
    }.items():
        monkeypatch.setenv(f"CRATEDIGGER_ALS_{name}", value)
    settings = Settings(data_dir=tuning.data_dir, tune_every_weeks=4)
    assert "set in the environment" in (tuning_due(sessions(settings), settings, WEEK) or "")


def test_too_little_history_fails_the_search_not_the_run(tuning: Settings) -> None:
    # Holding out 60 days leaves no listener with history before the validation cut-off.
    settings = tuning.model_copy(update={"gate_holdout_days": 60})
    run_id = start_run(settings, settings.data_dir, WEEK, "test")
    counts = step_tune(settings, run_id)
    assert counts["searched"] is False and "no listener" in counts["reason"]
    (search,) = _searches(settings)
    assert search.status == "failed" and "no listener" in (search.reason or "")
    # The run goes on and trains with the parameters it had.
    with sessions(settings)() as session:
        steps = {s.step: s.status for s in repository.get_weekly_run(session, run_id).steps}
    assert steps == {"tune": "succeeded"}


def test_a_search_left_running_by_a_killed_process_is_abandoned_by_the_next(
    tuning: Settings,
) -> None:
    db = sessions(tuning)
    first = start_run(tuning, tuning.data_dir, WEEK, "test")
    with db.begin() as session:
        killed = repository.start_tuning(session, first, WEEK).id
        repository.add_tuning_trial(
            session,
            killed,
            0,
            {
                "params": asdict(POOR),
                "score": 0.1,
                "seconds": 1.0,
                "stage": "start",
                "state": "complete",
            },
        )
    _end(tuning, first)
    second = start_run(tuning, tuning.data_dir, WEEK, "test")
    for _ in range(2):  # a retried step replaces its own search
        with db.begin() as session:
            latest = repository.start_tuning(session, second, WEEK).id
    with db() as session:
        searches = session.execute(select(TuningRun.id, TuningRun.weekly_run_id, TuningRun.status))
        kept_trials = session.scalars(select(TuningTrial.tuning_run_id)).all()
        assert sorted(searches) == [(killed, first, "abandoned"), (latest, second, "running")]
    assert kept_trials == [killed]  # what the killed search found stays readable


@pytest.mark.parametrize("method", ["time", "leave-k-out"])
def test_the_counts_give_back_the_aggregated_confidence_and_other_weights_keep_the_pairs(
    staged: Settings,  # noqa: F811
    method: str,
) -> None:
    """What the week trains on and what a search trial trains on come from the counts the
    aggregation kept: under the aggregation's own weights they are its confidence column
    (Spark's), and under other weights the same pairs with other values."""
    week = Week.of(staged, WEEK)
    aggregated = week.data.matrix.user_items
    rebuilt = week.data.pairs.matrix(staged.confidence)
    assert np.array_equal(rebuilt.user_ids, week.data.matrix.user_ids)
    assert np.allclose(rebuilt.user_items.toarray(), aggregated.toarray(), atol=1e-6)
    other = ConfidenceParams(confidence_scale="linear", skip_weight=0.9, half_life_days=30.0)
    changed = week.data.pairs.matrix(other).user_items
    assert (changed != 0).toarray().tolist() == (aggregated != 0).toarray().tolist()
    assert not np.allclose(changed.data, aggregated.data)
    assert np.array_equal(np.sign(changed.data), np.sign(aggregated.data))  # thumbs-down stay

    for validation in (False, True):
        split = week_split(week.paths, WEEK, method=method, validation=validation)
        assert np.allclose(
            split.matrix(staged.confidence).user_items.toarray(), split.train.toarray(), atol=1e-6
        )
        changed = split.matrix(other).user_items
        assert (changed != 0).toarray().tolist() == (split.train != 0).toarray().tolist()

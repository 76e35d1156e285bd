"""The week's ensemble (:mod:`recsys.blend`): its parameters from hostile text, the
standardised blend and its known answers, the artifact, the pipeline over a blend and the
greedy blend search."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys.als import ALSModel, ALSParams, with_cold_start
from recsys.blend import (
    BLEND_FILE,
    Blend,
    BlendParams,
    ModelConfig,
    blended,
    fit_partners,
    load_model,
    standardise,
)
from recsys.matrix import InteractionMatrix
from recsys.neighbors import RP3beta
from recsys.pipeline import PlaylistPipeline
from recsys.playlist import PlaylistRules
from recsys.settings import ConfigError, load_settings
from recsys.tuning import blend_search
from tests.test_recommenders import N_TRACKS, N_USERS, TestALS, checker_board

ALS = ALSParams(factors=4, regularization=0.01, alpha=10.0, iterations=15)


class TestBlendContract(TestALS):
    """A blend keeps every promise of the interface and ALS's known answer."""

    model_class = Blend

    def fit(self, matrix: InteractionMatrix) -> Any:
        return ModelConfig(ALS, BlendParams.parse("rp3beta:0.5,itemknn:0.3,bm25:0.2")).train(matrix)


@pytest.mark.parametrize(
    ("text", "weights"),
    [
        ("rp3beta:0.5", (("rp3beta", 0.5),)),
        (" RP3beta : 1 , itemknn:0.25 ", (("rp3beta", 1.0), ("itemknn", 0.25))),
        ("none", ()),
        ("", ()),
        ("ease:0", ()),  # weighted 0: left out
    ],
)
def test_blend_text_round_trips(text: str, weights: tuple) -> None:
    params = BlendParams.parse(text)
    assert params.weights == weights
    assert BlendParams.parse(params.text()) == params


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("svd:0.5", "unknown blend partner"),
        ("rp3beta", "is not partner:weight"),
        ("rp3beta:lots", "is not a number"),
        ("rp3beta:nan", "is not a number"),
        ("rp3beta:-1", "must be in"),
        ("rp3beta:1e300", "must be in"),
        ("rp3beta:0.5,rp3beta:0.2", "appears twice"),
        ("rp3beta:0.5;DROP TABLE models", "is not a number"),
        ("x" * 100_000 + ":1", "unknown blend partner"),
    ],
)
def test_hostile_blend_text_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BlendParams.parse(text)


def test_a_bad_blend_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRATEDIGGER_BLEND", "rp3beta:2;itemknn")
    with pytest.raises(ConfigError, match="CRATEDIGGER_BLEND"):
        load_settings()


def test_standardise_gives_rows_of_zero_mean_and_unit_variance() -> None:
    rows = np.array([[1.0, 2.0, 3.0, 10.0], [5.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    out = standardise(rows.copy())
    np.testing.assert_allclose(out[0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(out[0].std(), 1.0, atol=1e-5)
    assert np.all(np.argsort(out[0]) == np.argsort(rows[0]))
    np.testing.assert_array_equal(out[1], 0.0)  # a constant row carries no preference


def test_the_blend_is_the_weighted_sum_of_standardised_scores() -> None:
    matrix = checker_board()
    base = ALSModel.fit(matrix, ALS)
    partner = RP3beta.fit(matrix)
    rows = np.arange(N_USERS)
    expected = standardise(base.score(rows)) + 0.5 * standardise(partner.score(rows))
    model = blended(base, {"rp3beta": partner}, BlendParams.parse("rp3beta:0.5"))
    np.testing.assert_allclose(model.score(rows), expected, rtol=1e-5, atol=1e-5)
    # Without a partner the week's model is ALS itself, saved and loaded as before.
    assert blended(base, {"rp3beta": partner}, BlendParams()) is base


def test_a_partner_that_knows_the_answer_fixes_a_blind_base() -> None:
    """A base that learned nothing (one factor, heavy regularisation) gives random tracks;
    the blend with RP3beta recommends each listener tracks of their own parity."""
    matrix = checker_board()
    blind = ALSModel.fit(matrix, ALSParams(factors=1, regularization=100.0, iterations=1))
    model = blended(blind, {"rp3beta": RP3beta.fit(matrix)}, BlendParams.parse("rp3beta:10"))
    columns, _ = model.recommend(np.arange(N_USERS), matrix.user_items, 2)
    for user in range(N_USERS):
        assert {c % 2 for c in columns[user]} == {user % 2}, user


def test_cold_tracks_keep_alss_opinion_on_the_blends_scale(tmp_path: Path) -> None:
    matrix = checker_board()
    base = ALSModel.fit(matrix, ALS)
    content = np.zeros((N_TRACKS, 2), dtype=np.float32)
    content[np.arange(N_TRACKS), np.arange(N_TRACKS) % 2] = 1.0
    listeners = np.asarray((matrix.user_items > 0).sum(axis=0)).ravel().astype(np.int64)
    cold_base = with_cold_start(base, content, np.ones(N_TRACKS, bool), listeners, 1)
    cold = cold_base.cold_start.cold_mask
    assert cold.sum() == 4
    model = Blend(cold_base, {"rp3beta": (RP3beta.fit(matrix), 0.5)})
    rows = np.arange(N_USERS)
    np.testing.assert_allclose(
        model.score(rows)[:, cold], 1.5 * standardise(cold_base.score(rows))[:, cold], rtol=1e-5
    )
    # The pipeline takes the cold slots, vectors and explanations from the base.
    rules = PlaylistRules(6, 2, cold_slots=1)
    pipeline = PlaylistPipeline(rules, model, np.arange(N_TRACKS), listeners)
    assert pipeline.cold_mask is cold and pipeline.item_vectors is cold_base.scoring_item_factors
    (block,) = pipeline.personal(rows, matrix.user_items)
    assert block.is_cold.any(axis=1).all()
    for user, columns in enumerate(block.track_columns):
        picked = columns[columns >= 0]
        assert not set(picked) & set(matrix.user_items[user].indices)  # nothing heard
        assert len(picked) == len(set(picked)) == rules.length
    # Reasons: the partner names a played track of the listener's own parity.
    titles = np.array([f"Track {i}" for i in range(N_TRACKS)])
    reasons = pipeline.explain(block, matrix.user_items, titles)
    named = [
        (user, text)
        for user, row in enumerate(reasons)
        for text in row
        if text and "Listeners of" in text
    ]
    assert named
    for user, text in named:
        anchor = int(text.split("Track ")[1].split(" ")[0])
        assert anchor in set(matrix.user_items[user].indices) and anchor % 2 == user % 2
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, Blend) and loaded.params == model.params
    np.testing.assert_array_equal(loaded.score(rows), model.score(rows))


def test_an_artifact_without_blend_loads_as_alone_and_a_bad_blend_file_is_refused(
    tmp_path: Path,
) -> None:
    matrix = checker_board()
    base = ALSModel.fit(matrix, ALS)
    base.save(tmp_path / "als")
    assert isinstance(load_model(tmp_path / "als"), ALSModel)
    (tmp_path / "als" / BLEND_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a blend description"):
        load_model(tmp_path / "als")
    (tmp_path / "als" / BLEND_FILE).write_text(json.dumps({"blend": "svd:1"}))
    with pytest.raises(ValueError, match="unknown blend partner"):
        load_model(tmp_path / "als")


def test_ease_is_left_out_when_it_does_not_fit_the_memory_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    matrix = checker_board()
    with caplog.at_level(logging.INFO, logger="recsys.blend"):
        fitted = fit_partners(matrix, ("rp3beta", "ease"), memory_budget_mb=1.0)
    assert set(fitted) == {"rp3beta"}
    assert "EASE left out of the blend" in caplog.text
    model = ModelConfig(ALS, BlendParams.parse("ease:1"), memory_budget_mb=1.0).train(matrix)
    assert isinstance(model, ALSModel) and model.metadata["blend"] == "none"
    assert set(fit_partners(matrix, ("ease",), memory_budget_mb=128.0)) == {"ease"}


def test_the_blend_search_adds_the_partner_that_helps_and_stops() -> None:
    """On a blind base, the score rewards the parity answer: the search must add RP3beta,
    try every weight once, and never score the same blend twice."""
    matrix = checker_board()
    blind = ALSModel.fit(matrix, ALSParams(factors=1, regularization=100.0, iterations=1))
    partners = fit_partners(matrix, ("rp3beta", "itemknn"), 64.0)

    def parity_share(model: Any) -> float:
        columns, _ = model.recommend(np.arange(N_USERS), matrix.user_items, 2)
        return float(np.mean(columns % 2 == (np.arange(N_USERS) % 2)[:, None]))

    trials = blend_search(blind, partners, parity_share, start=[BlendParams.parse("ease:1")])
    blends = [t.blend for t in trials]
    assert blends[0] == BlendParams()  # ease was not fitted: the start blend is ALS alone
    assert len(set(blends)) == len(blends) and all(t.stage == "blend" for t in trials)
    best = max(trials, key=lambda t: t.score)
    assert best.score == 1.0 and best.blend.weights[0][0] in partners
    assert all(t.params == blind.params for t in trials)
    # A deadline already past: only the start blends are scored.
    assert len(blend_search(blind, partners, parity_share, deadline=0.0)) == 1

"""``cratedigger evaluate`` and ``cratedigger tune`` on a week's staged aggregates (no Spark).

The world is the two taste groups of ``tests/test_playlist_quality.py`` with the pairs'
first events spread over the four weeks before the week, so that a time split has
discoveries to test on.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli.main import cli
from jobs.week import Storage
from recsys.db.engine import make_engine, make_session_factory
from recsys.db.models import ModelVersion
from recsys.settings import Settings
from recsys.tuning import SEARCH_SPACE, load_tuned_params
from tests.test_playlist_quality import WEEK, stage_two_groups
from tests.worlds import train_staged


@pytest.fixture
def staged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    state = tmp_path / "state"
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(state))
    monkeypatch.setenv("CRATEDIGGER_PLAYLIST_LENGTH", "10")
    monkeypatch.setenv("CRATEDIGGER_GENERATE_BLOCK_SIZE", "64")
    settings = Settings(data_dir=state, playlist_length=10)
    stage_two_groups(settings, listeners_per_group=30, plays_per_listener=12)
    interactions = Storage.of(settings).paths(WEEK).interactions
    table = pq.read_table(interactions)
    rng = np.random.default_rng(1)
    start = dt.datetime.combine(WEEK, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=28)
    first_us = int(start.timestamp() * 1e6) + rng.integers(0, 28 * 86_400 * 10**6, len(table))
    first = pa.array(first_us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    index = table.schema.get_field_index("first_event_at")
    table = table.set_column(index, "first_event_at", first)
    table = table.set_column(table.schema.get_field_index("last_event_at"), "last_event_at", first)
    for old in interactions.iterdir():
        old.unlink()
    pq.write_table(table, interactions / "part-0.parquet")
    return settings


def _invoke(arguments: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, arguments)
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["evaluate", "tune"])
def test_help_names_every_option(command: str) -> None:
    code, output = _invoke([command, "--help"])
    assert code == 0
    for option in ("--week", "--data", "--split", "--holdout-days", "--k-out"):
        assert option in output
    assert ("--trials" in output) == (command == "tune")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["evaluate", "--week", "2026-11-16"], "no aggregates for the week of 2026-11-16"),
        (["tune", "--week", "2026-11-16"], "cratedigger aggregate"),
        (["evaluate", "--week", "2026-11-18"], "Monday of that week is 2026-11-16"),
        (["evaluate", "--split", "random"], "'random' is not one of"),
        (["evaluate", "--holdout-days", "0"], "0 is not in the range"),
        (["tune", "--trials", "-1"], "-1 is not in the range"),
        (["tune", "--data", "{tmp}/missing"], "does not exist"),
    ],
)
def test_bad_arguments_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arguments: list[str], message: str
) -> None:
    monkeypatch.setenv("CRATEDIGGER_DATA_DIR", str(tmp_path / "state"))
    code, output = _invoke([a.replace("{tmp}", str(tmp_path)) for a in arguments])
    assert code in (1, 2), output
    assert message in output
    assert "Traceback" not in output


def test_a_split_without_discoveries_says_what_to_change(staged: Settings) -> None:
    code, output = _invoke(
        ["evaluate", "--week", WEEK.isoformat(), "--split", "time", "--holdout-days", "60"]
    )
    assert code == 1
    assert "no listener has both training pairs and held-out discoveries" in output


@pytest.mark.parametrize("split", ["time", "leave-k-out"])
def test_evaluate_prints_every_metric_next_to_most_popular(
    staged: Settings, tmp_path: Path, split: str
) -> None:
    out = tmp_path / "metrics.json"
    code, output = _invoke(
        [
            "evaluate",
            "--week",
            WEEK.isoformat(),
            "--split",
            split,
            "--k-out",
            "3",
            "--json",
            str(out),
        ]
    )
    assert code == 0, output
    for label in (
        "recall",
        "NDCG",
        "precision",
        "MAP",
        "catalogue coverage",
        "distinct artists per list",
        "largest share of one artist",
        "novelty (bits)",
        "popularity Gini",
        "cold-start recall",
    ):
        assert label in output
    assert "shipped" in output and "most popular" in output
    result = json.loads(out.read_text())
    shipped, popular = result["methods"]["shipped"], result["methods"]["most popular"]
    assert 50 <= result["listeners"] <= 60  # of 60: the others discovered nothing late
    assert shipped["k"] == 10
    # Each listener's discoveries are in their own group; popularity mixes both groups.
    assert shipped["ndcg"] > popular["ndcg"]
    assert shipped["recall"] > popular["recall"]
    assert f"{shipped['ndcg']:.4f}" in output


def test_tune_saves_parameters_that_the_weekly_training_then_uses(
    staged: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = _invoke(["tune", "--week", WEEK.isoformat(), "--trials", "3"])
    assert code == 0, output
    path = staged.data_dir / "tuned_params.json"
    assert f"saved to {path}" in output
    tuned = load_tuned_params(path)
    trials = tuned.details["trials"]
    searched = [t for t in trials if t["stage"] in ("start", "search")]
    assert len(searched) == 4 and trials[0]["stage"] == "start"
    # Then the blends of the best ALS, from the one the run had (the default) on, then the
    # re-ranking knobs of the best model, from the configured ones on.
    blends = [t for t in trials if t["stage"] == "blend"]
    reranks = [t for t in trials if t["stage"] == "rerank"]
    assert [t["stage"] for t in trials] == ["start"] + ["search"] * 3 + ["blend"] * len(blends) + [
        "rerank"
    ] * len(reranks)
    assert blends and reranks
    assert reranks[0]["params"]["rerank"] == {"diversity": 0.2, "popularity_penalty": 0.1}
    assert tuned.rerank is not None and "MMR" in output
    assert blends[0]["params"]["blend"] == "rp3beta:0.5" and tuned.blend is not None
    best_als = max((t for t in searched if t["state"] == "complete"), key=lambda t: t["score"])
    assert all(
        {**t["params"], "blend": None} == {**best_als["params"], "blend": None} for t in blends
    )
    assert tuned.score == max(
        t["score"] for t in trials if t["state"] == "complete" and t["stage"] != "rerank"
    )
    assert tuned.details["week_start"] == WEEK.isoformat()
    space = SEARCH_SPACE["factors"]
    assert space.low <= tuned.params.factors <= space.high

    # Seeded: the same command tries the same configurations with the same scores.
    assert _invoke(["tune", "--week", WEEK.isoformat(), "--trials", "3"])[0] == 0
    again = load_tuned_params(path)
    assert [t["params"] for t in again.details["trials"]] == [t["params"] for t in trials]
    assert [t["score"] for t in again.details["trials"]] == [t["score"] for t in trials]

    # Make the file's parameters recognisable, then train the week as the run does.
    payload = json.loads(path.read_text())
    payload["params"].update({"factors": 3, "regularization": 0.5, "alpha": 7.0})
    path.write_text(json.dumps(payload))
    from migrations import upgrade

    upgrade(staged.database_url)
    _, model = train_staged(staged, WEEK)
    assert model.base.user_factors.shape[1] == 3
    assert model.metadata["params_sources"]["tuned_file"] == str(path)
    engine = make_engine(staged.database_url)
    with make_session_factory(engine)() as session:
        row = session.get(ModelVersion, model.metadata["version"])
        assert row is not None
        assert (row.params["factors"], row.params["alpha"]) == (3, 7.0)
        assert row.params["blend"] == tuned.blend.text()
    engine.dispose()

    # A variable set in the environment wins over the file.
    monkeypatch.setenv("CRATEDIGGER_ALS_FACTORS", "5")
    from recsys.settings import load_settings

    explicit = load_settings()
    _, model = train_staged(explicit, WEEK)
    assert model.base.user_factors.shape[1] == 5
    assert model.base.params.alpha == 7.0

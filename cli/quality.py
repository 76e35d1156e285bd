"""``cratedigger evaluate`` and ``cratedigger tune``: offline quality on a week's data.

Both read the week's aggregates under ``CRATEDIGGER_DATA_DIR`` (aggregating ``--data`` first
when it is given) and split them with :func:`jobs.quality.week_split`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from tqdm import tqdm

from cli.options import (
    F,
    command_settings,
    data_option,
    friendly_errors,
    prepare_database,
    progress,
    week_option,
)
from recsys.settings import Settings
from recsys.tuning import SEARCH_SEED

if TYPE_CHECKING:
    from jobs.quality import WeekSplit

#: (key of recsys.evaluation.evaluate, label, digits) in the order printed.
METRICS = (
    ("recall", "recall", 4),
    ("ndcg", "NDCG", 4),
    ("precision", "precision", 4),
    ("map", "MAP", 4),
    ("coverage", "catalogue coverage", 4),
    ("artists_per_list", "distinct artists per list", 2),
    ("top_artist_share", "largest share of one artist", 3),
    ("novelty", "novelty (bits)", 3),
    ("gini", "popularity Gini", 3),
    ("cold_recall", "cold-start recall", 4),
)


def _split_options(command: F) -> F:
    """--data, --split, --holdout-days, --k-out and --seed, shared by evaluate and tune."""
    options = [
        data_option(
            "Data directory to aggregate first (Spark); default: use the week's existing "
            "aggregates."
        ),
        click.option(
            "--split",
            "method",
            type=click.Choice(["time", "leave-k-out"]),
            default="time",
            show_default=True,
            help="time: hold out the tracks first played in the last --holdout-days; "
            "leave-k-out: --k-out random tracks per listener (no timestamps needed).",
        ),
        click.option("--holdout-days", type=click.IntRange(1, 365), default=7, show_default=True),
        click.option("--k-out", type=click.IntRange(1, 1000), default=10, show_default=True),
        click.option(
            "--split-seed",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="Seed of leave-k-out.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _settings(options: dict[str, Any]) -> Settings:
    """The settings; with ``--data``, its layout checked (before Spark starts or the
    database is touched), then the database the aggregation writes to prepared."""
    settings = command_settings()
    if options["data_dir"] is not None:
        from jobs.weekly import check_source

        check_source(options["data_dir"])
        prepare_database(settings)
    return settings


def _split(
    settings: Settings,
    week: dt.date,
    bar: tqdm,
    options: dict[str, Any],
    *,
    validation: bool,
) -> WeekSplit:
    """Aggregate ``--data`` when given, then split the week's aggregates (two bar steps);
    ``options``: the values of :func:`_split_options` by name."""
    from jobs.quality import week_split
    from jobs.week import Storage

    if options["data_dir"] is not None:
        from jobs.weekly import aggregate

        bar.set_postfix_str("aggregate (Spark)")
        aggregate(settings, options["data_dir"], week)
    bar.update(1)
    bar.set_postfix_str("split")
    split = week_split(
        Storage.of(settings).paths(week),
        week,
        method=options["method"],
        holdout_days=options["holdout_days"],
        k_out=options["k_out"],
        seed=options["split_seed"],
        validation=validation,
    )
    bar.update(1)
    return split


def _cell(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def metric_table(result: dict[str, Any]) -> str:
    """The metrics of every method side by side, with the shipped / most popular ratio."""
    methods = result["methods"]
    names = list(methods)
    k = int(next(iter(methods.values()))["k"])
    lines = [f"{'metric @' + str(k):30s}" + "".join(f"{n:>14s}" for n in names) + "   ratio"]
    for key, label, digits in METRICS:
        values = [methods[name][key] for name in names]
        ratio = values[0] / values[1] if values[1] and not math.isnan(values[1]) else math.nan
        lines.append(
            f"{label:30s}"
            + "".join(f"{_cell(v, digits):>14s}" for v in values)
            + f"{_cell(ratio, 2):>8s}"
        )
    return "\n".join(lines)


@click.command()
@week_option("Monday (UTC) of the week whose aggregates are evaluated; default: this week.")
@_split_options
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write JSON.")
@friendly_errors
def evaluate(week: dt.date, json_out: Path | None, **split_options: Any) -> None:
    """Measure the shipped configuration against most popular on held-out data.

    Trains ALS with the parameters the weekly run would use (CRATEDIGGER_ALS_*, then
    tuned_params.json, then the defaults), builds the playlists as the weekly run does
    (cold-start slots, re-ranking, artist cap) and prints recall, NDCG, precision, MAP,
    coverage, artist diversity, novelty, popularity Gini and cold-start recall at the
    playlist length, next to the most popular unheard tracks.
    """
    from jobs.quality import evaluate_week

    settings = _settings(split_options)
    with progress(5, "evaluate", unit="step") as bar:
        split = _split(settings, week, bar, split_options, validation=False)

        def step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        result = evaluate_week(settings, split, step=step)
    params = result["params"]
    click.echo(
        f"{result['split']}: {result['listeners']:,} listeners, "
        f"{result['test_items']:,} held-out tracks"
    )
    click.echo(
        f"shipped: factors {params['factors']}, regularization {params['regularization']}, "
        f"alpha {params['alpha']}, {params['iterations']} iterations "
        f"(sources {params['sources']}); re-ranking diversity {settings.mmr_diversity}, "
        f"popularity penalty {settings.popularity_penalty}, cold slots {settings.cold_slots}"
    )
    click.echo(metric_table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        click.echo(f"wrote {json_out}")


@click.command()
@week_option("Monday (UTC) of the week whose aggregates are searched on; default: this week.")
@_split_options
@click.option(
    "--trials",
    type=click.IntRange(0, 1000),
    default=16,
    show_default=True,
    help="Configurations drawn after the current parameters.",
)
@click.option(
    "--budget-s",
    type=click.FloatRange(1.0),
    default=None,
    help="Stop drawing after this many seconds (default: no limit).",
)
@click.option("--seed", type=click.IntRange(0), default=SEARCH_SEED, show_default=True)
@friendly_errors
def tune(
    week: dt.date, trials: int, budget_s: float | None, seed: int, **split_options: Any
) -> None:
    """Search ALS parameters on a validation split and save them for the weekly run.

    Tries the current parameters, then up to --trials configurations of factors,
    regularization, alpha and iterations drawn by Optuna's seeded TPE sampler, pruning
    those that trail at half training (parameters set by CRATEDIGGER_ALS_* stay fixed),
    each scored by NDCG of the artist-capped playlists on a validation split that
    leaves out the last --holdout-days (so `cratedigger evaluate` with the same split
    arguments still tests on unseen data). The best goes to DATA_DIR/tuned_params.json;
    the weekly run then trains with it for every ALS parameter not set in the
    environment (CRATEDIGGER_USE_TUNED_PARAMS=false ignores the file).
    """
    from jobs.quality import tune_week

    settings = _settings(split_options)
    with progress(trials + 3, "tune", unit="step") as bar:
        split = _split(settings, week, bar, split_options, validation=True)
        bar.set_postfix_str("search")
        tuned, path = tune_week(
            settings,
            week,
            split,
            trials=trials,
            budget_s=budget_s,
            seed=seed,
            on_trial=lambda _: bar.update(1),
        )
    p, c, r = tuned.params, tuned.confidence or settings.confidence, tuned.rerank
    parts = [
        f"factors {p.factors}, regularization {p.regularization}, alpha {p.alpha}, "
        f"{p.iterations} iterations",
        f"{c.confidence_scale} confidence, skips weigh {c.skip_weight:.3g}, half-life "
        f"{c.half_life_days:g} days",
        *([] if tuned.blend is None else [f"blend {tuned.blend.text()}"]),
        *(
            []
            if r is None
            else [f"MMR {r.diversity:g}, popularity penalty {r.popularity_penalty:g}"]
        ),
    ]
    click.echo(f"{split.description}: {len(split.eval_users):,} listeners")
    click.echo(
        f"best: {'; '.join(parts)}: NDCG@{settings.playlist_length} {tuned.score:.4f} "
        f"(current parameters {tuned.default_score:.4f})"
    )
    click.echo(f"saved to {path}; the weekly run trains with it from now on")

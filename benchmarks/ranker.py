"""The learned final ranker (:mod:`benchmarks.final_ranker`, issue 13) against the linear blend that
ships, on every data set, through the product's pipeline.

Usage::

    python benchmarks/ranker.py --dataset all --quick [--k 50] [--out benchmarks/results]

``--dataset`` takes the values of ``benchmarks/quality.py`` (``hetrec``, ``lastfm1k``,
``cm100k``, ``ambar``, ``simulated``, ``both``, ``real``, ``all``); ``--quick`` simulates
the smaller world (1000 listeners x 8000 tracks) that ``quality.py --quick`` tuned on.

For each data set, with its tuned configuration (confidence formula, ALS parameters,
blend) read from ``quality-quick.json`` (``--config``; the shipped defaults, ALS defaults
and ``rp3beta:0.5``, when it has none for the set, and the report says so):

1. train the configuration on the validation fold's training part and fit the final
   ranker (:func:`benchmarks.final_ranker.fit_final_ranker`, one fixed :class:`RankerParams` for
   every set) on the validation fold's held-out tracks, twice: boosting corrections to
   the blend's scores (the default, ``start_from="blend_score"``) and from scratch;
2. train the same configuration on the test fold's training part and put the fitted
   ranker over it (:class:`benchmarks.final_ranker.Ranked`: features from the test-fold models; the
   ranker never sees a test label);
3. make the playlists of the test fold's listeners through the product pipeline
   (``benchmarks.quality.playlists`` with ``shipped_rules(k)``: artist cap 2, MMR, the
   popularity penalty) with (a) the linear blend, (b) each ranker, (c) ALS alone, and
   report NDCG@k and recall@k, each ranker's fit time, the scoring times, and a 95 %
   paired bootstrap interval of NDCG (b) / (a) over listeners.

Diagnostics: the same lists without re-ranking or artist cap (is the ranker's gain or loss
the model's, or the re-ranking's?), the share of the test tracks among the candidates (the
ranker's ceiling), and LightGBM's gain importance of each feature.

Writes ``ranker.md`` and ``ranker.json`` into ``--out`` (the arguments of the run, ``--quick``
included, are in both). Timings are wall clock on the machine of the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make recsys and benchmarks importable
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.datasets import DATASET_GROUPS, REAL_LOADERS, BenchmarkDataset, Fold  # noqa: E402
from benchmarks.final_ranker import (  # noqa: E402
    Ranked,
    RankerInputs,
    RankerParams,
    fit_final_ranker,
    labels_of,
)
from benchmarks.quality import (  # noqa: E402
    BLOCK,
    EASE_MEMORY_MB,
    SHIPPED_BLEND,
    OursConfig,
    _bootstrap_ratio,
    _load,
    confidence_formulas,
    playlists,
    shipped_rules,
)
from recsys.als import ALSParams  # noqa: E402
from recsys.blend import BlendParams, ModelConfig, WeekModel  # noqa: E402
from recsys.evaluation import ndcg_per_user, recall_at_k  # noqa: E402
from recsys.matrix import InteractionMatrix  # noqa: E402
from recsys.playlist import PlaylistRules  # noqa: E402

log = logging.getLogger("ranker")

DEFAULT_CONFIG = REPO_ROOT / "benchmarks" / "results" / "quality-quick.json"
#: The one set of ranker settings of every data set (never tuned to one): boosting starts
#: from the blend's scores and learns corrections.
RANKER_PARAMS = RankerParams()
#: The same settings with boosting from zero: the ranker must learn the whole ranking.
FROM_SCRATCH = replace(RANKER_PARAMS, start_from=None)
BLEND, RANKER, SCRATCH, ALS_ALONE = (
    "linear blend (ships)",
    "final ranker",
    "final ranker, from scratch",
    "ALS alone",
)
RANKERS = {RANKER: RANKER_PARAMS, SCRATCH: FROM_SCRATCH}
METHODS = (BLEND, RANKER, SCRATCH, ALS_ALONE)


def tuned_config(name: str, path: Path) -> tuple[OursConfig, str]:
    """The configuration ``quality.py`` selected for ``name`` (its ``search.best`` row in
    ``path``), or the shipped defaults with the reason."""
    try:
        best = json.loads(path.read_text())["results"][name]["search"]["best"]
        config = OursConfig(
            str(best["formula"]), ALSParams(**best["params"]), BlendParams.parse(best["blend"])
        )
        confidence_formulas(name)[config.formula]  # a formula this data set has
        return config, f"tuned: {path.name}, results.{name}.search.best"
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        formula = next(iter(confidence_formulas(name)))
        config = OursConfig(formula, ALSParams(), SHIPPED_BLEND)
        return config, f"shipped defaults (no tuned configuration in {path}: {exc!r})"


def train(
    data: BenchmarkDataset, fold: Fold, config: OursConfig
) -> tuple[WeekModel, InteractionMatrix, float]:
    """The configuration trained on the fold's training part, as ``quality.ours`` does."""
    values = confidence_formulas(data.name)[config.formula](fold.features)
    matrix = InteractionMatrix(
        user_items=fold.features.matrix(values),
        user_ids=np.asarray(data.user_ids),
        track_ids=np.asarray(data.item_ids),
    )
    started = time.perf_counter()
    model = ModelConfig(config.params, config.blend, EASE_MEMORY_MB).train(matrix)
    return model, matrix, time.perf_counter() - started


def track_listeners(fold: Fold) -> npt.NDArray[np.int64]:
    train_part = fold.split.train
    return np.bincount(train_part.indices, minlength=train_part.shape[1]).astype(np.int64)


def scoring_seconds(model: Any, rows: npt.NDArray[np.int64]) -> float:
    """Wall time of ``model.score`` over ``rows`` in the benchmark's blocks."""
    started = time.perf_counter()
    for start in range(0, len(rows), BLOCK):
        model.score(rows[start : start + BLOCK])
    return time.perf_counter() - started


def run_dataset(data: BenchmarkDataset, k: int, config_path: Path) -> dict[str, Any]:
    config, source = tuned_config(data.name, config_path)
    log.info("%s: %s (%s)", data.name, config.label(), source)
    validation, test = data.validation, data.test

    val_model, val_matrix, val_train_seconds = train(data, validation, config)
    rankers, fit_seconds = {}, {}
    for name, params in RANKERS.items():
        started = time.perf_counter()
        rankers[name] = fit_final_ranker(
            val_model,
            validation.split.train,
            validation.eval_users,
            validation.test_rows,
            data.item_artist,
            track_listeners(validation),
            confidence=val_matrix.user_items,
            params=params,
        )
        fit_seconds[name] = time.perf_counter() - started
        log.info(
            "%s: %s fitted in %.1f s: %s",
            data.name,
            name,
            fit_seconds[name],
            rankers[name].metadata,
        )
    del val_model, val_matrix

    test_model, test_matrix, test_train_seconds = train(data, test, config)
    inputs = RankerInputs(
        test_matrix.user_items, test.split.train, data.item_artist, track_listeners(test)
    )
    models: dict[str, Any] = {
        BLEND: test_model,
        **{name: Ranked(test_model, ranker, inputs) for name, ranker in rankers.items()},
        ALS_ALONE: test_model.base,
    }
    methods: dict[str, dict[str, Any]] = {}
    per_user: dict[str, npt.NDArray[np.float64]] = {}
    rules = shipped_rules(k)
    for name, model in models.items():
        begun = time.perf_counter()
        lists = playlists(data, test, model, rules)
        seconds = time.perf_counter() - begun
        per_user[name] = ndcg_per_user(lists, test.test_rows)
        methods[name] = {
            "ndcg": float(per_user[name].mean()),
            "recall": recall_at_k(lists, test.test_rows),
            "pipeline_seconds": round(seconds, 2),
        }
        log.info("%s %-28s %s", data.name, name, json.dumps(methods[name]))
    plain: dict[str, dict[str, float]] = {}
    for name in (BLEND, *RANKERS):
        lists = playlists(data, test, models[name], PlaylistRules(k, k))
        plain[name] = {
            "ndcg": float(ndcg_per_user(lists, test.test_rows).mean()),
            "recall": recall_at_k(lists, test.test_rows),
        }
    blend_ndcg = methods[BLEND]["ndcg"]
    ratios = {}
    for name in RANKERS:
        low, high = _bootstrap_ratio(per_user[name], per_user[BLEND])
        value = methods[name]["ndcg"] / blend_ndcg if blend_ndcg > 0 else math.nan
        ratios[name] = {"ndcg": value, "ci95": [low, high]}
    # The gate a weekly run would apply: the best on the validation fold's held-out
    # listeners (the early-stopping slice: the same listeners for both fits).
    holdout = {BLEND: rankers[RANKER].metadata.get("holdout_ndcg_blend", math.nan)}
    holdout |= {
        name: ranker.metadata.get("holdout_ndcg", math.nan) for name, ranker in rankers.items()
    }
    pick = max(holdout, key=lambda name: -math.inf if math.isnan(holdout[name]) else holdout[name])
    candidates = models[RANKER].candidates(test.eval_users)
    test_labels = labels_of(candidates, test.test_rows)
    return {
        "dataset": data.summary(),
        "k": k,
        "config": {
            "formula": config.formula,
            "als": asdict(config.params),
            "blend": config.blend.text(),
            "source": source,
        },
        "ranker_params": {name: asdict(params) for name, params in RANKERS.items()},
        "methods": methods,
        "ratio_vs_blend": ratios,
        "no_reranking": plain,
        "validation_gate": {"holdout_ndcg": holdout, "pick": pick},
        "train_seconds": {
            "validation": round(val_train_seconds, 2),
            "test": round(test_train_seconds, 2),
        },
        "fit": {
            name: {"ranker_fit_seconds": round(fit_seconds[name], 2), **ranker.metadata}
            for name, ranker in rankers.items()
        },
        "scoring_seconds": {
            name: round(scoring_seconds(models[name], test.eval_users), 2)
            for name in (BLEND, *RANKERS)
        },
        "test_candidates": {
            "per_listener": float(len(candidates.rows) / max(candidates.n_listeners, 1)),
            "recall": float(test_labels.sum() / max(test.test_rows.nnz, 1)),
        },
        "importance_gain": {
            name: dict(
                sorted(ranker.importance("gain").items(), key=lambda item: item[1], reverse=True)
            )
            for name, ranker in rankers.items()
        },
    }


def print_summary(name: str, result: dict[str, Any]) -> None:
    k = result["k"]
    print(f"\n=== {name}: K = {k}, {result['dataset']['test']['eval_users']} listeners ===")
    print(f"config: {json.dumps(result['config'])}")
    for method, m in result["methods"].items():
        print(
            f"  {method:28s} NDCG@{k} {m['ndcg']:.4f}  recall@{k} {m['recall']:.4f}  "
            f"pipeline {m['pipeline_seconds']:.1f} s"
        )
    for method, r in result["ratio_vs_blend"].items():
        print(f"  {method} / blend NDCG {r['ndcg']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
    for method, m in result["no_reranking"].items():
        print(f"  no re-ranking: {method:28s} NDCG {m['ndcg']:.4f} recall {m['recall']:.4f}")
    for method, fit in result["fit"].items():
        print(
            f"  {method}: fit {fit['ranker_fit_seconds']:.1f} s (features "
            f"{fit['feature_seconds']:.1f} s), {fit['best_iteration']} rounds, {fit['rows']} "
            f"rows, {fit['positives']} positives, validation candidate recall "
            f"{fit['candidate_recall']:.3f}"
        )
    gate = result["validation_gate"]
    held = ", ".join(f"{m} {v:.4f}" for m, v in gate["holdout_ndcg"].items())
    print(f"  validation holdout NDCG@{k} of the candidates: {held}; a gate picks {gate['pick']}")
    seconds = ", ".join(f"{m} {v:.1f} s" for m, v in result["scoring_seconds"].items())
    print(f"  scoring: {seconds}")
    c = result["test_candidates"]
    print(f"  test candidates {c['per_listener']:.0f}/listener, recall {c['recall']:.3f}")
    for method, importance in result["importance_gain"].items():
        top = ", ".join(f"{f} {v:.2f}" for f, v in list(importance.items())[:6])
        print(f"  gain importance, {method}: {top}")


def markdown_report(results: dict[str, Any], header: dict[str, Any]) -> str:
    k = next(iter(results.values()))["k"] if results else 50
    lines = [
        "# Final ranker (LightGBM lambdarank) vs the linear blend",
        "",
        f"`python benchmarks/ranker.py {header['arguments']}` on {header['machine']}: "
        f"{header['total_seconds']:.0f} s in all. Every number below comes from that one run.",
        "",
        "Each data set's tuned configuration (formula, ALS, blend) is trained on the "
        "validation fold's training part; the ranker is fitted on the validation fold's "
        "held-out tracks; the same configuration is trained on the test fold's training "
        "part and the fitted ranker is applied over it (it never sees a test label). "
        f"Playlists through the product pipeline with the shipped rules (length {k}, artist "
        "cap 2, MMR 0.2, popularity penalty 0.1). One set of ranker settings for every "
        f"data set: `{json.dumps(asdict(RANKER_PARAMS))}`; *final ranker* boosts "
        "corrections to the blend's scores (`start_from` blend_score), *from scratch* the "
        "same settings boosting from zero.",
        "",
        f"| data set | method | NDCG@{k} | recall@{k} | NDCG / blend (95 % CI) | fit s | "
        "scoring s |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for name, result in results.items():
        for method, m in result["methods"].items():
            ratio = result["ratio_vs_blend"].get(method)
            cell = (
                f"{ratio['ndcg']:.3f} ({ratio['ci95'][0]:.3f}-{ratio['ci95'][1]:.3f})"
                if ratio
                else ("1" if method == BLEND else "")
            )
            fit = result["fit"].get(method)
            fit_cell = f"{fit['ranker_fit_seconds']:.1f}" if fit else ""
            scoring = result["scoring_seconds"].get(method)
            scoring_cell = f"{scoring:.1f}" if scoring is not None else ""
            lines.append(
                f"| {name} | {method} | {m['ndcg']:.4f} | {m['recall']:.4f} | {cell} | "
                f"{fit_cell} | {scoring_cell} |"
            )
    lines += [
        "",
        "Fit s: the validation candidates' features plus LightGBM. Scoring s: `score` over "
        "the test fold's listeners (the blend: its scores; a ranker: also candidates, "
        "features and LightGBM's predictions).",
        "",
        f"Diagnostics (test fold): NDCG@{k} without re-ranking or artist cap, candidates per "
        "listener and the share of test tracks among them (a ranker's ceiling), the "
        "boosting rounds early stopping kept, and what a validation gate sees: NDCG@"
        f"{k} of the candidates of the validation listeners held out of the fit (the "
        "early-stopping slice), ranked by the blend, the ranker and the one from scratch, "
        "and which it would ship:",
        "",
        "| data set | configuration | blend, no re-ranking | ranker, no re-ranking | "
        "from scratch, no re-ranking | candidates / listener | test tracks in candidates | "
        "rounds (from scratch) | validation rows (positives) | validation holdout: blend / "
        "ranker / from scratch | gate picks |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for name, result in results.items():
        plain = result["no_reranking"]
        c, fit = result["test_candidates"], result["fit"]
        cfg = result["config"]
        label = f"{cfg['formula']}, blend {cfg['blend']}"
        if not cfg["source"].startswith("tuned"):
            label += " (shipped defaults)"
        lines.append(
            f"| {name} | {label} | {plain[BLEND]['ndcg']:.4f} | {plain[RANKER]['ndcg']:.4f} | "
            f"{plain[SCRATCH]['ndcg']:.4f} | {c['per_listener']:.0f} | {c['recall']:.3f} | "
            f"{fit[RANKER]['best_iteration']} ({fit[SCRATCH]['best_iteration']}) | "
            f"{fit[RANKER]['rows']} ({fit[RANKER]['positives']}) | "
            + " / ".join(
                f"{value:.4f}" for value in result["validation_gate"]["holdout_ndcg"].values()
            )
            + f" | {result['validation_gate']['pick']} |"
        )
    lines += ["", "LightGBM gain importance (share of the total gain, features >= 1 %):", ""]
    for name, result in results.items():
        for method, importance in result["importance_gain"].items():
            top = ", ".join(
                f"{feature} {share:.2f}" for feature, share in importance.items() if share >= 0.01
            )
            lines.append(f"* {name}, {method}: {top}")
    lines.append("")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASET_GROUPS), default="all")
    parser.add_argument("--k", type=int, default=50, help="playlist length and metric cut-off")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--quick", action="store_true", help="the smaller simulated world quality.py --quick uses"
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="quality.py results with tuned rows"
    )
    for name, (_, default) in REAL_LOADERS.items():
        parser.add_argument(f"--{name}", type=Path, default=default, help=f"{name} folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("recsys").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in DATASET_GROUPS[args.dataset]:
        loaded = time.perf_counter()
        data = _load(name, args)
        results[name] = run_dataset(data, args.k, args.config)
        results[name]["seconds"] = round(time.perf_counter() - loaded, 1)
        print_summary(name, results[name])
    header = {
        "arguments": " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "total_seconds": time.perf_counter() - started,
    }
    (args.out / "ranker.json").write_text(
        json.dumps({"run": header, "results": results}, indent=2, default=str) + "\n"
    )
    (args.out / "ranker.md").write_text(markdown_report(results, header))
    print(f"\nwrote {args.out}/ranker.{{md,json}} ({header['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

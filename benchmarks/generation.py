"""Generation against its GEMM bound (issue 15, item 2): the shipped playlist pipeline
over random factors and a random sparse history, and the raw scoring products of the same
candidate generators, in the same run with the same BLAS threads.

Usage::

    python benchmarks/generation.py [--users 100000] [--tracks 100000] [--factors 32]
        [--history 100] [--block-sizes 2048] [--blas-threads 2] [--models als,blend]
        [--no-explain] [--compare-with /tmp/old_playlist.py] [--quick] [--json FILE]

What it measures, per model (``als``: ALS alone; ``blend``: the shipped default, ALS +
RP3beta 0.5 with random K=100 walk weights) and per block size:

- ``generate_s``: :meth:`recsys.pipeline.PlaylistPipeline.personal` for every listener
  with the shipped rules (length 50, artist cap 2, MMR 0.2, popularity penalty 0.1, pool
  x4, 5 cold slots, artist thumbs-down limit 2) and, unless ``--no-explain``, the reasons
  of each block (:meth:`~recsys.pipeline.PlaylistPipeline.explain`): what a generation
  chunk computes before it hands rows to the database.
- ``gemm_bound_s``: :func:`gemm_bound_seconds`, the raw scoring products of the model's
  candidate generators block by block into a buffer allocated once (ALS: user factors x
  item factors; RP3beta: the listeners' sparse rows x the walk weights, densified).
- ``peak_rss_mb``: the peak resident memory of a fresh process that builds the data and
  runs that one configuration, and ``generation_rss_mb`` the part above what it held
  before generating (the model and the history).

Wall and CPU seconds of this process are printed; the ratio is ``generate / gemm_bound``.
``--compare-with FILE`` also times the ``generate_playlists`` of another version of
``recsys/playlist.py`` (e.g. ``git show HEAD:recsys/playlist.py > /tmp/old_playlist.py``)
on the same data, for a before/after in one run.

Other benchmarks import :func:`gemm_bound_seconds` and :func:`generation_seconds`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from threadpoolctl import threadpool_limits  # noqa: E402

from recsys.als import ALSModel, ALSParams, ColdStartFactors  # noqa: E402
from recsys.blend import Blend, WeekModel  # noqa: E402
from recsys.neighbors import RP3beta  # noqa: E402
from recsys.pipeline import PlaylistPipeline  # noqa: E402
from recsys.playlist import PlaylistRules  # noqa: E402

#: The shipped rules (the settings' defaults).
SHIPPED_RULES = PlaylistRules(
    length=50,
    max_tracks_per_artist=2,
    diversity=0.2,
    popularity_penalty=0.1,
    pool_factor=4,
    cold_slots=5,
    cold_min_score_ratio=0.5,
    artist_thumbs_down_limit=2,
)


@dataclass(frozen=True)
class World:
    """Random data of one size: a model and what the pipeline reads."""

    model: WeekModel
    known: sp.csr_matrix
    thumbs_down: sp.csr_matrix
    track_artist: npt.NDArray[np.int64]
    track_listeners: npt.NDArray[np.int64]
    titles: npt.NDArray[np.str_]


def build_world(
    n_users: int,
    n_tracks: int,
    factors: int,
    history: int,
    *,
    blend: bool,
    seed: int = 0,
    cold_share: float = 0.01,
) -> World:
    """Random factors (normal, scaled like trained ones), a random history of about
    ``history`` tracks per listener (2 % of them thumbed down), ~8 tracks per artist,
    ``cold_share`` of the tracks cold-start ones; with ``blend``, an RP3beta partner with
    K=100 random walk weights per track, blended at 0.5."""
    rng = np.random.default_rng(seed)
    scale = np.float32(1.0 / np.sqrt(factors))
    user_factors = (rng.standard_normal((n_users, factors), dtype=np.float32) * scale).astype(
        np.float32
    )
    item_factors = (rng.standard_normal((n_tracks, factors), dtype=np.float32) * scale).astype(
        np.float32
    )
    cold_mask = rng.random(n_tracks) < cold_share
    counts = rng.poisson(history, size=n_users).clip(1, n_tracks)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # Popular tracks are heard more: a Zipf-like draw of columns, then deduplicated.
    warm = np.flatnonzero(~cold_mask)
    draws = warm[
        (rng.pareto(1.2, size=int(indptr[-1])) * len(warm) / 50).astype(np.int64) % len(warm)
    ]
    rows = np.repeat(np.arange(n_users), counts)
    played = sp.csr_matrix(
        (np.ones(len(draws), dtype=np.float32), (rows, draws)), shape=(n_users, n_tracks)
    )
    played.sum_duplicates()
    played.data[:] = 1.0 + rng.random(len(played.data)).astype(np.float32)
    down = rng.random(len(played.data)) < 0.02
    confidence = played.copy()
    confidence.data[down] = -1.0
    thumbs_down = sp.csr_matrix(confidence < 0, dtype=np.float32)
    item_factors[cold_mask] = 0.0
    track_listeners = np.asarray((played > 0).sum(axis=0)).ravel().astype(np.int64)
    track_listeners[cold_mask] = 0
    user_ids = np.array([f"u{i}" for i in range(n_users)])
    track_ids = np.array([f"t{i}" for i in range(n_tracks)])
    cold = ColdStartFactors(
        cold_mask=cold_mask,
        factors=(rng.standard_normal((int(cold_mask.sum()), factors)) * scale).astype(np.float32),
    )
    als = ALSModel(
        user_factors,
        item_factors,
        user_ids,
        track_ids,
        ALSParams(factors=factors),
        "benchmark",
        {},
        cold,
    )
    model: WeekModel = als
    if blend:
        k = min(100, n_tracks - 1)
        weight_rows = np.repeat(np.arange(n_tracks), k)
        weight_columns = rng.integers(0, n_tracks, size=n_tracks * k)
        weights = sp.csr_matrix(
            (rng.random(n_tracks * k).astype(np.float32), (weight_rows, weight_columns)),
            shape=(n_tracks, n_tracks),
        )
        binary = sp.csr_matrix(confidence > 0, dtype=np.float32)
        partner = RP3beta(
            binary,
            weights,
            user_ids,
            track_ids,
            alpha=1.0,
            beta=0.5,
            K=k,
            normalize_similarity=False,
        )
        model = Blend(als, {"rp3beta": (partner, 0.5)})
    artists = (np.arange(n_tracks) * 7919 % max(n_tracks // 8, 1)).astype(np.int64)
    titles = np.array([f"Track {i} — Artist {a}" for i, a in enumerate(artists)])
    return World(model, played, thumbs_down, artists, track_listeners, titles)


def gemm_bound_seconds(model: WeekModel, n_users: int, block_size: int) -> float:
    """Wall seconds of the raw scoring products of ``model``'s candidate generators for
    its first ``n_users`` listeners, ``block_size`` at a time, each into a buffer allocated
    once: ALS's user factors x (scoring) item factors, and for a :class:`Blend` each
    partner's sparse training rows x its weights, densified into a buffer. Run under the
    caller's BLAS thread limit (the same one as the generation it is compared with)."""
    als = model.base
    partners = (
        [partner for partner, _ in model.partners.values()] if isinstance(model, Blend) else []
    )
    item_factors = als.scoring_item_factors
    n_tracks = item_factors.shape[0]
    width = min(block_size, n_users)
    scores = np.empty((width, n_tracks), dtype=np.float32)
    dense = np.empty((width, n_tracks), dtype=np.float32) if partners else None
    started = time.perf_counter()
    for start in range(0, n_users, block_size):
        rows = np.arange(start, min(n_users, start + block_size))
        np.matmul(als.user_factors[rows], item_factors.T, out=scores[: len(rows)])
        for partner in partners:
            product = partner.user_items[rows] @ partner.weights
            assert dense is not None
            out = dense[: len(rows)]
            out[:] = 0.0
            product = sp.csr_matrix(product)
            product.toarray(out=out)
    return time.perf_counter() - started


def generation_seconds(
    pipeline: PlaylistPipeline,
    user_rows: npt.NDArray[np.int64],
    known: sp.csr_matrix,
    *,
    thumbs_down: sp.csr_matrix | None = None,
    played: sp.csr_matrix | None = None,
    titles: npt.NDArray[np.str_] | None = None,
    generate: Callable[..., Any] | None = None,
) -> float:
    """Wall seconds of ``pipeline``'s personal playlists of ``user_rows`` and, when
    ``played`` and ``titles`` are given, their reasons block by block (what a generation
    chunk computes). ``generate`` replaces :func:`recsys.playlist.generate_playlists`
    (another version of it, same arguments) for a before/after comparison."""
    started = time.perf_counter()
    if generate is None:
        blocks = pipeline.personal(user_rows, known, thumbs_down=thumbs_down)
    else:
        blocks = generate(
            pipeline.model,
            known,
            pipeline.track_artist,
            pipeline.rules,
            user_rows=user_rows,
            eligible=pipeline.track_listeners > 0,
            block_size=pipeline.block_size,
            cold_mask=pipeline.cold_mask,
            item_factors=pipeline.item_vectors,
            popularity=pipeline.track_listeners.astype(np.float64),
            thumbs_down=thumbs_down if pipeline.rules.artist_thumbs_down_limit > 0 else None,
        )
    for block in blocks:
        if played is not None and titles is not None:
            pipeline.explain(block, played[block.user_rows], titles)
    return time.perf_counter() - started


def _load_generate(path: Path) -> Callable[..., Any]:
    spec = importlib.util.spec_from_file_location("reference_playlist", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    generate: Callable[..., Any] = module.generate_playlists
    return generate


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(args: argparse.Namespace, model_name: str, block_size: int) -> dict[str, Any]:
    """One model at one block size, in this process."""
    world = build_world(
        args.users, args.tracks, args.factors, args.history, blend=model_name == "blend"
    )
    pipeline = PlaylistPipeline(
        SHIPPED_RULES, world.model, world.track_artist, world.track_listeners, block_size
    )
    rows = np.arange(args.users, dtype=np.int64)
    explain = {} if args.no_explain else {"played": world.known, "titles": world.titles}
    before_mb = _rss_mb()
    result: dict[str, Any] = {"model": model_name, "block_size": block_size}
    with threadpool_limits(args.blas_threads, "blas"):
        cpu = time.process_time()
        result["gemm_bound_s"] = gemm_bound_seconds(world.model, args.users, block_size)
        result["gemm_bound_cpu_s"] = time.process_time() - cpu
        cpu = time.process_time()
        result["generate_s"] = generation_seconds(
            pipeline, rows, world.known, thumbs_down=world.thumbs_down, **explain
        )
        result["generate_cpu_s"] = time.process_time() - cpu
        result["peak_rss_mb"] = _rss_mb()
        result["generation_rss_mb"] = result["peak_rss_mb"] - before_mb
        if args.compare_with:
            cpu = time.process_time()
            result["reference_generate_s"] = generation_seconds(
                pipeline,
                rows,
                world.known,
                thumbs_down=world.thumbs_down,
                generate=_load_generate(Path(args.compare_with)),
                **explain,
            )
            result["reference_generate_cpu_s"] = time.process_time() - cpu
    result["ratio"] = result["generate_s"] / result["gemm_bound_s"]
    result["cpu_ratio"] = result["generate_cpu_s"] / result["gemm_bound_cpu_s"]
    if args.compare_with:
        result["reference_ratio"] = result["reference_generate_s"] / result["gemm_bound_s"]
        result["reference_cpu_ratio"] = (
            result["reference_generate_cpu_s"] / result["gemm_bound_cpu_s"]
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--history", type=int, default=100, help="mean tracks per listener")
    parser.add_argument("--block-sizes", default="2048")
    parser.add_argument("--blas-threads", type=int, default=2)
    parser.add_argument("--models", default="als,blend")
    parser.add_argument("--no-explain", action="store_true")
    parser.add_argument("--compare-with", default=None, help="another recsys/playlist.py")
    parser.add_argument("--quick", action="store_true", help="10k listeners x 20k tracks")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.tracks = 10_000, 20_000
    if args.child:
        model_name, block = args.child.split(":")
        print(json.dumps(run_one(args, model_name, int(block))))
        return 0
    results = []
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]
    if args.json:
        index = passed.index(args.json)
        passed = passed[:index] + passed[index + 1 :]
    print(
        f"{args.users} listeners x {args.tracks} tracks, {args.factors} factors, "
        f"~{args.history} history, BLAS threads {args.blas_threads}"
    )
    header = f"{'model':6} {'block':>6} {'gemm s':>8} {'gen s':>8} {'ratio':>6} {'cpu ratio':>9}"
    header += f" {'peak MiB':>9} {'gen MiB':>8}"
    if args.compare_with:
        header += f" {'ref gen s':>9} {'ref ratio':>9} {'ref cpu':>8}"
    print(header)
    for model_name in args.models.split(","):
        for block in (int(b) for b in args.block_sizes.split(",")):
            # A fresh process per configuration: its peak memory is this one's alone.
            output = subprocess.run(
                [sys.executable, __file__, *passed, "--child", f"{model_name}:{block}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(output.strip().splitlines()[-1])
            results.append(result)
            line = (
                f"{model_name:6} {block:>6} {result['gemm_bound_s']:>8.2f} "
                f"{result['generate_s']:>8.2f} {result['ratio']:>6.2f} "
                f"{result['cpu_ratio']:>9.2f} {result['peak_rss_mb']:>9.0f} "
                f"{result['generation_rss_mb']:>8.0f}"
            )
            if args.compare_with:
                line += (
                    f" {result['reference_generate_s']:>9.2f} {result['reference_ratio']:>9.2f}"
                    f" {result['reference_cpu_ratio']:>8.2f}"
                )
            print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The weekly pipeline at a given scale, stage by stage, each stage beside its reference
measured in the same run (issue 15).

Usage::

    python benchmarks/scale.py --size tiny|S|M|L [--json FILE] [--cache DIR]
        [--postgres URL] [--skip-spark-als]

Sizes (listeners x tracks, events): tiny 300 x 500 (30k, for the test), S 10k x 20k (1M),
M 100k x 100k (10M), L 1M x 200k (100M). The world is simulated once (:mod:`lab.simulate`,
100 plays per listener, 4 % of the listened pairs thumbed) into ``--cache`` (default
``/tmp/scale-cache/<size>/data``), under a lock file beside it so that two processes wanting
the same world simulate it once; later runs reuse it.

The run is the weekly run's own steps (:mod:`jobs.weekly`) on a scratch PostgreSQL database
(created from ``--postgres``, upgraded, dropped at the end) with self-tuning off:

* ``aggregate``: :func:`jobs.weekly.aggregate` (the Spark job, its JVM started and stopped
  in the stage) against ``duckdb_aggregate`` of ``benchmarks/aggregate_duckdb.py``;
* ``catalog``: the catalog into the database (:func:`jobs.week.load_catalog`);
* ``load``: the week's aggregates read into arrays (:func:`jobs.week.open_week`);
* ``train``: :func:`jobs.weekly.step_train`, against implicit's and Spark MLlib's ALS per
  iteration on the same matrix and rank (each fitted for 1 and 3 iterations, the
  difference halved, so set-up cancels; implicit with the better of its CPU solvers);
* ``gate``: :func:`jobs.weekly.step_gate`;
* ``generate``: :func:`jobs.generation.build_playlists` of every chunk, against the GEMM
  bound (``gemm_bound_seconds`` of ``benchmarks/generation.py``, or the raw scoring
  products of the shipped generators here: ALS's factors in blocks of
  ``CRATEDIGGER_GENERATE_BLOCK_SIZE`` and each blend partner's sparse product, with the
  same BLAS threads);
* ``publish``: :func:`recsys.db.repository.replace_week_playlists` of every chunk (with
  its ``job_runs`` row, in one transaction, as :func:`jobs.weekly.step_generate_chunk`)
  and :func:`jobs.weekly.step_publish`, against the bare ``COPY`` of the same rows
  (``benchmarks/publish.py``), chunk by chunk, alternating.

Each stage prints wall seconds, CPU seconds of this process and of every process it
started (the Spark JVM included: read from ``/proc`` while they run, from the reaped
children's usage once they end), rows per second and the peak resident memory of the
process tree (sampled every 0.2 s; this process's own peak exactly, from ``VmHWM``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import importlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: The week the worlds end before (Monday 00:00 UTC).
WEEK = dt.date(2026, 11, 16)
#: The week the bare-COPY reference writes into (never published).
COPY_WEEK = WEEK + dt.timedelta(weeks=1)
#: size -> (listeners, tracks, events).
SIZES = {
    "tiny": (300, 500, 30_000),
    "S": (10_000, 20_000, 1_000_000),
    "M": (100_000, 100_000, 10_000_000),
    "L": (1_000_000, 200_000, 100_000_000),
}
CACHE_ROOT = Path("/tmp/scale-cache")
#: Settings of a size other than the defaults: the test's tiny world runs Spark with 2
#: shuffle partitions (as the tests do) and MLlib's ALS with 2 blocks instead of 10.
SIZE_SETTINGS = {"tiny": {"CRATEDIGGER_SPARK_SHUFFLE_PARTITIONS": "2"}}
SPARK_ALS_BLOCKS = {"tiny": 2}
#: Keys the JSON always has (seconds), each a stage or its reference of the same run.
KEYS = (
    "aggregate_s",
    "train_s",
    "generate_s",
    "publish_s",
    "gemm_bound_s",
    "peak_rss_mb",
    "duckdb_aggregate_s",
    "implicit_als_iter_s",
    "spark_als_iter_s",
    "copy_publish_s",
)
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ process-tree figures


def _descendants() -> list[int]:
    """Pids of every live process below this one (the Spark JVM and its launcher)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _proc_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def tree_cpu() -> float:
    """CPU seconds of this process, of its reaped children and of the live descendants."""
    times = os.times()
    own = times.user + times.system + times.children_user + times.children_system
    return own + sum(_proc_cpu(pid) for pid in _descendants())


def tree_rss() -> int:
    """Resident bytes of this process and its live descendants."""
    return _proc_rss(os.getpid()) + sum(_proc_rss(pid) for pid in _descendants())


def _own_hwm() -> int:
    """This process's peak resident bytes since the last :func:`_reset_hwm`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


@dataclass
class Stage:
    """One timed stage: wall and CPU seconds, peak memory, the rows it handled."""

    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_mb: float = 0.0
    rows: int = 0
    unit: str = "rows"

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Meter:
    """Times stages; a thread samples the process tree's memory for the stage's peak."""

    every_s: float = 0.2
    stages: dict[str, Stage] = field(default_factory=dict)
    _peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._sample, name="scale-meter", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self._peak = max(self._peak, tree_rss())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def stage(self, name: str, unit: str = "rows") -> Iterator[Stage]:
        """Time the block into the stage ``name``; a stage timed again adds up (chunks)."""
        stage = self.stages.setdefault(name, Stage(name, unit=unit))
        _reset_hwm()
        self._peak = tree_rss()
        last, wall, cpu = stage.wall_s, time.perf_counter(), tree_cpu()
        try:
            yield stage
        finally:
            stage.wall_s += time.perf_counter() - wall
            stage.cpu_s += tree_cpu() - cpu
            peak = max(self._peak, tree_rss(), _own_hwm())
            stage.peak_mb = max(stage.peak_mb, peak / 2**20)
            if stage.wall_s - last >= 10 or last == 0:  # chunks: now and then
                print(f"  {name}: {stage.wall_s:.1f} s", file=sys.stderr, flush=True)

    def timed(self, name: str, fn: Callable[[], Any], unit: str = "rows") -> Any:
        with self.stage(name, unit):
            return fn()


# ------------------------------------------------------------------------------ the world


def _lock_path(cache: Path, size: str) -> Path:
    if cache == CACHE_ROOT / size / "data":
        return CACHE_ROOT / f"{size}.lock"
    return cache.parent / f"{cache.name}.lock"


def ensure_world(size: str, cache: Path) -> dict[str, Any]:
    """The size's world in ``cache``, simulated now unless a finished one is there (its
    ``world.json`` is written last); the lock makes a concurrent run wait for it."""
    from lab.simulate import simulate_world

    listeners, tracks, events = SIZES[size]
    marker = cache / "world.json"
    lock = _lock_path(cache, size)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if marker.exists():
            return dict(json.loads(marker.read_text()))
        partial = cache.parent / f".{cache.name}-partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        started = time.perf_counter()
        summary = simulate_world(
            partial,
            users=listeners,
            tracks=tracks,
            seed=7,
            end=dt.datetime.combine(WEEK, dt.time(), tzinfo=dt.UTC),
            plays_per_user=events / listeners,
            progress=sys.stderr.isatty(),
        )
        world = {
            "size": size,
            "listeners": summary.users,
            "tracks": summary.tracks,
            "plays": summary.plays,
            "thumbs": summary.thumbs,
            "simulate_s": round(time.perf_counter() - started, 1),
        }
        (partial / "world.json").write_text(json.dumps(world, indent=2) + "\n")
        partial.rename(cache)
        return world


# --------------------------------------------------------------------------- references


def _optional(name: str) -> Any | None:
    """``benchmarks/<name>.py`` as a module, or None while it does not exist."""
    if not (REPO / "benchmarks" / f"{name}.py").exists():
        return None
    return importlib.import_module(f"benchmarks.{name}")


def gemm_bound(model: Any, n_users: int, block_size: int) -> tuple[float, str]:
    """Seconds of the raw scoring products of the shipped generators over the first
    ``n_users`` listeners in blocks of ``block_size``: ALS's user x item factors into one
    reused buffer, and each blend partner's sparse rows x weights."""
    generation = _optional("generation")
    if generation is not None and hasattr(generation, "gemm_bound_seconds"):
        seconds = generation.gemm_bound_seconds(model, n_users, block_size)
        return float(seconds), "benchmarks/generation.py"
    base = getattr(model, "base", model)
    users = np.ascontiguousarray(base.user_factors[:n_users])
    items = np.ascontiguousarray(base.scoring_item_factors.T)
    partners = [partner for partner, _ in getattr(model, "partners", {}).values()]
    out = np.empty((min(block_size, n_users), items.shape[1]), dtype=np.float32)
    started = time.perf_counter()
    for first in range(0, n_users, block_size):
        block = users[first : first + block_size]
        np.matmul(block, items, out=out[: len(block)])
        for partner in partners:
            partner.user_items[first : first + len(block)] @ partner.weights
    return time.perf_counter() - started, "benchmarks/scale.py"


def implicit_als_iteration(
    user_items: Any, factors: int, reg: float, alpha: float
) -> dict[str, Any]:
    """Seconds per iteration of implicit's CPU ALS (conjugate gradient and Cholesky, the
    better one), from fits of 1 and 3 iterations, BLAS on one thread as implicit wants."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    per: dict[str, tuple[float, float]] = {}
    for solver, use_cg in (("cg", True), ("cholesky", False)):
        runs = {}
        for iterations in (1, 3):
            model = AlternatingLeastSquares(
                factors=factors,
                regularization=reg,
                alpha=alpha,
                iterations=iterations,
                use_cg=use_cg,
                random_state=42,
            )
            with threadpool_limits(1, "blas"):
                wall, cpu = time.perf_counter(), tree_cpu()
                model.fit(user_items, show_progress=False)
                runs[iterations] = (time.perf_counter() - wall, tree_cpu() - cpu)
        per[solver] = _per_iteration(runs)
    best = min(per, key=lambda name: per[name][0])
    return {"solver": best, "wall_s": per[best][0], "cpu_s": per[best][1], "solvers": per}


def spark_als_iteration(
    user_items: Any,
    factors: int,
    reg: float,
    alpha: float,
    settings: Any,
    work: Path,
    blocks: int = 10,
) -> dict[str, Any]:
    """Seconds per iteration of Spark MLlib's implicit ALS on the same matrix and rank, from
    fits of 1 and 3 iterations on the cached ratings, in a session like the aggregation's."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.ml.recommendation import ALS

    from jobs.spark import spark_session
    from jobs.weekly import spark_local_dir

    coo = user_items.tocoo()
    path = work / "ratings.parquet"
    pq.write_table(
        pa.table(
            {
                "user": coo.row.astype(np.int32),
                "item": coo.col.astype(np.int32),
                "rating": coo.data.astype(np.float32),
            }
        ),
        path,
    )
    with spark_session(
        settings.spark_master,
        shuffle_partitions=settings.spark_shuffle_partitions,
        local_dir=spark_local_dir(settings),
        driver_memory=settings.spark_driver_memory,
    ) as spark:
        ratings = spark.read.parquet(str(path)).cache()
        ratings.count()
        runs = {}
        for iterations in (1, 3):
            als = ALS(
                rank=factors,
                maxIter=iterations,
                regParam=reg,
                alpha=alpha,
                implicitPrefs=True,
                userCol="user",
                itemCol="item",
                ratingCol="rating",
                seed=42,
                numUserBlocks=blocks,
                numItemBlocks=blocks,
            )
            wall, cpu = time.perf_counter(), tree_cpu()
            model = als.fit(ratings)
            model.userFactors.count()
            model.itemFactors.count()
            runs[iterations] = (time.perf_counter() - wall, tree_cpu() - cpu)
    wall, cpu = _per_iteration(runs)
    return {"wall_s": wall, "cpu_s": cpu}


def _per_iteration(runs: dict[int, tuple[float, float]]) -> tuple[float, float]:
    """(wall, CPU) seconds per iteration from fits of 1 and 3 iterations: half their
    difference; a third of the 3-iteration fit (set-up included) when noise makes the
    difference vanish (tiny matrices)."""
    wall, cpu = ((runs[3][i] - runs[1][i]) / 2 for i in (0, 1))
    if wall <= 0 or cpu <= 0:
        return runs[3][0] / 3, runs[3][1] / 3
    return wall, cpu


# ----------------------------------------------------------------------------- the run


def _scratch_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cratedigger_bench_scale_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return url, drop


def run_pipeline(
    meter: Meter, size: str, data_dir: Path, database_url: str, work: Path, spark_als: bool
) -> dict[str, Any]:
    """The weekly run's steps on ``data_dir`` into ``database_url``, each stage metered,
    with the references measured between them; returns the figures."""
    os.environ.update(
        {
            "CRATEDIGGER_DATA_DIR": str(work / "state"),
            "CRATEDIGGER_DATABASE_URL": database_url,
            "CRATEDIGGER_TUNE_EVERY_WEEKS": "0",
            **SIZE_SETTINGS.get(size, {}),
        }
    )
    from benchmarks import publish as publish_bench
    from jobs import weekly
    from jobs.db import sessions
    from jobs.generation import build_playlists
    from jobs.training import ResolvedParams, cached_model
    from jobs.week import Storage, Week, load_catalog
    from migrations import upgrade
    from recsys.db import repository
    from recsys.db.engine import make_engine
    from recsys.db.models import ModelVersion
    from recsys.settings import load_settings

    settings = load_settings()
    upgrade(database_url)
    figures: dict[str, Any] = {}
    run_id = weekly.start_run(settings, data_dir, WEEK, "benchmark")
    aggregation = f"run-{run_id}"
    db = sessions(settings)
    with db.begin() as session:
        run = repository.get_weekly_run(session, run_id)
        assert run is not None
        run.aggregation = aggregation

    with meter.stage("aggregate", "events") as stage:
        summary = weekly.aggregate(settings, data_dir, WEEK, aggregation)
        stage.rows = sum(summary["events_read"].values())
    figures["interactions"] = int(summary["interactions"])
    paths = Storage.of(settings).paths(WEEK, aggregation)
    duckdb = _optional("aggregate_duckdb")
    if duckdb is not None and hasattr(duckdb, "duckdb_aggregate"):
        with meter.stage("duckdb aggregate (reference)", "events") as stage:
            figures["duckdb_aggregate_s"] = float(
                duckdb.duckdb_aggregate(data_dir, work / "duckdb")
            )
            stage.rows = sum(summary["events_read"].values())
    else:
        figures["duckdb_aggregate_s"] = None
        print("benchmarks/aggregate_duckdb.py is missing: no DuckDB reference", file=sys.stderr)

    with meter.stage("catalog", "catalog rows") as stage:
        stage.rows = sum(load_catalog(db, paths).values())
    with meter.stage("load", "interactions") as stage:
        week = Week.of(settings, WEEK, aggregation)  # cached: the steps below reuse it
        stage.rows = int(week.data.matrix.user_items.nnz)
    with meter.stage("train", "interactions") as stage:
        version = weekly.step_train(settings, run_id)
        stage.rows = int(week.data.matrix.user_items.nnz)
    with meter.stage("gate", "listeners") as stage:
        try:
            figures["gate"] = weekly.step_gate(settings, run_id).get("reason")
        except weekly.GateRejected as exc:
            figures["gate"] = str(exc)
        stage.rows = len(week.personal)

    with db() as session:
        model_row = session.get(ModelVersion, version)
        assert model_row is not None
        artifact = model_row.artifact_path
    model = cached_model(artifact)
    engine = make_engine(database_url)
    with db.begin() as session:
        copy_run = publish_bench._run_for(session, COPY_WEEK)
    for chunk in range(week.n_chunks):
        rows, newcomers = week.chunk(chunk)
        with db.begin() as session:
            repository.begin_step(session, run_id, "generate", chunk)
        with meter.stage("generate", "listeners") as generate:
            built = build_playlists(week.policy, model, week.data, rows, newcomers)
            generate.rows += len(built.playlists)
        with meter.stage("publish", "playlist tracks") as publish:
            with db.begin() as session:
                written = repository.replace_week_playlists(
                    session, WEEK, version, built.playlists, run_id
                )
                repository.finish_step(
                    session, run_id, "generate", chunk=chunk, counts={"playlist_tracks": written}
                )
            publish.rows += written
        rendered = publish_bench._rendered(db, COPY_WEEK, [built.playlists])
        with meter.stage("bare COPY (reference)", "playlist tracks") as copy:
            publish_bench._copy(engine, COPY_WEEK, copy_run, rendered)
            copy.rows += written
    with meter.stage("publish", "playlist tracks"):
        figures["published"] = weekly.step_publish(settings, run_id, week.n_chunks)["playlists"]

    block = week.policy.block_size
    with meter.stage("GEMM bound (reference)", "listeners") as stage:
        figures["gemm_bound_s"], figures["gemm_bound_source"] = gemm_bound(
            model, len(week.personal), block
        )
        stage.rows = len(week.personal)

    config = ResolvedParams.of(settings).config
    matrix = week.data.pairs.matrix(config.confidence).user_items.tocsr()
    als = config.als
    with meter.stage("implicit ALS (reference)", "interactions") as stage:
        figures["implicit_als"] = implicit_als_iteration(
            matrix, als.factors, als.regularization, als.alpha
        )
        stage.rows = int(matrix.nnz)
    if spark_als:
        with meter.stage("Spark MLlib ALS (reference)", "interactions") as stage:
            figures["spark_als"] = spark_als_iteration(
                matrix,
                als.factors,
                als.regularization,
                als.alpha,
                settings,
                work,
                SPARK_ALS_BLOCKS.get(size, 10),
            )
            stage.rows = int(matrix.nnz)
    engine.dispose()
    figures["listeners_scored"] = len(week.personal)
    figures["block_size"] = block
    figures["chunks"] = week.n_chunks
    return figures


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _cpu_ratio(stages: dict[str, Stage], stage: str, reference: str) -> float | None:
    """CPU seconds (process tree) of ``stage`` over those of ``reference``, when both ran."""
    if stage not in stages or reference not in stages:
        return None
    return _ratio(stages[stage].cpu_s, stages[reference].cpu_s)


def summarise(
    size: str, world: dict[str, Any], meter: Meter, got: dict[str, Any]
) -> dict[str, Any]:
    """The JSON: every stage's figures, the keys of :data:`KEYS` and the issue's ratios."""
    stages = meter.stages
    implicit, spark = got["implicit_als"], got.get("spark_als")
    out: dict[str, Any] = {
        "size": size,
        "world": world,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "aggregate_s": stages["aggregate"].wall_s,
        "train_s": stages["train"].wall_s,
        "generate_s": stages["generate"].wall_s,
        "publish_s": stages["publish"].wall_s,
        "gemm_bound_s": got["gemm_bound_s"],
        "gemm_bound_source": got["gemm_bound_source"],
        "peak_rss_mb": max(stage.peak_mb for stage in stages.values()),
        "duckdb_aggregate_s": got["duckdb_aggregate_s"],
        "implicit_als_iter_s": implicit["wall_s"],
        "implicit_als_solver": implicit["solver"],
        "spark_als_iter_s": spark["wall_s"] if spark else None,
        "copy_publish_s": stages["bare COPY (reference)"].wall_s,
        "aggregate_cpu_s": stages["aggregate"].cpu_s,
        "generate_peak_mb": stages["generate"].peak_mb,
        "implicit_als_iter_cpu_s": implicit["cpu_s"],
        "spark_als_iter_cpu_s": spark["cpu_s"] if spark else None,
        "stages": {
            name: {
                "wall_s": round(s.wall_s, 3),
                "cpu_s": round(s.cpu_s, 3),
                "rows": s.rows,
                "unit": s.unit,
                "rows_per_s": round(s.rows_per_s, 1),
                "peak_mb": round(s.peak_mb, 1),
            }
            for name, s in stages.items()
        },
        **{k: got[k] for k in ("interactions", "listeners_scored", "block_size", "chunks", "gate")},
    }
    ratios = {
        "generate_vs_gemm": (_ratio(out["generate_s"], out["gemm_bound_s"]), "<=", 1.5),
        "aggregate_vs_duckdb": (_ratio(out["aggregate_s"], out["duckdb_aggregate_s"]), "<=", 3),
        "spark_vs_implicit_als": (
            _ratio(out["spark_als_iter_s"], out["implicit_als_iter_s"]),
            ">=",
            10,
        ),
        "spark_vs_implicit_als_cpu": (
            _ratio(out["spark_als_iter_cpu_s"], out["implicit_als_iter_cpu_s"]),
            ">=",
            10,
        ),
        "copy_vs_publish": (_ratio(out["copy_publish_s"], out["publish_s"]), ">=", 0.8),
        "generate_vs_gemm_cpu": (
            _cpu_ratio(stages, "generate", "GEMM bound (reference)"),
            "<=",
            1.5,
        ),
        "aggregate_vs_duckdb_cpu": (
            _cpu_ratio(stages, "aggregate", "duckdb aggregate (reference)"),
            "<=",
            3,
        ),
    }
    out["ratios"] = {name: value for name, (value, _, _) in ratios.items()}
    out["targets_met"] = {
        name: None if value is None else (value <= bound if op == "<=" else value >= bound)
        for name, (value, op, bound) in ratios.items()
    }
    out["targets"] = {name: f"{op} {bound}" for name, (_, op, bound) in ratios.items()}
    return out


def print_table(out: dict[str, Any]) -> None:
    world = out["world"]
    print(
        f"size {out['size']}: {world['listeners']:,} listeners x {world['tracks']:,} tracks, "
        f"{world['plays']:,} plays + {world['thumbs']:,} thumbs; "
        f"{out['interactions']:,} interactions"
    )
    print("| stage | wall s | CPU s (tree) | rows/s | peak MiB (tree) |")
    print("|---|---:|---:|---:|---:|")
    for name, s in out["stages"].items():
        print(
            f"| {name} | {s['wall_s']:.2f} | {s['cpu_s']:.2f} | "
            f"{s['rows_per_s']:,.0f} {s['unit']}/s | {s['peak_mb']:,.0f} |"
        )
    print("| ratio | value | target | met |")
    print("|---|---:|---|---|")
    for name, value in out["ratios"].items():
        shown = "n/a" if value is None else f"{value:.2f}"
        print(f"| {name} | {shown} | {out['targets'][name]} | {out['targets_met'][name]} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--size", choices=tuple(SIZES), required=True)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--cache", type=Path, default=None, help="world cache (default /tmp/scale-cache/SIZE/data)"
    )
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="server (and database to connect to) where a scratch database is made",
    )
    parser.add_argument(
        "--skip-spark-als", action="store_true", help="leave out the Spark MLlib ALS reference"
    )
    args = parser.parse_args(argv)
    cache = (args.cache or CACHE_ROOT / args.size / "data").absolute()
    world = ensure_world(args.size, cache)
    work = Path(tempfile.mkdtemp(prefix=f"cratedigger-scale-{args.size}-"))
    database_url, drop = _scratch_database(args.postgres)
    meter = Meter()
    try:
        got = run_pipeline(meter, args.size, cache, database_url, work, not args.skip_spark_als)
    finally:
        meter.close()
        drop()
        shutil.rmtree(work, ignore_errors=True)
    out = summarise(args.size, world, meter, got)
    print_table(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

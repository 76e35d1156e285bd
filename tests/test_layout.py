"""The package layout of ARCHITECTURE.md: ``benchmarks/import_graph.py`` finds no forbidden
import between the top-level packages, and only the entry points of ``jobs/`` read the
whole settings."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "import_graph.py"


def _graph(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_no_package_imports_what_the_layout_forbids() -> None:
    result = _graph(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "recsys -> (none of ours)" in lines
    assert "jobs -> recsys" in lines
    assert "webapp -> recsys" in lines
    assert lines[-1] == "no forbidden edge"


def test_a_forbidden_edge_is_named_with_its_place(tmp_path: Path) -> None:
    (tmp_path / "recsys").mkdir()
    (tmp_path / "recsys" / "x.py").write_text("def f():\n    from jobs.weekly import start_run\n")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "y.py").write_text("import recsys.x\nfrom . import z\n")
    result = _graph(tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "recsys -> jobs",
        "jobs -> recsys",
        "forbidden: recsys -> jobs: recsys/x.py:2",
        "1 forbidden edges",
    ]


#: Where ``jobs/`` may take the whole settings: the run's steps and their orchestration, the
#: Celery app and tasks, the database factory, and the commands' entry points. Everything
#: else takes typed objects (``Storage``, ``PlaylistPolicy``, ``Week``, ``ResolvedParams``...),
#: built by their ``of(settings)`` constructors.
SETTINGS_READERS = {
    "weekly": None,  # every function: the step entry points and their orchestration
    "tasks": None,
    "celery": None,
    "db": None,
    "quality": {"evaluate_week", "tune_week"},
    "aggregate": {"main", "parse_arguments"},  # the spark-submit entry point
}


def _takes_settings(function: ast.FunctionDef) -> bool:
    arguments = [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]
    return any(
        argument.annotation is not None and "Settings" in ast.unparse(argument.annotation)
        for argument in arguments
    )


def test_below_the_step_entry_points_no_function_of_jobs_takes_the_whole_settings() -> None:
    offenders = []
    for path in sorted((ROOT / "jobs").glob("*.py")):
        allowed = SETTINGS_READERS.get(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef) or not _takes_settings(node):
                continue
            if allowed is None or node.name in allowed or node.name in ("of", "from_settings"):
                continue
            offenders.append(f"jobs/{path.name}:{node.lineno} {node.name}")
    assert offenders == []

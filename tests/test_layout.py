"""The package layout of ARCHITECTURE.md: ``benchmarks/import_graph.py`` finds no forbidden
import between the top-level packages."""

from __future__ import annotations

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

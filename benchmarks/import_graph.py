"""Which of the project's packages imports which, and whether an edge breaks the layout.

    python benchmarks/import_graph.py [--root DIR]

Reads every ``.py`` file of each top-level package with :mod:`ast` (imports inside
functions and ``TYPE_CHECKING`` blocks count too), prints one line per package with the
packages of ours it imports, then every forbidden edge with the files and lines that make
it, and exits 1 if there is one. The rules are the table "Packages and what each may
import" of ARCHITECTURE.md: the domain imports none of the others, ``jobs`` and ``webapp``
import only the domain, ``migrations`` only the models, the composition root ``cli`` also
``lab`` and ``migrations``; nothing the product runs imports ``tests`` or ``benchmarks``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

PACKAGES = (
    "recsys",
    "jobs",
    "webapp",
    "cli",
    "migrations",
    "lab",
    "tests",
    "benchmarks",
)
_NOT_PRODUCT = {"tests", "benchmarks"}
#: package -> the packages it must not import (a package missing here may import anything).
FORBIDDEN = {
    "recsys": {"jobs", "webapp", "cli", "migrations", "lab"} | _NOT_PRODUCT,
    "jobs": {"webapp", "cli", "lab", "migrations"} | _NOT_PRODUCT,
    "webapp": {"jobs", "cli", "lab", "migrations"} | _NOT_PRODUCT,
    "migrations": {"jobs", "webapp", "cli", "lab"} | _NOT_PRODUCT,
    "cli": _NOT_PRODUCT,
}


def imported_names(path: Path) -> Iterator[tuple[str, int]]:
    """(top-level name, line) of every absolute import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0], node.lineno


def import_graph(root: Path) -> dict[str, dict[str, list[str]]]:
    """package -> package of ours it imports -> the ``file:line`` places that import it."""
    graph: dict[str, dict[str, list[str]]] = {}
    for package in PACKAGES:
        folder = root / package
        if not folder.is_dir():
            continue
        edges: dict[str, list[str]] = defaultdict(list)
        for path in sorted(folder.rglob("*.py")):
            for name, line in imported_names(path):
                if name in PACKAGES and name != package:
                    edges[name].append(f"{path.relative_to(root).as_posix()}:{line}")
        graph[package] = dict(edges)
    return graph


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="the checkout",
    )
    args = parser.parse_args(argv)
    graph = import_graph(args.root)
    for package, edges in graph.items():
        print(f"{package} -> {', '.join(sorted(edges)) or '(none of ours)'}")
    forbidden = [
        (package, target, places)
        for package, edges in graph.items()
        for target, places in sorted(edges.items())
        if target in FORBIDDEN.get(package, set())
    ]
    for package, target, places in forbidden:
        print(f"forbidden: {package} -> {target}: {', '.join(places)}")
    print(f"{len(forbidden)} forbidden edges" if forbidden else "no forbidden edge")
    return 1 if forbidden else 0


if __name__ == "__main__":
    sys.exit(main())

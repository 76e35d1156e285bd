# The two commands of the README: `make demo` and `make test`. Each builds .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-serve test lint typecheck unit clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	@command -v java >/dev/null || { echo "Java 17 is needed for PySpark (apt-get install openjdk-17-jre-headless)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

## Simulate a small world, run this week's playlists and serve the pages on :5000, all in
## the demo's own state directory ($CRATEDIGGER_DATA_DIR/demo, by default
## ~/.local/share/cratedigger/demo), never the data directory or database of real runs.
demo: $(STAMP)
	$(BIN)/cratedigger demo

## Serve the last demo's pages again without running it again.
demo-serve: $(STAMP)
	$(BIN)/cratedigger demo --serve-only

## Lint, type-check and run every test (server-backed tests skip unless the server runs;
## CRATEDIGGER_REQUIRE_SERVICES=1 turns those skips into failures, as in CI).
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python benchmarks/import_graph.py

typecheck: $(STAMP)
	$(BIN)/mypy

## Only the fast tests (no Spark).
unit: $(STAMP)
	$(BIN)/python -m pytest -m "not spark"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

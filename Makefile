# Two commands on a fresh machine: `make run` (set up, then the main job) and `make test`.
.PHONY: setup setup-browser run test lint bench clean

VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

# Debian's chromium for the report's browser test (Playwright drives it; no browser download).
setup-browser:
	@bash scripts/setup-browser.sh

# The main job: train the default recipe on ../shared/data/faces, evaluate on its test split and on
# face crops of the shared scenes (cross-dataset).
run: setup
	@bash scripts/main.sh

# Quality gates: once `make lint` passes on the whole repository, enable the line below (CI then enforces it).
test: setup setup-browser
#	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q

# ruff (lint and format) and mypy, configured in pyproject.toml.
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src
	$(BIN)/mypy src

# Classifier backends, detector and pipeline side by side (see BENCHMARKS.md for the other benchmarks).
bench: setup
	mkdir -p runs
	$(BIN)/python benchmarks/bench_runtime.py --json runs/bench_runtime.json

clean:
	rm -rf $(VENV) runs artifacts .pytest_cache

# Two commands on a fresh machine: `make run` (set up, then the main job) and `make test`.
.PHONY: setup setup-browser run test bench clean

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

test: setup setup-browser
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs artifacts .pytest_cache

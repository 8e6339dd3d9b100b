# Two commands on a fresh machine: `make run` (set up, then the monitoring service) and `make test`.
.PHONY: setup setup-browser run train-demo test lint bench clean

VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

# Debian's chromium for the report's browser test (Playwright drives it; no browser download).
setup-browser:
	@bash scripts/setup-browser.sh

SERVE_DIR := runs/serve

# The service on 127.0.0.1:8000: bundled model, SQLite in $(SERVE_DIR), and a demo camera playing the
# shared scene images when ../shared/data/scenes exists. The admin token is made once (kept, mode 600,
# in $(SERVE_DIR)/admin-token) and printed with the URL. Ctrl-C stops it gracefully.
run: setup
	@mkdir -p $(SERVE_DIR)
	@[ -s $(SERVE_DIR)/admin-token ] || (umask 077; $(BIN)/python -c "import secrets; print('mw_' + secrets.token_urlsafe(32))" > $(SERVE_DIR)/admin-token)
	@echo "maskwatch: open http://127.0.0.1:8000/ and log in with the admin token (made by make run, kept in $(SERVE_DIR)/admin-token): $$(cat $(SERVE_DIR)/admin-token)"
	@MASKWATCH_ADMIN_TOKEN_FILE=$(SERVE_DIR)/admin-token $(BIN)/maskwatch serve --host 127.0.0.1 --port 8000 --data-dir $(SERVE_DIR)

# The training job: train the default recipe on ../shared/data/faces, evaluate on its test split and on
# face crops of the shared scenes (cross-dataset).
train-demo: setup
	@bash scripts/main.sh

# The quality gates first (ruff lint and format, mypy: CI enforces them), then every test, on TEST_WORKERS
# pytest-xdist workers (2: the suite mostly waits on real servers, brokers and processes, so two share two
# cores well; TEST_WORKERS=0 runs it in this one process). The short chaos soak runs on demand
# (MASKWATCH_SOAK=1: tests/test_soak.py says why).
TEST_WORKERS ?= 2
test: setup setup-browser
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

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

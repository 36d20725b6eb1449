# Two commands on a fresh machine:  make run   |   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint bench bench-train bench-score stop clean

setup: $(STAMP)

# Re-installs only when requirements change; a second `make run` installs nothing.
$(STAMP): requirements.txt requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements.lock
	touch $@

run: setup  ## set up + one full pipeline run on the embedded stack (RUN_DATE=YYYY-MM-DD, KEEP=1)
	bash scripts/run_embedded.sh

test: setup lint  ## set up + the whole test suite (includes one end-to-end `airflow dags test`)
	source scripts/env.sh && AWS_ENDPOINT_URL= $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup  ## everything but the end-to-end run
	source scripts/env.sh && AWS_ENDPOINT_URL= $(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check dags plugins tasks tests scripts bench

bench: bench-train bench-score  ## benchmarks: ratios against baselines measured in the same run

bench-train: setup  ## model quality and training speed (TRAIN_BENCH_ARGS="--movielens PATH --scale ml-25m")
	$(BIN)/python bench/train_bench.py $(TRAIN_BENCH_ARGS)

bench-score: setup  ## scoring and publishing speed (SCORE_BENCH_ARGS="--preset ml-25m")
	source scripts/env.sh && $(BIN)/python bench/score_bench.py $(SCORE_BENCH_ARGS)

stop:  ## stop what KEEP=1 left running
	source scripts/env.sh && $(BIN)/python scripts/stack.py stop-serve; $(BIN)/python scripts/stack.py stop-moto

clean:
	rm -rf .airflow .state .pytest_cache .ruff_cache

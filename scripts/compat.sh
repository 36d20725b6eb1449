#!/usr/bin/env bash
# make test-compat: the DAG on the oldest managed Airflow 3 we support (3.0.6, MWAA's pins).
#
# Installs Airflow 3.0.6 with the amazon provider at MWAA's versions into
# .venv-compat/3.0.6 (cached: reinstalled only when the pin file changes), then runs
# in it the three DAG test layers, the bundle and IAM tests and the `airflow dags test` end-to-end tests.
# Stages (python -m tasks.*) and the serving app run with the main venv's interpreter
# (RECSYS_PYTHON), as they would in the jobs image on ECS: MWAA workers have no torch.
# The newest pinned Airflow is the main venv's, tested by `make test` itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VERSION="${COMPAT_AIRFLOW:-3.0.6}"
PINS="tests/compat/airflow-$VERSION-mwaa.txt"
VENV="$ROOT/.venv-compat/$VERSION"
# Python 3.12 as on MWAA when this machine has one that runs (pyenv's shim may not), else 3.11.
find_python() {
  for py in "${COMPAT_PYTHON:-}" python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 python3.11 python3; do
    if [ -n "$py" ] && "$py" -c "import venv" >/dev/null 2>&1; then echo "$py"; return; fi
  done
}
PY="$(find_python)"
# the pin file's hash names the stamp (Python's hashlib: sha256sum is not on macOS)
stamp="$VENV/.installed-$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:12])' "$PINS")"
if [ ! -f "$stamp" ]; then
  echo "== installing Airflow $VERSION (MWAA pins) into $VENV with $("$PY" --version)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  # the pins are both requirements and constraints: nothing else may move them
  "$VENV/bin/python" -m pip install --quiet -r "$PINS" -c "$PINS" "moto[server]==$(grep '^moto==' "$PINS" | cut -d= -f3)" \
    2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  touch "$stamp"
fi
"$VENV/bin/python" -c "import airflow, sys; print(f'== Airflow {airflow.__version__} on Python {sys.version.split()[0]}')"
. scripts/env.sh
export AWS_ENDPOINT_URL= DOCKER_HOST=unix:///nonexistent/docker.sock
export RECSYS_PYTHON="$ROOT/.venv/bin/python"
export PATH="$VENV/bin:$PATH"
# -p no:cacheprovider: the main suite owns .pytest_cache. A hang ends as a failure with
# pytest's traceback of where it stood (SIGINT), not as CI's own kill with nothing said.
exec "$PY" scripts/bounded.py --signal INT --kill-after 60 "${COMPAT_TIMEOUT:-2400}" -- "$VENV/bin/python" -m pytest -p no:cacheprovider -q tests/test_dag.py tests/test_bundle.py tests/test_iam.py tests/test_ecs_roll.py tests/test_e2e.py "$@"

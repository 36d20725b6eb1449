#!/usr/bin/env bash
# The version matrix: the DAG layers, the bundle tests and `airflow dags test` end to end on every
# managed Airflow in deploy/platforms.toml (MWAA and Composer 3), each in its own cached venv.
#
#   bash scripts/compat_matrix.sh            # every row
#   bash scripts/compat_matrix.sh --list     # the rows, nothing installed
#   MATRIX_ONLY="mwaa-3.0.6 composer-3.1.7" bash scripts/compat_matrix.sh
#
# A row with a pins file installs it as requirements and constraints at once (nothing else may move
# them); a row without one pins apache-airflow (and the provider versions the table gives) and lets
# pip resolve the rest. Venvs live in .venv-compat/<platform>-<airflow>, reinstalled only when the
# row changes. Stages (python -m tasks.*) run with the main venv's interpreter (RECSYS_PYTHON), as
# they would in the jobs image on ECS (or RECSYS_PYTHON when set). MATRIX_LOCK=/path/to/lock serialises the rows behind flock.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
MAIN_PY="$ROOT/.venv/bin/python"
mapfile -t ROWS < <("$MAIN_PY" scripts/platforms.py rows)
if [ "${1:-}" = "--list" ]; then printf '%s\n' "${ROWS[@]}"; exit 0; fi

find_python() {  # the platform's Python when this machine runs one, else 3.11 (said in the log)
  for py in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1"*/bin/python"$1" python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c "import venv" >/dev/null 2>&1; then echo "$py"; return; fi
  done
}
MOTO="moto[server]==$("$MAIN_PY" -c 'import moto; print(moto.__version__)')"
TESTS=(tests/test_dag.py tests/test_rollback_dag.py tests/test_bundle.py tests/test_iam.py tests/test_ecs_roll.py
       tests/test_e2e.py)
failed=()
for row in "${ROWS[@]}"; do
  read -r platform airflow python rest <<<"$row"
  name="$platform-$airflow"
  if [ -n "${MATRIX_ONLY:-}" ] && [[ " $MATRIX_ONLY " != *" $name "* ]]; then continue; fi
  venv="$ROOT/.venv-compat/$name"
  py="$(find_python "$python")"
  moto="$MOTO"
  if [ -f "$rest" ]; then
    install=(-r "$rest" -c "$rest"); key="$(cat "$rest")"
    # a pins file that pins moto (its werkzeug fits that Airflow) wins over the main venv's
    if grep -q '^moto==' "$rest"; then moto="moto[server]==$(grep '^moto==' "$rest" | cut -d= -f3)"; fi
  else
    read -r -a install <<<"$rest"; key="$rest"
  fi
  stamp="$venv/.installed-$(printf '%s %s %s' "$key" "$py" "$moto" | sha256sum | cut -c1-12)"
  start=$SECONDS
  if [ ! -f "$stamp" ]; then
    echo "== $name: installing Airflow $airflow into $venv with $("$py" --version) (platform: Python $python)"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "${install[@]}" "$moto" pytest
    touch "$stamp"
  fi
  echo "== $name: $("$venv/bin/python" -c 'import airflow, sys; print(f"Airflow {airflow.__version__} on Python {sys.version.split()[0]}")')"
  run=(env RECSYS_PYTHON="${RECSYS_PYTHON:-$MAIN_PY}" PATH="$venv/bin:$PATH" bash -c '. scripts/env.sh && export AWS_ENDPOINT_URL= DOCKER_HOST=unix:///nonexistent/docker.sock && exec "$0" -m pytest -p no:cacheprovider -q "$@"' "$venv/bin/python" "${TESTS[@]}")
  if [ -n "${MATRIX_LOCK:-}" ]; then run=(flock "$MATRIX_LOCK" "${run[@]}"); fi
  if timeout --signal=INT --kill-after=60 "${COMPAT_TIMEOUT:-2400}" "${run[@]}"; then
    echo "== $name: passed in $((SECONDS - start)) s"
  else
    echo "== $name: FAILED after $((SECONDS - start)) s"; failed+=("$name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then echo "matrix failed on: ${failed[*]}"; exit 1; fi
echo "matrix passed"

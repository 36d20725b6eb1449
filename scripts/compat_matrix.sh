#!/usr/bin/env bash
# The version matrix (make test-matrix, in CI): the DAG layers and `airflow dags test` end to end on
# every managed Airflow in deploy/platforms.toml (MWAA and Composer 3), each in its own cached venv.
#
#   bash scripts/compat_matrix.sh            # every row, each at its scope
#   bash scripts/compat_matrix.sh --list     # the rows, nothing installed
#   MATRIX_ONLY="mwaa-3.0.6 composer-3.1.7" bash scripts/compat_matrix.sh [PYTEST_ARGS...]
#   MATRIX_SCOPE=full ...                    # every chosen row runs the full set
#
# Scope, from the row's `matrix` in the table: a "full" row (the oldest Airflow) runs the DAG layers
# of both DAGs, the bundle, IAM and ECS-roll tests and every `airflow dags test` e2e test (the
# pipeline's happy path and bad input, the rollback DAG); a "light" row runs the DAG layers of both
# DAGs and the pipeline's happy-path e2e test (two `airflow dags test` runs, the CLI rollback).
# The newest pinned Airflow runs everything in `make test` (the main venv). docs/managed.md has the cost.
#
# A row with a pins file installs it as requirements and constraints at once (nothing else may move
# them); a row without one pins apache-airflow and lets the resolver pick the newest of the rest.
# uv (scripts/ensure_uv.sh, from PyPI) installs a cold venv in seconds; MATRIX_INSTALLER=pip uses
# pip instead (minutes per row). Venvs live in $COMPAT_VENVS (default .venv-compat/<platform>-<airflow>),
# reinstalled only when the row, the interpreter or moto changes. Stages (python -m tasks.*) run with
# the main venv's interpreter (RECSYS_PYTHON), as they would in the jobs image on ECS.
# MATRIX_LOCK=/path/to/lock serialises each row's tests behind flock (installs stay outside it).
# MATRIX_JOBS=N tests N rows at once (CI: 2), each row's output prefixed with its name.
# Portable: bash 3.2 (macOS), time limits through scripts/bounded.py, hashes through Python.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
MAIN_PY="$ROOT/.venv/bin/python"
VENVS="${COMPAT_VENVS:-$ROOT/.venv-compat}"
ROWS=()
while IFS= read -r line; do ROWS+=("$line"); done < <("$MAIN_PY" scripts/platforms.py rows)
if [ "${1:-}" = "--list" ]; then printf '%s\n' "${ROWS[@]}"; exit 0; fi

FULL=(tests/test_dag.py tests/test_rollback_dag.py tests/test_bundle.py tests/test_iam.py tests/test_ecs_roll.py
      tests/test_e2e.py)
LIGHT=(tests/test_dag.py tests/test_rollback_dag.py
       tests/test_e2e.py::test_pipeline_end_to_end_each_run_its_own_version_and_the_live_one_immutable
       --deselect tests/test_rollback_dag.py::test_rollback_dag_serves_the_target_moves_the_pointer_and_says_who_and_why)

find_python() {  # the platform's Python when this machine runs one, else 3.11 (said in the log)
  for py in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1"*/bin/python"$1" python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c "import venv" >/dev/null 2>&1; then echo "$py"; return; fi
  done
}
TIMES="$(mktemp)"
cpu() {  # sets CPU: seconds used so far by this shell's finished children (bash's `times`, second line).
  # `times` must run in this shell, not in $(...): a subshell's children are not this shell's.
  local file="$TIMES${BASHPID:+.$BASHPID}"  # rows run at once (MATRIX_JOBS) each have their own
  times >"$file"
  CPU="$(tail -n 1 "$file" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); t += p[1] * 60 + p[2] } printf "%d", t }')"
}
sha12() { "$MAIN_PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:12])' "$1"; }
MOTO="moto[server]==$("$MAIN_PY" -c 'import moto; print(moto.__version__)')"
if [ "${MATRIX_INSTALLER:-uv}" = uv ]; then UV="$(bash scripts/ensure_uv.sh)"; fi

install() {  # venv py moto install-args...: a fresh venv with the row's packages
  local venv="$1" py="$2" moto="$3"; shift 3
  rm -rf "$venv"
  "$py" -m venv "$venv"
  if [ "${MATRIX_INSTALLER:-uv}" = uv ]; then
    # --no-config: PyPI (or UV_DEFAULT_INDEX, a mirror), not this machine's pip or uv settings
    "$UV" pip install --no-config --quiet --python "$venv/bin/python" "$@" "$moto" pytest
  else
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "$@" "$moto" pytest
  fi
}

RESULTS="$(mktemp -d)"; trap 'rm -f "$TIMES" "$TIMES".*; rm -rf "$RESULTS"' EXIT

run_row() {  # row [PYTEST_ARGS...]: install (when its stamp is missing) and test one row; writes its summary line
  local row="$1"; shift
  local platform airflow python scope rest name venv py moto args key stamp start tested cpu0 result tests run
  read -r platform airflow python scope rest <<<"$row"
  name="$platform-$airflow"
  scope="${MATRIX_SCOPE:-$scope}"
  venv="$VENVS/$name"
  py="$(find_python "$python")"
  moto="$MOTO"
  if [ -f "$rest" ]; then
    args=(-r "$rest" -c "$rest"); key="$(cat "$rest")"
    # a pins file that pins moto (its werkzeug fits that Airflow) wins over the main venv's
    if grep -q '^moto==' "$rest"; then moto="moto[server]==$(grep '^moto==' "$rest" | cut -d= -f3)"; fi
  else
    read -r -a args <<<"$rest"; key="$rest"
  fi
  stamp="$venv/.installed-$(sha12 "$key $py $("$py" --version 2>&1) $moto")"
  start=$SECONDS
  if [ ! -f "$stamp" ]; then
    echo "== $name: installing Airflow $airflow into $venv with $("$py" --version 2>&1) (platform: Python $python)"
    install "$venv" "$py" "$moto" "${args[@]}"
    touch "$stamp"
    echo "== $name: installed in $((SECONDS - start)) s"
  fi
  echo "== $name ($scope): $("$venv/bin/python" -c 'import airflow, sys; print(f"Airflow {airflow.__version__} on Python {sys.version.split()[0]}")')"
  if [ "$scope" = full ]; then tests=("${FULL[@]}"); else tests=("${LIGHT[@]}"); fi
  # its own AIRFLOW_HOME: rows (of other Airflow versions, perhaps at once) never share a database
  mkdir -p "$venv/airflow-home"
  run=(env RECSYS_PYTHON="${RECSYS_PYTHON:-$MAIN_PY}" PATH="$venv/bin:$PATH" AIRFLOW_HOME="$venv/airflow-home" bash -c '. scripts/env.sh && export AWS_ENDPOINT_URL= DOCKER_HOST=unix:///nonexistent/docker.sock && exec "$0" -m pytest -p no:cacheprovider -q "$@"' "$venv/bin/python" "${tests[@]}" "$@")
  # a hang ends as a failure with pytest's traceback of where it stood (SIGINT), inside CI's budget
  run=("$MAIN_PY" scripts/bounded.py --signal INT --kill-after 60 "${COMPAT_TIMEOUT:-1500}" -- "${run[@]}")
  if [ -n "${MATRIX_LOCK:-}" ]; then run=(flock "$MATRIX_LOCK" "${run[@]}"); fi
  tested=$SECONDS; cpu; cpu0=$CPU
  if "${run[@]}"; then result=passed; else result=FAILED; fi
  cpu
  echo "$name ($scope): $result, tests $((SECONDS - tested)) s (CPU $((CPU - cpu0)) s), row $((SECONDS - start)) s" \
    >"$RESULTS/$name"
  echo "== $(cat "$RESULTS/$name")"
}

# MATRIX_JOBS=N runs N rows at once (CI: 2, one per core; each row's tests use about one), their
# output prefixed with the row's name; 1 (the default) runs them one after another.
JOBS="${MATRIX_JOBS:-1}"
if [ "${BASH_VERSINFO[0]}${BASH_VERSINFO[1]}" -lt 43 ]; then JOBS=1; fi  # bash < 4.3 (macOS): no `wait -n`
chosen=()
for row in "${ROWS[@]}"; do
  read -r platform airflow _ <<<"$row"
  if [ -n "${MATRIX_ONLY:-}" ] && [[ " $MATRIX_ONLY " != *" $platform-$airflow "* ]]; then continue; fi
  chosen+=("$row")
done
started=$SECONDS
for row in ${chosen[@]+"${chosen[@]}"}; do
  if [ "$JOBS" -le 1 ]; then
    run_row "$row" "$@"
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  read -r platform airflow _ <<<"$row"
  ( run_row "$row" "$@" 2>&1 | while IFS= read -r line; do printf '[%s] %s\n' "$platform-$airflow" "$line"; done ) &
done
wait
failed=()
summary=()
for row in ${chosen[@]+"${chosen[@]}"}; do
  read -r platform airflow _ <<<"$row"
  name="$platform-$airflow"
  line="$(cat "$RESULTS/$name" 2>/dev/null || echo "$name: FAILED (no result: the row's script stopped early)")"
  summary+=("$line")
  case "$line" in *": passed,"*) ;; *) failed+=("$name") ;; esac
done
echo "== matrix: $((SECONDS - started)) s wall, $JOBS row(s) at a time"
if [ ${#summary[@]} -gt 0 ]; then printf '   %s\n' "${summary[@]}"; fi
if [ ${#failed[@]} -gt 0 ]; then echo "matrix failed on: ${failed[*]}"; exit 1; fi
if [ ${#summary[@]} -eq 0 ]; then echo "matrix: no row matches MATRIX_ONLY=${MATRIX_ONLY:-}"; exit 1; fi
echo "matrix passed"

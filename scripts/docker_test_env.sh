#!/usr/bin/env bash
# make test: prints `export RECSYS_TEST_DOCKER_HOST=...` for the docker test tier (an engine from
# scripts/ensure_docker.sh, which installs and starts one where it can), or
# `export RECSYS_TEST_DOCKER_WHY=...` with the reason there is none (the tier then skips, or fails
# under RECSYS_REQUIRE_DOCKER=1 as in CI). Always exits 0.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log="$(mktemp)"
if out="$(bash "$here/ensure_docker.sh" 2>"$log")"; then
  cat "$log" >&2
  printf 'export RECSYS_TEST_DOCKER_HOST=%q\n' "${out#export DOCKER_HOST=}"
else
  cat "$log" >&2
  printf 'export RECSYS_TEST_DOCKER_WHY=%q\n' "$(tail -1 "$log")"
fi
rm -f "$log"

#!/usr/bin/env bash
# A Docker engine for the `docker` test tier and `make run`, on a machine that may have none.
#
#   bash scripts/ensure_docker.sh        prints `export DOCKER_HOST=...` lines for an engine that answers
#
# 1. An engine that already answers (DOCKER_HOST, or the default socket) is used as it is.
# 2. Otherwise, as root: Debian's docker.io (and docker-registry, debootstrap) are installed if
#    missing, and a private dockerd is started (its own socket and data root under
#    $RECSYS_DOCKER_ROOT, default /var/lib/recsys-docker; it keeps running for later runs).
# 3. The base image (PYTHON_IMAGE, default python:3.11-slim) is pulled; where no registry is
#    reachable, a stand-in is built from Debian bookworm (debootstrap --variant=minbase + python3,
#    `docker import`), cached as a tarball beside the data root, so later runs only load it.
# 4. `docker compose` (Compose v2) is installed if missing, as root: Debian trixie's static build
#    (bookworm only has v1), checked against its sha256, into /usr/local/lib/docker/cli-plugins.
# Anything that fails is said on stderr, and the exit status is 1: callers decide whether that
# skips (a laptop without Docker) or fails (CI sets RECSYS_REQUIRE_DOCKER=1 in make test).
set -euo pipefail
ROOT_DIR="${RECSYS_DOCKER_ROOT:-/var/lib/recsys-docker}"
SOCK="${RECSYS_DOCKER_SOCK:-/run/recsys-docker/docker.sock}"
PYTHON_IMAGE="${PYTHON_IMAGE:-python:3.11-slim}"
say() { echo "ensure_docker: $*" >&2; }

here="$(cd "$(dirname "$0")" && pwd)"
# bounded.py, not GNU timeout (absent on macOS): a laptop's Docker Desktop must be found too
answers() { python3 "$here/bounded.py" 20 -- docker ${1:+-H "$1"} info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

host=""
if [ -n "${DOCKER_HOST:-}" ] && answers "$DOCKER_HOST"; then
  host="$DOCKER_HOST"
elif answers "unix:///var/run/docker.sock"; then
  host="unix:///var/run/docker.sock"
elif answers "unix://$SOCK"; then
  host="unix://$SOCK"
else
  if [ "$(id -u)" != 0 ]; then say "no Docker engine answers and this is not root: cannot start one"; exit 1; fi
  missing=""
  command -v dockerd >/dev/null || missing="$missing docker.io"
  command -v docker-registry >/dev/null || missing="$missing docker-registry"
  command -v debootstrap >/dev/null || missing="$missing debootstrap"
  if [ -n "$missing" ]; then
    say "installing Debian's$missing"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing; } >/dev/null 2>&1 \
      || { say "apt-get install$missing failed"; exit 1; }
  fi
  mkdir -p "$ROOT_DIR" "$(dirname "$SOCK")"
  say "starting dockerd (socket $SOCK, data root $ROOT_DIR, log $ROOT_DIR.log)"
  # a daemon of its own session that inherits no descriptor beyond its log: a caller's lock (flock)
  # or output pipe (CI) would otherwise stay open as long as dockerd runs
  python3 - "$ROOT_DIR.log" dockerd --data-root "$ROOT_DIR" --host "unix://$SOCK" --exec-root "$(dirname "$SOCK")/exec" \
    --pidfile "$(dirname "$SOCK")/docker.pid" <<'PY'
import subprocess, sys
log = open(sys.argv[1], "ab")
subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True, start_new_session=True)
PY
  for _ in $(seq 60); do answers "unix://$SOCK" && break; sleep 1; done
  answers "unix://$SOCK" || { say "dockerd did not answer in 60 s: tail $ROOT_DIR.log"; tail -5 "$ROOT_DIR.log" >&2; exit 1; }
  host="unix://$SOCK"
fi
export DOCKER_HOST="$host"

if ! docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1; then
  if python3 "$here/bounded.py" 60 -- docker pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then
    say "pulled $PYTHON_IMAGE"
  else
    tarball="${ROOT_DIR}-base-${PYTHON_IMAGE//[:\/]/_}.tar"
    if [ ! -s "$tarball" ]; then
      case "$PYTHON_IMAGE" in
        python:3.11-slim*) ;;
        *) say "cannot pull $PYTHON_IMAGE and can only stand in for python:3.11-slim"; exit 1 ;;
      esac
      command -v debootstrap >/dev/null || { say "cannot pull $PYTHON_IMAGE and debootstrap is missing"; exit 1; }
      say "cannot pull $PYTHON_IMAGE: building a stand-in (Debian bookworm minbase + python3 3.11)"
      rootfs="$(mktemp -d)"
      debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >"$ROOT_DIR-debootstrap.log" 2>&1 \
        || { say "debootstrap failed: tail $ROOT_DIR-debootstrap.log"; rm -rf "$rootfs"; exit 1; }
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
      rm -rf "$rootfs"
    fi
    docker import -c 'CMD ["python3"]' -c 'ENV LANG=C.UTF-8' "$tarball" "$PYTHON_IMAGE" >/dev/null
    say "$PYTHON_IMAGE is a stand-in imported from $tarball"
  fi
fi
if ! docker compose version >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then say "no docker compose v2, and this is not root: cannot install it"; exit 1; fi
  deb="docker-compose_${COMPOSE_DEB_VERSION:-2.26.1-4}_amd64.deb"
  sha="${COMPOSE_DEB_SHA256:-47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea}"
  tmp="$(mktemp -d)"
  say "installing docker compose v2 ($deb from deb.debian.org)"
  if curl -fsSL -o "$tmp/$deb" "http://deb.debian.org/debian/pool/main/d/docker-compose/$deb" \
      && echo "$sha  $tmp/$deb" | sha256sum -c --quiet - && dpkg-deb -x "$tmp/$deb" "$tmp/x"; then
    install -D -m 755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" /usr/local/lib/docker/cli-plugins/docker-compose
  fi
  rm -rf "$tmp"
  docker compose version >/dev/null 2>&1 || { say "could not install docker compose v2"; exit 1; }
fi
echo "export DOCKER_HOST=$host"

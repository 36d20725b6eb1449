#!/usr/bin/env bash
# Headless Chromium for the versions page's screenshot test (tests/test_versions.py). Debian's
# package, installed only where it is missing and this is root; elsewhere the test skips with its
# reason (RECSYS_REQUIRE_CHROMIUM=1 makes that a failure, as CI sets it).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "ensure_chromium: no chromium and not root: the screenshot test will skip" >&2; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version

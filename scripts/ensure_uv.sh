#!/usr/bin/env bash
# Prints the path of uv at the version below, installing it from PyPI into .venv-lock (a tool
# venv, not the project's) when it is missing or another version. Used by `make lock` and by the
# version matrix (scripts/compat_matrix.sh: uv installs a row's venv in seconds where pip takes
# minutes). PYTHON picks the interpreter for the tool venv (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
TOOL="$PWD/.venv-lock"
if [ ! -x "$TOOL/bin/uv" ] || [ "$("$TOOL/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  rm -rf "$TOOL"
  "${PYTHON:-python3}" -m venv "$TOOL" >&2
  "$TOOL/bin/python" -m pip install --isolated --quiet --disable-pip-version-check "uv==$UV_VERSION" >&2
fi
echo "$TOOL/bin/uv"

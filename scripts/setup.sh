#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project with pinned dependencies (constraints.txt).
# pip's own output goes to .venv/install.log (shown when the install fails). A stamp of the pins,
# the package metadata and this checkout's path lets a second run skip the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv and installing the pinned stack (about 3 GB; a few minutes the first time)"
  "$PY" -m venv .venv
fi
stamp=$( (cat constraints.txt pyproject.toml; pwd) | sha256sum | cut -c1-16)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
  if ! { .venv/bin/python -m pip install --upgrade pip \
         && .venv/bin/python -m pip install -c constraints.txt -e ".[dev]"; } > .venv/install.log 2>&1; then
    tail -n 40 .venv/install.log >&2
    echo "setup: the install failed; full output in .venv/install.log" >&2
    exit 1
  fi
  echo "$stamp" > .venv/.installed
fi
echo "setup: .venv ready ($(.venv/bin/python --version))"

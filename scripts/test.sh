#!/usr/bin/env bash
# Set up, then run the whole test suite (unit, then integration) with an overall timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 RAY_DATA_DISABLE_PROGRESS_BARS=1
timeout 1500 .venv/bin/python -m pytest tests/unit -q -p no:cacheprovider
timeout 1500 .venv/bin/python -m pytest tests/integration -q -p no:cacheprovider

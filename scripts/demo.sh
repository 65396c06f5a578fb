#!/usr/bin/env bash
# Set up, then run the main job end to end on generated data under a local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m app demo "$@"

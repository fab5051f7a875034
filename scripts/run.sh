#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job.
# Until the simulation engine lands, the main job lists the aggregation strategies and runs
# one robust aggregation on real data shapes; later it becomes `velocity run --config ...`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
velocity strategies

#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: FedAvg on real MNIST (configs/baseline.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -z "${VELOCITY_DATA:-}" ] && [ -d ../shared/data ]; then
    export VELOCITY_DATA="$(cd ../shared/data && pwd)"
fi
velocity run --config configs/baseline.yaml "$@"

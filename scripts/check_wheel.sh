#!/usr/bin/env bash
# Build the wheel and run a short experiment from it in a fresh virtual environment, outside
# the source tree: what `pip install velocityfl` gives a newcomer (CI runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. .venv/bin/activate
python -m pip wheel -q --no-deps -w "$work/dist" . 2> "$work/build.log" || { cat "$work/build.log"; exit 1; }
if grep -qi "deprecat" "$work/build.log"; then
    echo "wheel build printed deprecation warnings:"; cat "$work/build.log"; exit 1
fi
deactivate
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
"$work/venv/bin/python" -m pip install -q "$work"/dist/velocityfl-*.whl
cat > "$work/wheel.yaml" <<'YAML'
name: wheel-check
seed: 0
dataset: synthetic
model_id: logreg
training: {num_rounds: 2, num_clients: 30, client_fraction: 0.2}
client: {local_steps: 5, lr: 0.05}
simulation: {partitioning: natural}
output: {save_plots: false}
YAML
cd "$work"
"$work/venv/bin/velocity" --help > /dev/null
"$work/venv/bin/velocity" validate-config wheel.yaml
"$work/venv/bin/velocity" run --config wheel.yaml --output-dir "$work/out" --no-progress
"$work/venv/bin/python" - "$work/out/wheel-check/summary.json" "$root" <<'PY'
import json, sys
import velocity
summary = json.load(open(sys.argv[1]))
assert summary["rounds"] == 2, summary
assert not velocity.__file__.startswith(sys.argv[2]), f"imported from the source tree: {velocity.__file__}"
print(f"wheel ok: velocityfl {velocity.__version__} from {velocity.__file__}")
PY

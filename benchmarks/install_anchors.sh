#!/usr/bin/env bash
# Install the benchmark anchors ByzFL and ByzPy into the *current* Python environment
# (the one whose `python` is first on PATH, or $PYTHON) without ever changing torch or numpy.
#
# Why not a plain `pip install byzfl byzpy`:
#   * byzpy 0.1.4 pins torch<2.6, numpy<2.1 and matplotlib<3.11, and both byzfl and byzpy
#     require torchvision. With our CPU torch (2.13) pip would "resolve" that by downloading an
#     old torch -- from PyPI that is the CUDA build, gigabytes of nvidia-* wheels -- plus a
#     torchvision. No torchvision wheel works with this CPU torch anyway.
#   * The aggregators we benchmark need none of that: they run on any recent torch/numpy.
#
# So: the two packages with --no-deps, then only the imports they really make at import time
# (scipy: byzfl's cdist; matplotlib and seaborn: byzfl/benchmark/evaluate_results.py, imported
# by byzfl/__init__; cloudpickle: byzpy's actor pool). torchvision is *not* installed:
# benchmarks/_anchors.py registers an empty stand-in module before importing byzfl, and the
# benchmark says so in its output. `pip check` will still list byzpy's unmet pins; that is
# expected and harmless for the benchmark.
#
# Usage:  bash benchmarks/install_anchors.sh          (uses `python`)
#         PYTHON=.venv/bin/python bash benchmarks/install_anchors.sh
set -euo pipefail

PY="${PYTHON:-python}"

versions() {
    "$PY" -c 'import numpy, torch; print(f"torch=={torch.__version__} numpy=={numpy.__version__}")'
}

before="$(versions)"
echo "environment: $("$PY" -c 'import sys; print(sys.prefix)')  ($before)"

# Hold torch and numpy at exactly what is installed now, whatever the packages below ask for.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
for pin in $before; do
    echo "$pin" >> "$constraints"
done

"$PY" -m pip install --no-deps "byzfl==0.0.11" "byzpy==0.1.4"
"$PY" -m pip install --constraint "$constraints" scipy matplotlib seaborn cloudpickle

after="$(versions)"
if [[ "$before" != "$after" ]]; then
    echo "ERROR: torch/numpy changed: $before -> $after" >&2
    exit 1
fi
echo "done; torch and numpy unchanged ($after)."
echo "check: $PY benchmarks/aggregators.py --quick"

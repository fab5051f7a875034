#!/usr/bin/env bash
# Create .venv (if missing) and install VelocityFL with its dev tools into it.
# torch is installed FIRST and pinned to the CPU build: letting pip resolve torch on its own
# would pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[dev,ray]"
# ByzPy 0.1.4, the reference of velocity.byzpy's agreement test (tests/byzpy): dev-only and
# without its dependencies (it needs only torch and numpy for what the test imports).
python -c "import byzpy" 2>/dev/null || python -m pip install -q --no-deps "byzpy==0.1.4" \
    || echo "byzpy unavailable: tests/byzpy/test_byzpy_agreement.py will skip"
python - <<'PY'
import torch, velocity
print(f"velocityfl {velocity.__version__} with torch {torch.__version__}")
PY

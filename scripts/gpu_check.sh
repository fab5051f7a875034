#!/usr/bin/env bash
# The CUDA paths, for a machine with a GPU (the `device` tool's lent machine): the tests that
# skip without CUDA, then the vectorized backend's throughput on the GPU. Needs a CUDA build
# of torch on that machine (scripts/setup.sh installs the CPU build; there, first run
#   python -m pip install torch   # whatever CUDA build the machine's driver takes
# ). Nothing here is needed on a CPU-only machine; CI skips these tests.
#
#   bash scripts/gpu_check.sh            # tests only
#   BENCH=1 bash scripts/gpu_check.sh    # and benchmarks/vectorized.py on the GPU
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
PY
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}src"
python -m pytest -q -p no:cacheprovider \
    tests/client/test_device.py \
    tests/kernels/test_conformance.py \
    tests/byzpy/test_aggregators.py \
    -k "cuda or gpu or device" -rs
if [ "${BENCH:-0}" = 1 ]; then
    python benchmarks/vectorized.py --device cuda --memory-mb 1024
fi

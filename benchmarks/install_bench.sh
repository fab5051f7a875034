#!/usr/bin/env bash
# Install the frameworks that benchmarks/frameworks.py compares against -- Flower (flwr 1.42.0,
# simulation on Ray) and Apple's pfl-research (pfl 0.6.0, PyTorch backend) -- into the *current*
# Python environment (the `python` first on PATH, or $PYTHON) without changing torch, numpy or
# any other package that is already installed: it only adds what is missing.
#
# Why not `pip install flwr[simulation] pfl[pytorch]` (or the `bench` extra of pyproject.toml):
#   * flwr[simulation] 1.42.0 pins ray==2.55.1 (the project's `ray` extra has ray>=2.40,<3,
#     typically a newer one), and flwr pins protobuf<7, rich<15, starlette<1.4, uvicorn<0.50,
#     fastapi<0.139, packaging<26 ... so pip would downgrade half the environment.
#   * pfl 0.6.0 pins dp-accounting<0.6 and packaging<26 (velocity uses dp-accounting), and
#     pfl[pytorch] lets pip pick a torch: from PyPI that is the CUDA build, gigabytes of
#     nvidia-* wheels, replacing our CPU torch.
#   * What the benchmark uses (flwr.simulation.run_simulation with the Ray backend, flwr.app,
#     flwr.clientapp, flwr.serverapp.strategy.FedAvg; pfl's SimulatedBackend, FederatedAveraging,
#     PyTorchModel) runs with the newer versions installed here; frameworks.py checks that every
#     round of every framework returned its clients' updates.
#
# So: flwr and pfl with --no-deps, then only those of their requirements that are imported when
# the benchmark runs *and are not installed yet*, each within flwr's / pfl's own range, under a
# constraints file that pins every installed distribution at its current version (so nothing
# installed can move). Ray is installed the same way if it is missing (the project's `ray` extra
# range). `pip check` will still list flwr's and pfl's unmet pins; that is expected.
#
# Usage:  bash benchmarks/install_bench.sh          (uses `python`)
#         PYTHON=.venv/bin/python bash benchmarks/install_bench.sh
set -euo pipefail

PY="${PYTHON:-python}"
FLWR="flwr==1.42.0"
PFL="pfl==0.6.0"

# Requirements imported at run time (flwr's and pfl's ranges; `python -X importtime` of the
# benchmark's imports), and ray for Flower's simulation backend.
NEEDED=(
    "certifi>=2026.10.19" "grpcio>=1.70.0,<2" "protobuf>=5.28.0,<7" "cryptography>=50,<51"
    "pycryptodome>=3.18.0,<4" "iterators>=0.0.2,<0.0.3" "typer>=0.13.0,<0.21.0"
    "tomli>=2.0.1,<3" "tomli-w>=1.0.0,<2" "pathspec>=1.0.4,<2" "rich>=14,<15"
    "pyyaml>=6.0.2,<7" "requests>=2.33.0,<3" "httpx>=0.28.1,<1" "click>=8,<9"
    "packaging>=24.0,<26" "sqlalchemy[asyncio]>=2.0.45,<3" "alembic>=1.18.1,<2"
    "fastapi>=0.138.0,<0.139.0" "starlette>=1.3.1,<1.4.0"
    "multiprocess>=0.70.15,<0.71" "prv-accountant>=0.2.0,<0.3.0" "scipy>=1.7.3"
    "dp-accounting>=0.4,<0.6"
    "ray>=2.40,<3"
)

versions() {
    "$PY" -c 'import numpy, torch; print(f"torch=={torch.__version__} numpy=={numpy.__version__}")'
}

# name==version of every installed distribution except the editable project and flwr/pfl.
installed_pins() {
    "$PY" - <<'EOF'
import importlib.metadata as md
import json

seen = set()
for dist in md.distributions():
    name = dist.metadata["Name"]
    if not name or name.lower() in seen or name.lower() in {"flwr", "pfl", "velocityfl"}:
        continue
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        continue
    seen.add(name.lower())
    print(f"{name}=={dist.version}")
EOF
}

# The requirements among "$@" whose distribution is not installed at all.
missing() {
    "$PY" - "$@" <<'EOF'
import importlib.metadata as md
import re
import sys

for req in sys.argv[1:]:
    name = re.split(r"[\[<>=!~ ]", req, maxsplit=1)[0]
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(req)
EOF
}

before="$(versions)"
echo "environment: $("$PY" -c 'import sys; print(sys.prefix)')  ($before)"

constraints="$(mktemp)"
pins_before="$(mktemp)"
trap 'rm -f "$constraints" "$pins_before"' EXIT
installed_pins | sort > "$pins_before"
cp "$pins_before" "$constraints"

"$PY" -m pip install --no-deps "$FLWR" "$PFL"

mapfile -t todo < <(missing "${NEEDED[@]}")
if ((${#todo[@]})); then
    echo "installing what is missing: ${todo[*]}"
    if ! "$PY" -m pip install --constraint "$constraints" "${todo[@]}"; then
        echo "WARNING: these need a version of an installed package that differs from the" >&2
        echo "         installed one; installing them with --no-deps instead." >&2
        "$PY" -m pip install --no-deps "${todo[@]}"
    fi
else
    echo "every run-time requirement is already installed"
fi

after="$(versions)"
if [[ "$before" != "$after" ]]; then
    echo "ERROR: torch/numpy changed: $before -> $after" >&2
    exit 1
fi
changed="$(comm -23 "$pins_before" <(installed_pins | sort))"
if [[ -n "$changed" ]]; then
    echo "ERROR: installed packages changed (was):" >&2
    echo "$changed" >&2
    exit 1
fi
"$PY" -c '
import flwr.simulation, flwr.clientapp, flwr.serverapp.strategy, ray
import pfl.model.pytorch, pfl.aggregate.simulate
from importlib.metadata import version
print("flwr", version("flwr"), "pfl", version("pfl"), "ray", version("ray"))
'
echo "done; torch and numpy unchanged ($after), nothing installed before was changed."
echo "check: $PY benchmarks/frameworks.py --quick"

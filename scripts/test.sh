#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every check CI runs: ruff, mypy, import-linter, the docs
# site (mkdocs --strict), pytest (with the optional tracking extras installed), and the built
# wheel in a fresh venv (scripts/check_wheel.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -z "${VELOCITY_DATA:-}" ] && [ -d ../shared/data ]; then
    export VELOCITY_DATA="$(cd ../shared/data && pwd)"
fi
echo "== ruff"; ruff check src tests benchmarks
echo "== ruff format --check"; ruff format --check src tests benchmarks
echo "== mypy"; mypy
echo "== import-linter"; lint-imports
echo "== docs"; python -m pip install -q -e ".[docs]" && mkdocs build --strict --site-dir "$(mktemp -d)"
# the optional integrations are tested against the real libraries (TensorBoard, MLflow)
echo "== extras"; python -m pip install -q -e ".[tracking]"
echo "== pytest"; python -m pytest "$@"
echo "== wheel"; bash scripts/check_wheel.sh

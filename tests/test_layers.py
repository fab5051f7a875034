"""The layer contract of ``pyproject.toml`` (``[tool.importlinter]``) holds, and it bites.

Both tests run the ``lint-imports`` command (import-linter, a dev dependency) in a subprocess
from the repository root; they are skipped where it is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.skip("lint-imports (import-linter) is not installed")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [_lint_imports(), "--no-cache", "--no-logo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def test_layer_contract_is_kept() -> None:
    out = _run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "velocity layers KEPT" in out.stdout


def test_layer_contract_bites(tmp_path: Path) -> None:
    # The real contract's layers upside down, a hand-made inversion (types above server) and
    # the real exhaustive contract missing a module must all break; a true forbidden edge
    # (kernels never imports strategies) must hold, so the run is not broken for another reason.
    real = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = (c for c in real["contracts"] if c["id"] == "layers")
    layers: list[str] = contract["layers"]
    containers: list[str] = contract["containers"]
    config = tmp_path / "contracts.toml"
    config.write_text(
        f"""
[tool.importlinter]
root_package = "{real["root_package"]}"

[[tool.importlinter.contracts]]
id = "kept"
name = "kernels never import strategies"
type = "forbidden"
source_modules = ["velocity.kernels"]
forbidden_modules = ["velocity.strategies"]

[[tool.importlinter.contracts]]
id = "reversed"
name = "real layers reversed"
type = "layers"
containers = {_toml_list(containers)}
layers = {_toml_list(layers[::-1])}

[[tool.importlinter.contracts]]
id = "inverted"
name = "types above server"
type = "layers"
layers = ["velocity.types", "velocity.server"]

[[tool.importlinter.contracts]]
id = "incomplete"
name = "cli missing"
type = "layers"
containers = {_toml_list(containers)}
exhaustive = true
layers = {_toml_list([layer for layer in layers if layer != "cli"])}
"""
    )
    out = _run(str(config))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Contracts: 1 kept, 3 broken." in out.stdout, out.stdout
    assert "kernels never import strategies KEPT" in out.stdout
    assert "velocity.server is not allowed to import velocity.types" in out.stdout
    assert "velocity.cli" in out.stdout.split("are not listed as layers", 1)[1]

"""Smoke tests of ``benchmarks/frameworks.py`` (VelocityFL, pfl and Flower side by side).

The quick mode runs the real script on tiny sizes: its rows, their ratios (recomputed here
from the measured round times) and the rows of frameworks that are not installed. pfl and
Flower themselves run only where they are installed (``benchmarks/install_bench.sh``), in the
slow test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "frameworks.py"
_DATA = os.environ.get("VELOCITY_DATA")

pytestmark = pytest.mark.skipif(
    not _DATA or not (Path(_DATA) / "mnist").exists(), reason="needs MNIST in $VELOCITY_DATA"
)


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_frameworks", _BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(block: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in block["rows"]}


def _check_measured(row: dict[str, Any], rounds: int) -> None:
    assert row["status"] == "ok", row
    assert len(row["round_times"]) == rounds
    assert all(t > 0 for t in row["round_times"])
    assert row["s_per_round"] == pytest.approx(statistics.median(row["round_times"][1:]))


def _check_ratios(block: dict[str, Any]) -> None:
    loop = _rows(block)["loop"]["s_per_round"]
    for row in block["rows"]:
        if row.get("s_per_round") is None:
            assert row["vs_loop"] is None
        else:
            assert row["vs_loop"] == pytest.approx(row["s_per_round"] / loop)


def test_quick_loop_and_velocity(tmp_path: Path) -> None:
    out, md = tmp_path / "out.json", tmp_path / "out.md"
    argv = ["--quick", "--only", "loop,velocity", "--models", "logreg", "--cnn-clients", "100,1000"]
    argv += ["--threads", "1"]  # one thread: a busy machine does not stall OpenMP barriers
    results = _bench().main([*argv, "--json", str(out), "--markdown", str(md)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["rounds"] == 3
    assert results["machine"]["torch"]

    (block,) = results["cross_device"]
    assert block["model"] == "logreg"
    assert block["workload"]["registered"] == 50
    rows = _rows(block)
    assert list(rows) == ["loop", "sequential", "vectorized"]
    for row in rows.values():
        _check_measured(row, 3)
    _check_ratios(block)
    seq = block["sequential_vs_loop"]
    expected = rows["sequential"]["s_per_round"] / rows["loop"]["s_per_round"]
    assert seq["value"] == pytest.approx(expected)
    assert seq["met"] == (seq["value"] <= 1.10)
    assert "best_velocity_vs_best_pfl" not in block  # no pfl row ran

    cnn = results["cnn"]
    rows = _rows(cnn)
    assert list(rows) == ["loop", "velocity-100", "velocity-1000"]
    assert [r["registered"] for r in rows.values()] == [100, 100, 1000]
    for row in rows.values():
        _check_measured(row, 3)
    _check_ratios(cnn)
    assert cnn["velocity_vs_flower"] == {}

    text = md.read_text()
    assert "| VelocityFL, sequential provider |" in text
    assert "VelocityFL sequential vs plain loop" in text
    assert "McMahan CNN round" in text


def test_missing_frameworks_get_not_installed_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench()
    monkeypatch.setattr(bench, "_installed", lambda: {"pfl": None, "flwr": None, "ray": None})
    argv = ["--quick", "--only", "loop,pfl,flower", "--models", "logreg"]
    results = bench.main([*argv, "--workloads", "cross-device", "--rounds", "2", "--threads", "1"])
    (block,) = results["cross_device"]
    rows = _rows(block)
    assert list(rows) == ["loop", "pfl-1", "pfl-2", "flower"]  # no re-run of the loop
    _check_measured(rows["loop"], 2)
    for key in ("pfl-1", "pfl-2", "flower"):
        assert rows[key]["status"] == "not installed"
        assert rows[key]["vs_loop"] is None
    assert "best_velocity_vs_best_pfl" not in block
    assert "not installed" in bench.report(results)


def _importable(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


@pytest.mark.slow
@pytest.mark.skipif(not _importable("pfl", "flwr", "ray"), reason="needs pfl, flwr and ray")
def test_quick_with_pfl_and_flower() -> None:
    argv = ["--quick", "--models", "logreg", "--workloads", "cross-device", "--rounds", "2"]
    argv += ["--threads", "1"]
    results = _bench().main(argv)
    (block,) = results["cross_device"]
    rows = _rows(block)
    expected = ["loop", "sequential", "vectorized", "pfl-1", "pfl-2", "flower", "loop-own"]
    assert list(rows) == expected
    for row in rows.values():
        _check_measured(row, 2)
    _check_ratios(block)
    best = block["best_velocity_vs_best_pfl"]
    vel = min(rows[k]["s_per_round"] for k in ("sequential", "vectorized"))
    pfl = min(rows[k]["s_per_round"] for k in ("pfl-1", "pfl-2"))
    assert best["speedup"] == pytest.approx(pfl / vel)
    assert best["met"] == (best["speedup"] >= 2.0)

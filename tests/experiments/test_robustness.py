"""The robustness grid: parsing with named errors, tables, heatmap, and a tiny real run."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest

from velocity.cli import main
from velocity.experiments.config import InvalidConfigError
from velocity.experiments.robustness import (
    CellResult,
    load_grid,
    markdown_table,
    parse_grid,
    run_grid,
    write_grid,
)

REPO = Path(__file__).parents[2]


def _grid(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "grid",
        "byzantine_fraction": 0.2,
        "base": {
            "seed": 3,
            "dataset": "mnist",
            "model_id": "mnist-2nn",
            "training": {"num_rounds": 2, "num_clients": 10, "client_fraction": 1.0},
            "client": {"batch_size": 16, "local_steps": 2, "lr": 0.1},
            "output": {"dir": "outputs"},
        },
        "attacks": {"none": None, "little": {"type": "little"}, "bd": {"type": "backdoor"}},
        "defences": {
            "FedAvg": "FedAvg",
            "NNM + Krum": [{"type": "NNM", "f": 2}, {"type": "Krum", "f": 2}],
            "only": {"strategy": "FedMedian", "attacks": ["none"]},
        },
    }
    data.update(changes)
    return data


def test_the_shipped_grid_is_valid() -> None:
    grid = load_grid(REPO / "configs" / "grids" / "robustness.yaml")
    assert grid.byzantine_fraction == 0.2
    assert grid.base.training.num_clients == 50
    assert grid.base.simulation.alpha == 1.0
    assert len([a for a in grid.attacks if grid.attacks[a] is not None]) >= 8
    assert len(grid.defences) >= 6


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs" / "grids").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_grid_is_valid(path: Path) -> None:
    grid = load_grid(path)
    assert grid.cells()


def test_cells_and_cell_configs() -> None:
    grid = parse_grid(_grid())
    cells = grid.cells()
    assert [(a, d.label) for a, d in cells] == [
        ("none", "FedAvg"),
        ("little", "FedAvg"),
        ("bd", "FedAvg"),
        ("none", "NNM + Krum"),
        ("little", "NNM + Krum"),
        ("bd", "NNM + Krum"),
        ("none", "only"),
    ]
    config = grid.cell_config("little", cells[4][1])
    assert config.attacks == [{"type": "little", "fraction": 0.2}]
    assert config.strategy == [{"type": "NNM", "f": 2}, {"type": "Krum", "f": 2}]
    assert grid.cell_config("none", cells[0][1]).attacks == []
    # every cell has the same adversaries
    plan = config.attack_plan()
    other = grid.cell_config("bd", cells[2][1]).attack_plan()
    assert plan.adversaries() == other.adversaries()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"extra": 1}, "extra: unknown key; valid keys: name, base"),
        ({"byzantine_fraction": 0.5}, "byzantine_fraction: must be in (0, 0.5); got 0.5"),
        ({"attacks": {"x": {"type": "nope"}}}, "attacks.x: unknown attack 'nope'"),
        ({"attacks": {"x": {"type": "little", "fraction": 0.1}}}, "sets who attacks and when"),
        ({"attacks": {"x": {"type": "little", "start_round": 2}}}, "remove start_round"),
        ({"defences": {"d": {"strategy": "FedAvg", "attacks": 5}}}, "must be a list of attack"),
        ({"byzantine_fraction": 0.01}, "attacks.little: attack little: fraction=0.01 of 10"),
        ({"attacks": {}}, "attacks: must be a non-empty mapping"),
        ({"defences": {"d": {"type": "Krumm"}}}, "defences.d: unknown strategy type 'Krumm'"),
        ({"defences": {"d": {"strategy": "FedAvg", "attacks": ["zz"]}}}, "unknown attack labels"),
        ({"defences": {"d": {"strategy": "FedAvg", "when": 1}}}, "unknown keys ['when']"),
        ({"name": 5}, "name: must be a non-empty string; got 5"),
        ({"base": 3}, "base: must be an experiment mapping; got 3"),
        ({"byzantine_fraction": True}, "byzantine_fraction: must be in (0, 0.5); got true"),
        ({"byzantine_fraction": "0.2"}, "byzantine_fraction: must be in (0, 0.5); got '0.2'"),
        ({"attacks": {"x": 3}}, "attacks.x: must be a mapping with 'type'; got 3"),
        ({"defences": ["FedAvg"]}, "defences: must be a non-empty mapping label -> strategy"),
    ],
)
def test_grid_errors_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        parse_grid(_grid(**changes))
    assert message in str(info.value)


def test_base_errors_carry_the_base_prefix() -> None:
    data = _grid()
    data["base"]["client"]["lr"] = -1
    data["base"]["strategy"] = "FedAvg"
    with pytest.raises(InvalidConfigError) as info:
        parse_grid(data)
    assert "base.strategy: set by the grid" in str(info.value)
    data["base"].pop("strategy")
    with pytest.raises(InvalidConfigError) as info:
        parse_grid(data)
    assert "base.client.lr" in str(info.value)


def _results() -> list[CellResult]:
    def cell(a: str, d: str, acc: float | None, asr: float | None = None) -> CellResult:
        return CellResult(a, d, acc, acc, 0.1, asr, 0, acc is None, 1.0)

    return [
        cell("none", "FedAvg", 0.9),
        cell("little", "FedAvg", 0.5),
        cell("bd", "FedAvg", float("nan"), 0.97),
        cell("none", "NNM + Krum", 0.88),
        cell("little", "NNM + Krum", 0.86),
        cell("bd", "NNM + Krum", 0.87, 0.05),
        cell("none", "only", 0.7),
    ]


def test_markdown_table_and_files(tmp_path: Path) -> None:
    grid = parse_grid(_grid())
    text = markdown_table(grid, _results())
    assert "| defence | none | little | bd |" in text
    assert "| FedAvg | 90.0 | 50.0 | collapsed |" in text
    assert "| only | 70.0 | — | — |" in text
    assert "| NNM + Krum | 5.0 |" in text  # backdoor success rate table
    files = write_grid(grid, _results(), tmp_path)
    rows = list(csv.DictReader(files["csv"].open()))
    assert len(rows) == 7
    assert rows[0]["attack"] == "none"
    assert files["heatmap"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_cli_rejects_a_bad_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("name: g\nbase: {dataset: mnist}\nattacks: {}\ndefences: {a: FedAvg}\n")
    assert main(["bench", "robustness", "--config", str(path)]) == 2
    assert "attacks: must be a non-empty mapping" in capsys.readouterr().err


def _data_dir() -> str | None:
    for cand in (os.environ.get("VELOCITY_DATA"), str(REPO.parent / "shared/data")):
        if cand and (Path(cand) / "mnist").is_dir():
            return cand
    return None


@pytest.mark.skipif(_data_dir() is None, reason="MNIST files not found")
def test_tiny_grid_on_real_mnist(tmp_path: Path) -> None:
    data = _grid()
    data["base"]["data_dir"] = _data_dir()
    data["base"]["output"] = {"dir": str(tmp_path)}
    data["attacks"] = {"none": None, "inf": {"type": "inf"}, "bd": {"type": "backdoor"}}
    data["defences"] = {
        "FedAvg": "FedAvg",
        "raw": {"strategy": {"type": "FedAvg", "nonfinite": "propagate"}, "attacks": ["inf"]},
    }
    grid = parse_grid(data)
    results = run_grid(grid, rounds=1)
    by = {(r.attack, r.defence): r for r in results}
    assert by[("inf", "FedAvg")].nonfinite_dropped == 2
    assert not by[("inf", "FedAvg")].collapsed
    assert by[("inf", "raw")].collapsed
    assert by[("bd", "FedAvg")].backdoor_success_rate is not None
    assert by[("none", "FedAvg")].backdoor_success_rate is None
    again = run_grid(grid, rounds=1)
    assert [r.final_accuracy for r in again] == [r.final_accuracy for r in results]

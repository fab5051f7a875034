"""ByzPy's parameter server through the YAML config (`parameter_server:` section), end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from velocity.experiments import InvalidConfigError, load_config, parse_config
from velocity.experiments.runner import build_simulation, run_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _data(out: Path, **section: Any) -> dict[str, Any]:
    return {
        "name": "ps_small",
        "dataset": "synthetic",
        "model_id": "logreg",
        "seed": 2,
        "strategy": "FedMedian",
        "training": {"num_rounds": 8, "num_clients": 7, "eval_every": 4},
        "client": {"batch_size": 16, "lr": 0.2},
        "parameter_server": {"enabled": True, **section},
        "output": {"dir": str(out), "save_plots": False},
    }


def test_a_parameter_server_run_trains_and_reports(tmp_path: Path) -> None:
    config = parse_config(_data(tmp_path, byzantine=2, attack="sign_flip"))
    result = run_experiment(config, output_dir=tmp_path / "run")
    assert len(result.rounds) == 8
    evaluated = [r.round for r in result.rounds if r.global_accuracy is not None]
    assert evaluated == [1, 4, 8]
    first, last = result.rounds[0], result.rounds[-1]
    assert first.global_accuracy is not None
    assert last.global_accuracy is not None
    assert last.global_accuracy > first.global_accuracy
    # every round: 7 nodes aggregated, the last two attacked
    assert all(len(r.participated) == 7 for r in result.rounds)
    assert [a["client_ids"] for a in last.attack_results] == [["client-5"], ["client-6"]]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds"] == 8
    assert "parameter_server" in result.config


def test_the_run_equals_the_python_parameter_server(tmp_path: Path) -> None:
    config = parse_config(_data(tmp_path, byzantine=1, attack="empire"))
    result = run_experiment(config, output_dir=tmp_path / "run", rounds=5)
    federation = build_simulation(config, seed=config.seed)
    federation.engine.run(5)
    from velocity.experiments.runner import model_digest

    assert result.final_model_digest == model_digest(federation.engine.global_params)


def test_worker_momentum_resumes_exactly(tmp_path: Path) -> None:
    data = _data(tmp_path, byzantine=1, attack="little")
    data["client"]["momentum"] = 0.9
    data["output"]["checkpoint_every"] = 3
    config = parse_config(data)
    whole = run_experiment(config, output_dir=tmp_path / "whole")
    run_experiment(config, output_dir=tmp_path / "parts", rounds=3)
    resumed = run_experiment(config, output_dir=tmp_path / "parts", resume=True)
    assert resumed.final_model_digest == whole.final_model_digest


@pytest.mark.parametrize(
    ("section", "top", "fragment"),
    [
        ({"byzantine": 7}, {}, "parameter_server.byzantine"),
        ({"byzantine": 2}, {}, "parameter_server.attack: Byzantine nodes need"),
        ({"attack": "little"}, {}, "an attack needs"),
        ({"byzantine": 1, "attack": "sybil_nodes"}, {}, "sybil_nodes"),
        ({"byzantine": 1, "attack": "nonsense"}, {}, "parameter_server.attack"),
        ({}, {"strategy": ["FedAvg", "FedAdam"]}, "strategy: the parameter server steps"),
        ({}, {"client": {"local_steps": 3}}, "client.local_steps does not apply"),
        ({}, {"privacy": {"enabled": True}}, "parameter_server: privacy"),
        ({}, {"attacks": [{"type": "little", "fraction": 0.2}]}, "instead of the attacks list"),
        ({}, {"p2p": {"enabled": True}}, "choose one of them"),
    ],
)
def test_bad_parameter_server_configs_name_the_field(
    tmp_path: Path, section: dict[str, Any], top: dict[str, Any], fragment: str
) -> None:
    data = _data(tmp_path, **section)
    data.update(top)
    with pytest.raises(InvalidConfigError, match=fragment.replace(".", r"\.")):
        parse_config(data)


def test_the_shipped_parameter_server_config_validates() -> None:
    config = load_config(CONFIGS / "parameter_server_mnist.yaml")
    assert config.parameter_server.enabled
    assert config.parameter_server.byzantine == 4

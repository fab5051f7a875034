"""Peer-to-peer training through the YAML config (`p2p:` section) and `velocity run`, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from velocity.errors import ConfigurationError
from velocity.experiments import ExperimentConfig, InvalidConfigError, load_config, parse_config
from velocity.experiments.p2p import build_p2p
from velocity.experiments.runner import build_simulation, run_experiment
from velocity.p2p import consensus_distance

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _data(out: Path, **p2p: Any) -> dict[str, Any]:
    return {
        "name": "p2p_small",
        "dataset": "synthetic",
        "model_id": "logreg",
        "seed": 3,
        "training": {"num_rounds": 6, "num_clients": 8, "eval_every": 2},
        "client": {"batch_size": 16, "lr": 0.1},
        "p2p": {"enabled": True, "topology": "ring", "topology_params": {"k": 2}, **p2p},
        "output": {"dir": str(out), "save_plots": True, "save_model": True},
    }


def _config(out: Path, **p2p: Any) -> ExperimentConfig:
    return parse_config(_data(out, **p2p))


def test_a_p2p_run_writes_consensus_distance_and_per_node_accuracy(tmp_path: Path) -> None:
    config = _config(tmp_path, byzantine=[5], attack={"type": "sign_flip"}, mixing="nna")
    seen: list[int] = []
    result = run_experiment(
        config, output_dir=tmp_path / "run", on_round=lambda r: seen.append(r.round)
    )
    assert seen == [1, 2, 3, 4, 5, 6]
    last = result.rounds[-1]
    stage = last.stages["p2p"]
    honest = [f"node-{i}" for i in range(8) if i != 5]
    assert sorted(stage["node_accuracy"]) == sorted(honest)
    assert stage["byzantine_nodes"] == [5]
    sgd = build_p2p(config)
    sgd.run(6)
    honest_rows = sgd.params[[i for i in range(8) if i != 5]]
    assert stage["consensus_distance"] == pytest.approx(consensus_distance(honest_rows))
    assert stage["consensus_distance"] > 0.0
    assert last.global_accuracy == pytest.approx(sum(stage["node_accuracy"].values()) / 7)
    assert stage["min_node_accuracy"] == min(stage["node_accuracy"].values())
    # eval_every: 2 evaluates rounds 1, 2, 4, 6 (round 1 always, as the round engine does)
    assert [r.global_accuracy is not None for r in result.rounds] == [
        True, True, False, True, False, True,
    ]  # fmt: skip
    # the files a server-based run writes, plus the p2p pieces
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["p2p"]["byzantine_nodes"] == [5]
    assert summary["p2p"]["mixing"] == "nna"
    assert summary["strategy_name"] == "p2p nna"
    assert set(summary["p2p"]["node_accuracy"]) == set(honest)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["rounds"][-1]["stages"]["p2p"]["consensus_distance"] == pytest.approx(
        stage["consensus_distance"]
    )
    assert (run / "plots" / "consensus_distance.png").stat().st_size > 1000
    report = (run / "report.html").read_text()
    assert "Peer-to-peer" in report
    assert "consensus distance after the last round" in report
    assert "node-0" in report
    resolved = (run / "config.resolved.yaml").read_text()
    assert "p2p:" in resolved
    # the final digest is the stack of every node's model, saved too
    from safetensors.torch import load_file

    params = load_file(str(run / "node_models.safetensors"))["params"]
    assert params.shape[0] == 8
    assert not (run / "RUNNING.json").exists()


def test_a_p2p_run_is_bit_reproducible(tmp_path: Path) -> None:
    config = _config(tmp_path, byzantine=2, attack="little", mixing="clipped_gossip")
    a = run_experiment(config, output_dir=tmp_path / "a")
    b = run_experiment(config, output_dir=tmp_path / "b")
    assert a.final_model_digest == b.final_model_digest
    assert [r.to_dict()["stages"] for r in a.rounds] == [r.to_dict()["stages"] for r in b.rounds]
    other = run_experiment(config.with_updates({"seed": 4}), output_dir=tmp_path / "c")
    assert other.final_model_digest != a.final_model_digest


def test_the_run_equals_the_python_api(tmp_path: Path) -> None:
    config = _config(tmp_path, mixing="median")
    result = run_experiment(config, output_dir=tmp_path / "run", rounds=4)
    sgd = build_p2p(config)
    sgd.run(4)
    from velocity.types import tensor_digest

    assert result.final_model_digest == tensor_digest(sgd.params.reshape(-1))
    assert len(result.rounds) == 4


def test_robust_mixing_beats_plain_gossip_under_attack(tmp_path: Path) -> None:
    base = {"byzantine": [1, 6], "attack": {"type": "sign_flip", "scale": 10.0}}
    plain = run_experiment(_config(tmp_path, **base, mixing="gossip"), output_dir=tmp_path / "p")
    robust = run_experiment(_config(tmp_path, **base, mixing="nna"), output_dir=tmp_path / "r")
    clean = run_experiment(_config(tmp_path), output_dir=tmp_path / "c")
    assert clean.final_accuracy is not None
    assert robust.final_accuracy is not None
    assert plain.final_accuracy is not None
    assert robust.final_accuracy > plain.final_accuracy
    assert abs(clean.final_accuracy - robust.final_accuracy) < 0.15


@pytest.mark.parametrize(
    ("p2p", "top", "fragment"),
    [
        ({"topology": "torus"}, {}, "p2p.topology"),
        ({"topology": "random_regular", "topology_params": {}}, {}, "p2p.topology"),
        ({"byzantine": 8}, {}, "p2p.byzantine"),
        ({"byzantine": [0, 9]}, {}, "p2p.byzantine"),
        ({"byzantine": 2}, {}, "p2p.attack: Byzantine nodes need an attack"),
        ({"attack": "little"}, {}, "p2p.attack: an attack needs"),
        ({"byzantine": 1, "attack": "label_flip"}, {}, "p2p.attack"),
        ({"mixing": "average"}, {}, "p2p.mixing"),
        ({}, {"privacy": {"enabled": True}}, "p2p: privacy"),
        ({}, {"strategy": "FedMedian"}, "p2p: strategy"),
        ({}, {"client": {"local_steps": 5}}, "p2p: client.local_steps"),
        ({}, {"training": {"num_clients": 8, "client_fraction": 1.0}}, "client_fraction"),
        ({}, {"attacks": [{"type": "little", "fraction": 0.2}]}, "p2p: use p2p.byzantine"),
        ({}, {"output": {"checkpoint_every": 2}}, "output.checkpoint_every"),
        ({"mixing": "krum"}, {}, "p2p: a round cannot run with mixing='krum'"),
        ({"mixing": "trimmed_mean", "mixing_params": {"bogus": 1}}, {}, "bogus"),
        ({"mixing": "nna", "mixing_params": {"f": 10}}, {}, "p2p: a round cannot run"),
        ({"topology": "complete"}, {"training": {"num_clients": 5000}}, "at most 4096 nodes"),
        (
            {
                "topology": "ring",
                "topology_params": {"k": 1},
                "byzantine": [1, 2],
                "attack": "little",
                "attack_knowledge": "neighbours",
            },
            {},
            "p2p: a round cannot run",
        ),
    ],
)
def test_bad_p2p_configs_name_the_field(
    tmp_path: Path, p2p: dict[str, Any], top: dict[str, Any], fragment: str
) -> None:
    data = _data(tmp_path, **p2p)
    data.update(top)
    with pytest.raises(InvalidConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        parse_config(data)


def test_unknown_p2p_keys_are_refused(tmp_path: Path) -> None:
    data = _data(tmp_path)
    data["p2p"]["gossip_rate"] = 0.5
    with pytest.raises(InvalidConfigError, match=r"p2p\.gossip_rate"):
        parse_config(data)


def test_a_p2p_run_cannot_be_resumed_nor_built_as_a_federation(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(ConfigurationError, match="resume"):
        run_experiment(config, output_dir=tmp_path / "run", resume=True)
    with pytest.raises(ConfigurationError, match="build_p2p"):
        build_simulation(config, seed=0)


def test_server_based_hashes_do_not_see_the_p2p_section(tmp_path: Path) -> None:
    data = _data(tmp_path)
    data.pop("p2p")
    plain = parse_config(data)
    assert "p2p" not in plain.resolved()
    off = parse_config({**data, "p2p": {"enabled": False}})
    assert off.config_hash() == plain.config_hash()
    on = _config(tmp_path)
    assert on.resolved()["p2p"]["enabled"] is True
    assert parse_config(on.resolved()).config_hash() == on.config_hash()  # round-trips


def test_the_shipped_p2p_config_validates() -> None:
    config = load_config(CONFIGS / "p2p_mnist.yaml")
    assert config.p2p.enabled
    assert config.p2p.mixing == "clipped_gossip"
    assert config.training.num_clients == 16


def test_velocity_run_runs_a_p2p_config(tmp_path: Path) -> None:
    import yaml

    from velocity.cli import main

    data = _data(tmp_path)
    path = tmp_path / "p2p.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(
        [
            "run",
            "--config",
            str(path),
            "--output-dir",
            str(tmp_path / "cli"),
            "--no-progress",
            "--rounds",
            "2",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "cli" / "p2p_small" / "summary.json").read_text())
    assert summary["rounds"] == 2
    assert "p2p" in summary
    assert torch.isfinite(torch.tensor(summary["p2p"]["consensus_distance"]))

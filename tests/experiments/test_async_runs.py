"""Asynchronous FL through the YAML config, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from velocity.errors import ConfigurationError
from velocity.experiments import ExperimentConfig, InvalidConfigError, load_config, parse_config
from velocity.experiments.runner import run_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _config(out: Path, **async_fl: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "name": "small",
        "dataset": "synthetic",
        "model_id": "logreg",
        "seed": 5,
        "training": {"num_rounds": 6, "num_clients": 10, "client_fraction": 0.4},
        "client": {"local_steps": 2, "batch_size": 16, "lr": 0.1},
        "simulation": {"partitioning": "natural"},
        "async_fl": {"enabled": True, **async_fl},
        "output": {"dir": str(out), "save_plots": True},
    }
    return parse_config(data)


def test_an_async_run_reports_versions_virtual_time_and_staleness(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        delay_distribution="pareto",
        staleness_strategy="inverse_staleness",
        buffer_size=2,
        staleness_threshold=None,
    )
    result = run_experiment(config)
    assert len(result.rounds) == 6
    assert all(r.num_clients == 2 for r in result.rounds)
    clocks = [r.clock_s for r in result.rounds]
    assert clocks == sorted(clocks)
    assert clocks[0] > 0
    summary = json.loads((tmp_path / "small" / "summary.json").read_text())["async"]
    assert summary["versions"] == 6
    assert summary["updates"] == 12
    assert summary["virtual_time"] == pytest.approx(clocks[-1])
    assert summary["max_staleness"] == max(r.stages["staleness"]["max"] for r in result.rounds)
    metrics = json.loads((tmp_path / "small" / "metrics.json").read_text())
    assert all("staleness" in r["stages"] for r in metrics["rounds"])
    assert (tmp_path / "small" / "plots" / "accuracy_vs_time.png").exists()
    # the same config and seed: the same trace and model
    again = run_experiment(config, output_dir=tmp_path / "again")
    assert [r.clock_s for r in again.rounds] == clocks
    assert again.final_model_digest == result.final_model_digest


def test_fedasync_defaults_and_the_buffer_default(tmp_path: Path) -> None:
    config = _config(tmp_path)
    settings = config.async_fl.settings(config.training.clients_per_round)
    assert (settings.concurrency, settings.buffer_size, settings.staleness_threshold) == (4, 2, 3)
    one = _config(tmp_path, buffer_size=1, concurrency=3, staleness_strategy="hinge")
    s1 = one.async_fl.settings(one.training.clients_per_round)
    assert (s1.concurrency, s1.buffer_size, s1.staleness.a, s1.staleness.b) == (3, 1, 10.0, 4)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"async_fl": {"enabled": True, "concurrency": 11}}, "async_fl.concurrency: must be <="),
        ({"async_fl": {"enabled": True, "buffer_size": 20}}, "async_fl.buffer_size: must be <="),
        (
            {"async_fl": {"enabled": True}, "privacy": {"enabled": True}},
            "use privacy.mode: local or dp_sgd",
        ),
        (
            {"async_fl": {"enabled": True}, "attacks": [{"type": "gaussian", "fraction": 0.2}]},
            "simulated attacks",
        ),
        (
            {"async_fl": {"enabled": True}, "simulation": {"straggler": {"enabled": True}}},
            "simulation.straggler",
        ),
        ({"async_fl": {"enabled": True, "staleness_strategy": "linear"}}, "staleness_strategy"),
        ({"async_fl": {"enabled": True, "delay_shape": 1.0}}, "async_fl.delay_shape"),
        (
            {"async_fl": {"enabled": True, "delay_min": 2.0, "delay_max": 1.0}},
            "delay_max must be >= delay_min",
        ),
    ],
)
def test_bad_async_configs_name_the_field(extra: dict[str, Any], fragment: str) -> None:
    data: dict[str, Any] = {"name": "x", "dataset": "mnist", "training": {"num_clients": 10}}
    data.update(extra)
    with pytest.raises(InvalidConfigError, match=fragment):
        parse_config(data)


def test_an_async_run_cannot_be_resumed(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be resumed exactly"):
        run_experiment(_config(tmp_path), resume=True)


def test_local_dp_runs_asynchronously(tmp_path: Path) -> None:
    data = _config(tmp_path).model_dump()
    data["privacy"] = {"enabled": True, "mode": "local", "epsilon": 20.0}
    result = run_experiment(ExperimentConfig.model_validate(data))
    assert all("privacy" in r.stages for r in result.rounds)


def test_the_shipped_async_config_validates() -> None:
    config = load_config(CONFIGS / "async_fedavg.yaml")
    assert config.async_fl.enabled
    assert config.async_fl.staleness_strategy == "inverse_staleness"
    assert config.async_fl.delay_max == 3.0


def test_compression_runs_asynchronously_and_counts_encoded_bytes(tmp_path: Path) -> None:
    data = _config(tmp_path, buffer_size=2).model_dump()
    plain = run_experiment(ExperimentConfig.model_validate(data), output_dir=tmp_path / "plain")
    data["compression"] = {"enabled": True, "strategy": "topk", "topk_ratio": 0.1}
    squeezed = run_experiment(ExperimentConfig.model_validate(data), output_dir=tmp_path / "topk")
    up_plain = sum(r.bytes_up for r in plain.rounds)
    up_topk = sum(r.bytes_up for r in squeezed.rounds)
    assert all(r.num_clients == 2 for r in squeezed.rounds)
    assert up_topk < 0.3 * up_plain

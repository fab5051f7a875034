"""End to end on real MNIST: a short federation, reproducibility and resume.

Needs the MNIST files ($VELOCITY_DATA or ../shared/data); skipped otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from velocity.experiments import parse_config
from velocity.experiments.runner import run_experiment


def _data_dir() -> str | None:
    for cand in (os.environ.get("VELOCITY_DATA"), str(Path(__file__).parents[3] / "shared/data")):
        if cand and (Path(cand) / "mnist").is_dir():
            return cand
    return None


DATA = _data_dir()
pytestmark = pytest.mark.skipif(DATA is None, reason="MNIST files not found")


def _config(tmp: Path, **output: Any) -> Any:
    return parse_config(
        {
            "name": "mnist_smoke",
            "seed": 7,
            "dataset": "mnist",
            "data_dir": DATA,
            "model_id": "mnist-2nn",
            "strategy": "FedAvg",
            "training": {"num_rounds": 3, "num_clients": 6, "client_fraction": 0.5},
            "client": {"batch_size": 32, "local_steps": 20, "lr": 0.1, "momentum": 0.5},
            "simulation": {"partitioning": "dirichlet", "alpha": 0.5, "dropout_rate": 0.2},
            "output": {"dir": str(tmp), "save_plots": False, **output},
        }
    )


def test_short_real_run_learns_and_writes_outputs(tmp_path: Path) -> None:
    result = run_experiment(_config(tmp_path), output_dir=tmp_path / "a")
    assert len(result.rounds) == 3
    assert result.final_accuracy is not None
    assert result.final_accuracy > 0.75  # 3 short rounds of a 2-layer MLP; chance is 0.1
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["final_model_digest"] == result.final_model_digest
    comm = json.loads((tmp_path / "a" / "communication.json").read_text())
    assert comm  # real serialized sizes: 199,210 float32 params + safetensors header
    per_update = result.rounds[0].bytes_up // max(len(result.rounds[0].participated), 1)
    assert 199_210 * 4 < per_update < 199_210 * 4 + 4096


def test_same_config_and_seed_give_the_same_model(tmp_path: Path) -> None:
    a = run_experiment(_config(tmp_path), output_dir=tmp_path / "a")
    b = run_experiment(_config(tmp_path), output_dir=tmp_path / "b")
    assert a.final_model_digest == b.final_model_digest
    assert a.config_hash == b.config_hash
    c = run_experiment(_config(tmp_path), output_dir=tmp_path / "c", seed=8)
    assert c.final_model_digest != a.final_model_digest
    # the overriding seed is part of the run's configuration
    assert c.seed == c.config["seed"] == 8
    assert a.seed == a.config["seed"] == 7
    assert c.config_hash != a.config_hash


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path: Path) -> None:
    config = _config(tmp_path, checkpoint_every=1)
    straight = run_experiment(config, output_dir=tmp_path / "straight")
    cut = run_experiment(config, output_dir=tmp_path / "cut", rounds=2)  # "interrupted" after 2
    assert [r.round for r in cut.rounds] == [1, 2]
    assert cut.config["training"]["num_rounds"] == 2  # the override is in the run's config
    resumed = run_experiment(config, output_dir=tmp_path / "cut", resume=True)
    assert [r.round for r in resumed.rounds] == [1, 2, 3]
    assert resumed.final_model_digest == straight.final_model_digest

"""Privacy, compression and secure aggregation through the YAML config, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from velocity.errors import ConfigurationError
from velocity.experiments import ExperimentConfig, InvalidConfigError, parse_config
from velocity.experiments.runner import run_experiment
from velocity.privacy import SamplingScheme, compute_epsilon

PRIVACY_KEYS = {
    "epsilon",
    "delta",
    "noise_multiplier",
    "sampling",
    "sampling_rate",
    "rounds",
    "accountant",
    "neighboring_relation",
    "orders",
}


def _config(out: Path, **extra: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "name": "small",
        "dataset": "synthetic",
        "model_id": "logreg",
        "seed": 5,
        "training": {"num_rounds": 3, "num_clients": 8, "client_fraction": 0.5},
        "client": {"local_steps": 2, "batch_size": 16, "lr": 0.1},
        "simulation": {"partitioning": "natural"},
        "output": {"dir": str(out), "save_plots": True},
    }
    data.update(extra)
    return parse_config(data)


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "small" / "summary.json").read_text())


@pytest.mark.parametrize("sampling", ["fixed", "poisson"])
def test_central_dp_reports_epsilon_every_round_as_the_library_composes_it(
    tmp_path: Path, sampling: str
) -> None:
    privacy = {"enabled": True, "epsilon": 50.0, "client_sampling": sampling}
    result = run_experiment(_config(tmp_path, privacy=privacy))
    summary = _summary(tmp_path)["privacy"]
    assert set(summary) >= PRIVACY_KEYS
    assert summary["sampling"] == sampling
    assert summary["rounds"] == 3
    scheme = SamplingScheme.poisson(8, 0.5) if sampling == "poisson" else SamplingScheme.fixed(8, 4)
    z = summary["noise_multiplier"]
    rounds = [r for r in result.rounds if "central_dp" in r.stages]
    for i, record in enumerate(rounds, start=1):
        assert record.stages["privacy"]["epsilon"] == pytest.approx(
            compute_epsilon(z, scheme, 1e-5, rounds=i), rel=1e-9
        )
    assert summary["epsilon"] <= 50.0
    metrics = json.loads((tmp_path / "small" / "metrics.json").read_text())
    assert all("epsilon" in r["stages"]["privacy"] for r in metrics["rounds"])
    assert (tmp_path / "small" / "plots" / "privacy_utility.png").exists()
    assert "<h2>Privacy</h2>" in (tmp_path / "small" / "report.html").read_text()


def test_a_run_whose_rounds_exceed_the_budget_refuses_to_start(tmp_path: Path) -> None:
    privacy = {"enabled": True, "epsilon": 1.0, "noise_multiplier": 0.5}
    with pytest.raises(ConfigurationError, match=r"reach epsilon=\S+ > privacy\.epsilon=1"):
        run_experiment(_config(tmp_path, privacy=privacy))
    assert not (tmp_path / "small").exists()


@pytest.mark.parametrize("mode", ["local", "dp_sgd"])
def test_local_and_dp_sgd_modes_run_and_account(tmp_path: Path, mode: str) -> None:
    privacy = {"enabled": True, "epsilon": 8.0, "mode": mode, "accountant": "pld"}
    result = run_experiment(_config(tmp_path, privacy=privacy))
    summary = _summary(tmp_path)["privacy"]
    assert summary["mode"] == mode
    assert summary["epsilon"] <= 8.0
    assert summary["unit"] == ("example" if mode == "dp_sgd" else "client")
    eps = [r.stages["privacy"]["epsilon"] for r in result.rounds]
    assert eps == sorted(eps)
    assert eps[-1] == pytest.approx(summary["epsilon"])


def test_privacy_refuses_rules_that_need_the_rows() -> None:
    with pytest.raises(InvalidConfigError, match="plain mean"):
        _config(Path("x"), strategy={"type": "Krum", "f": 1}, privacy={"enabled": True})


def test_topk_compression_counts_the_exact_encoded_bytes(tmp_path: Path) -> None:
    from velocity.compression import TopK
    from velocity.models import build_model
    from velocity.types import ParamSpec

    compression = {"enabled": True, "strategy": "topk", "topk_ratio": 0.05, "error_feedback": True}
    result = run_experiment(_config(tmp_path, compression=compression))
    model = build_model("logreg", num_classes=10, in_features=60)  # synthetic: 60 features
    size = TopK(0.05).encoded_size(ParamSpec.from_module(model))
    for record in result.rounds:
        assert record.bytes_up == size * len(record.participated)
    plain = run_experiment(_config(tmp_path / "plain"))
    assert sum(r.bytes_up for r in result.rounds) < sum(r.bytes_up for r in plain.rounds) / 5
    comm = json.loads((tmp_path / "small" / "communication.json").read_text())
    assert comm["total_bytes_up"] == sum(r.bytes_up for r in result.rounds)


def _secure(tmp_path: Path, **extra: Any) -> ExperimentConfig:
    return _config(
        tmp_path,
        training={"num_rounds": 2, "num_clients": 10, "client_fraction": 1.0},
        secure_aggregation={
            "enabled": True,
            "corrupt_fraction": 0.0,
            "dropout_rate": 0.1,
            "correctness_bits": 4,
            "dropout_after_masking": 0.2,
        },
        **extra,
    )


def test_secure_aggregation_gives_the_plain_mean_within_fixed_point_error(tmp_path: Path) -> None:
    secure = run_experiment(_secure(tmp_path / "s"))
    plain = run_experiment(
        _config(
            tmp_path / "p", training={"num_rounds": 2, "num_clients": 10, "client_fraction": 1.0}
        )
    )
    first = secure.rounds[0]
    assert first.aggregation["aggregated_by"] == "secagg"
    assert first.stages["secagg"]["dropped_after_masking"] >= 1
    # synthetic clients differ in size: the secure mean is unweighted, the plain one weighted
    assert secure.final_accuracy is not None
    assert plain.final_accuracy is not None
    assert abs(secure.final_accuracy - plain.final_accuracy) < 0.1


def test_secure_aggregation_with_central_and_distributed_dp(tmp_path: Path) -> None:
    for distributed in (False, True):
        privacy = {"enabled": True, "epsilon": 50.0, "distributed": distributed}
        result = run_experiment(_secure(tmp_path / str(distributed), privacy=privacy))
        summary = json.loads((tmp_path / str(distributed) / "small" / "summary.json").read_text())[
            "privacy"
        ]
        assert summary["distributed"] is distributed
        assert summary["epsilon"] <= 50.0
        assert all("central_dp" in r.stages for r in result.rounds)


def test_secure_aggregation_refuses_an_infeasible_threat_model_before_running() -> None:
    with pytest.raises(InvalidConfigError, match="secure_aggregation: derive_parameters"):
        _config(
            Path("x"),
            training={"num_rounds": 2, "num_clients": 10, "client_fraction": 1.0},
            secure_aggregation={"enabled": True, "dropout_rate": 0.1},
        )


def test_secure_aggregation_refuses_crafting_attacks_and_robust_rules() -> None:
    with pytest.raises(InvalidConfigError, match="crafted-update attacks"):
        _secure(Path("x"), attacks=[{"type": "sign_flip", "fraction": 0.2}])
    with pytest.raises(InvalidConfigError, match="plain mean"):
        _secure(Path("x"), strategy={"type": "TrimmedMean", "k": 1})


def test_downlink_compression_counts_diffs_for_clients_that_hold_the_last_model(
    tmp_path: Path,
) -> None:
    from velocity.compression import Float16

    compression = {"enabled": True, "strategy": "quantization", "downlink": True}
    cfg = _config(
        tmp_path,
        compression=compression,
        training={"num_rounds": 3, "num_clients": 4, "client_fraction": 1.0},
    )
    result = run_experiment(cfg)
    plain = run_experiment(
        _config(
            tmp_path / "p", training={"num_rounds": 3, "num_clients": 4, "client_fraction": 1.0}
        )
    )
    full = plain.rounds[0].bytes_down // 4
    from velocity.models import build_model
    from velocity.types import ParamSpec

    spec = ParamSpec.from_module(build_model("logreg", num_classes=10, in_features=60))
    diff = Float16().encoded_size(spec)
    assert result.rounds[0].bytes_down == 4 * full  # nobody holds a model yet
    assert result.rounds[1].bytes_down == 4 * diff  # every client trained last round
    assert "downlink" in result.rounds[1].stages
    with pytest.raises(InvalidConfigError, match="plain server step"):
        _config(tmp_path, compression=compression, strategy=["FedAvg", "FedAdam"])


def test_cli_prints_the_privacy_spent_and_refuses_an_overspent_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from velocity import cli

    data = _config(tmp_path, privacy={"enabled": True, "epsilon": 30.0}).model_dump(mode="json")
    data["strategy"] = "FedAvg"
    path = tmp_path / "dp.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["run", "--config", str(path), "--no-progress"]) == cli.EXIT_OK
    assert "epsilon" in capsys.readouterr().out
    data["privacy"]["noise_multiplier"] = 0.2
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["run", "--config", str(path), "--no-progress"]) != cli.EXIT_OK
    assert "privacy.epsilon=30" in capsys.readouterr().err

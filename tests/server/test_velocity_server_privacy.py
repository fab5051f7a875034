"""VelocityServer with privacy, compression and secure aggregation (the Python entry point)."""

from __future__ import annotations

import pytest

from velocity import VelocityServer
from velocity.client import TrainConfig
from velocity.compression import TopK
from velocity.errors import ConfigurationError
from velocity.privacy import PrivacyBudgetExceededError, PrivacySettings
from velocity.secagg import ThreatModel
from velocity.sim.secure import SecAggConfig

COMMON = {
    "num_clients": 8,
    "partitioning": "natural",
    "client_fraction": 0.5,
    "train_config": TrainConfig(batch_size=16, local_steps=2, lr=0.1),
}


def test_private_server_reports_epsilon_and_stops_past_its_plan() -> None:
    server = VelocityServer(
        "logreg",
        "synthetic",
        "FedAvg",
        storage="memory://vs-dp",
        privacy=PrivacySettings(epsilon=20.0, client_sampling="poisson"),
        num_rounds=2,
        **COMMON,  # type: ignore[arg-type]
    )
    rounds = server.run(rounds=2)
    eps = [r["stages"]["privacy"]["epsilon"] for r in rounds]
    assert eps[0] < eps[1] <= 20.0

    def run_until_refused() -> None:
        for _ in range(20):  # Poisson rounds may be empty (skipped) until one releases
            server.run(rounds=1)

    with pytest.raises(PrivacyBudgetExceededError, match="epsilon"):
        run_until_refused()


def test_compressed_and_secure_servers_run() -> None:
    compressed = VelocityServer(
        "logreg",
        "synthetic",
        storage="memory://vs-c",
        compression=TopK(0.1),
        error_feedback=True,
        **COMMON,  # type: ignore[arg-type]
    )
    (record,) = compressed.run(rounds=1)
    assert record["bytes_up"] < 4 * 610 * record["num_clients"]
    secure = VelocityServer(
        "logreg",
        "synthetic",
        storage="memory://vs-s",
        secure_aggregation=SecAggConfig(
            threat=ThreatModel(0.0, 0.0, correctness_bits=4), clip=1.0, seed=1
        ),
        **COMMON,  # type: ignore[arg-type]
    )
    (record,) = secure.run(rounds=1)
    assert record["aggregation"]["aggregated_by"] == "secagg"


def test_layer_shapes_servers_refuse_protections() -> None:
    with pytest.raises(ConfigurationError, match="dataset server"):
        VelocityServer(
            "toy", "none", storage="memory://vs-x", layer_shapes={"w": 4}, compression=TopK(0.5)
        )

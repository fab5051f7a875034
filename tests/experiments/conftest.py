"""Shared fixtures: a synthetic :class:`RunResult` built without training anything."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from velocity.experiments import ExperimentConfig, RoundCallback, RoundResult, RunResult
from velocity.experiments.config import parse_config
from velocity.types import ClientFailure

MakeResult = Callable[..., RunResult]


def synthetic_result(
    config: ExperimentConfig | None = None,
    *,
    num_clients: int = 12,
    num_classes: int = 10,
    on_round: RoundCallback | None = None,
) -> RunResult:
    """A deterministic fake run: accuracy climbs, some clients drop or straggle."""
    if config is None:
        config = parse_config(
            {
                "name": "synthetic_run",
                "dataset": "mnist",
                "training": {"num_rounds": 6, "num_clients": num_clients, "eval_every": 2},
            }
        )
    rng = np.random.default_rng(config.seed)
    client_ids = tuple(f"client_{i:04d}" for i in range(num_clients))
    per_round = max(1, config.training.clients_per_round)
    records = []
    for r in range(1, config.training.num_rounds + 1):
        picks = rng.choice(num_clients, size=min(per_round, num_clients), replace=False)
        selected = tuple(client_ids[i] for i in sorted(picks))
        dropped = selected[:1] if r % 3 == 0 and len(selected) > 2 else ()
        stragglers = selected[1:2] if r % 4 == 0 and len(selected) > 2 else ()
        participated = tuple(c for c in selected if c not in dropped and c not in stragglers)
        evaluated = r % config.training.eval_every == 0 or r == config.training.num_rounds
        accuracy = 1.0 - 0.5 * math.exp(-r / 2)
        record = RoundResult(
            round=r,
            selected_client_ids=selected,
            participated=participated,
            failures=(
                *(ClientFailure(c, "dropped", round=r) for c in dropped),
                *(ClientFailure(c, "timed_out", round=r) for c in stragglers),
            ),
            global_loss=(2.0 * math.exp(-r / 3)) if evaluated else None,
            global_accuracy=accuracy if evaluated else None,
            train_loss=1.5 * math.exp(-r / 3),
            client_accuracy={c: min(1.0, accuracy + 0.01 * k) for k, c in enumerate(participated)},
            bytes_up=4_000 * len(participated),
            bytes_down=4_000 * len(selected),
            duration_s=0.125,
            aggregation={
                "rule": "FedAvg",
                "n": len(participated),
                "dropped_nonfinite": (),
                "norm": np.float32(1.5),
                "bad": float("nan"),
            },
        )
        records.append(record)
        if on_round is not None:
            on_round(record)
    accuracies = [rec.global_accuracy for rec in records if rec.global_accuracy is not None]
    histogram = [
        [int(v) for v in rng.integers(0, 50, size=num_classes)] for _ in range(num_clients)
    ]
    return RunResult(
        name=config.name,
        config=config.resolved(),
        config_hash=config.config_hash(),
        seed=config.seed,
        dataset=config.dataset,
        model_id=config.model_id,
        num_params=1_000,
        num_clients=num_clients,
        client_ids=client_ids,
        rounds=tuple(records),
        label_histogram=histogram,
        final_model_digest="ab" * 32,
        wall_time_s=1.5,
        final_accuracy=accuracies[-1] if accuracies else None,
        best_accuracy=max(accuracies) if accuracies else None,
    )


@pytest.fixture(scope="session")
def make_result() -> MakeResult:
    return synthetic_result

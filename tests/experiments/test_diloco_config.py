"""DiLoCo from YAML: the ``client`` optimizer fields reach the trainer, and the shipped
``configs/diloco_shakespeare.yaml`` wires DiLoCo on the char-transformer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from velocity.data import ArrayDataset
from velocity.experiments import InvalidConfigError, load_config, parse_config
from velocity.experiments.runner import build_simulation
from velocity.models import CharTransformer
from velocity.sim.provider import SequentialClients
from velocity.strategies import DiLoCo, FedAvg, Pipeline

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "diloco_shakespeare.yaml"


def _windows(n: int, seed: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 80, (n, 80), generator=g)
    return ArrayDataset("shakespeare", x, torch.randint(0, 80, (n,), generator=g), num_classes=80)


def test_the_shipped_config_wires_diloco() -> None:
    config = load_config(CONFIG)
    assert config.strategy_obj() == Pipeline(FedAvg(), DiLoCo(lr=0.7, momentum=0.9))
    assert config.training.num_clients == 4
    assert config.training.client_fraction == 1.0
    federation = build_simulation(config, seed=0, datasets=(_windows(400, 0), _windows(40, 1)))
    base = federation.engine.provider
    assert isinstance(base, SequentialClients)
    trained = base.trainer.config
    assert (trained.optimizer, trained.keep_optimizer_state) == ("adamw", True)
    assert (trained.local_steps, trained.batch_size, trained.lr) == (50, 32, 0.002)
    assert (trained.beta1, trained.beta2, trained.weight_decay) == (0.9, 0.99, 0.01)
    assert isinstance(base.trainer.model, CharTransformer)
    assert federation.engine.strategy.server_optimizer == DiLoCo()


def test_client_optimizer_fields_and_defaults() -> None:
    plain = parse_config({"name": "x", "dataset": "mnist"}).client
    assert (plain.optimizer, plain.keep_optimizer_state) == ("sgd", False)
    assert (plain.beta1, plain.beta2, plain.eps) == (0.9, 0.999, 1e-8)
    client = {"optimizer": "adamw", "eps": 1e-6, "beta1": 0.5}
    config = parse_config({"name": "x", "dataset": "mnist", "client": client})
    assert (config.client.optimizer, config.client.eps, config.client.beta1) == ("adamw", 1e-6, 0.5)
    assert config.resolved()["client"]["optimizer"] == "adamw"


@pytest.mark.parametrize(
    ("client", "problem"),
    [
        ({"optimizer": "adam"}, "client.optimizer: must be one of 'sgd', 'adamw'; got 'adam'"),
        ({"beta2": 1.0}, "client.beta2: must be >= 0 and < 1; got 1.0"),
        ({"eps": 0}, "client.eps: must be > 0; got 0"),
        ({"keep_optimizer_state": "yes"}, "client.keep_optimizer_state: must be true or false"),
        (
            {"optimizer": "adamw", "momentum": 0.9},
            "client: momentum is SGD's; AdamW keeps its own first moment (beta1)",
        ),
    ],
)
def test_bad_optimizer_fields_are_named(client: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        parse_config({"name": "x", "dataset": "mnist", "client": client})
    assert any(line.startswith(problem) for line in info.value.problems), info.value.problems

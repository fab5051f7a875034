"""Wiring a simulation from plain settings (shared by VelocityServer and the runner)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from velocity._random import derive_seed
from velocity.server.simulation import Simulation, SimulationSettings
from velocity.sim.population import ClientPopulation
from velocity.sim.provider import SequentialClients

__all__ = ["Federation", "make_simulation"]


@dataclass(frozen=True)
class Federation:
    """A wired simulation and what reports need about it."""

    simulation: Simulation
    label_histogram: list[list[int]]
    num_params: int
    client_ids: tuple[str, ...]
    num_classes: int


def make_simulation(
    *,
    dataset: str,
    model_id: str,
    strategy: Any,
    num_clients: int,
    settings: SimulationSettings,
    train_config: Any,
    partitioning: str = "iid",
    alpha: float = 0.5,
    num_shards_per_client: int = 2,
    data_dir: str | None = None,
) -> Federation:
    """Load data, partition it, build model and trainer, and the round loop over them."""
    from velocity.client import Trainer
    from velocity.data import load_dataset, partition
    from velocity.models import build_model

    seed = settings.seed
    train = load_dataset(dataset, split="train", data_dir=data_dir)
    test = load_dataset(dataset, split="test", data_dir=data_dir)
    part = partition(
        train.y,
        num_clients,
        partitioning,  # type: ignore[arg-type]
        seed=derive_seed(seed, "partition"),
        alpha=alpha,
        num_shards_per_client=num_shards_per_client,
        groups=train.groups,
    )
    population = ClientPopulation(part.order, part.offsets)
    extra: dict[str, Any] = {}
    if model_id == "logreg":
        extra["in_features"] = int(train.x[0].numel())
    model = build_model(
        model_id, num_classes=train.num_classes, seed=derive_seed(seed, "init") % 2**31, **extra
    )
    trainer = Trainer(model, train_config)
    spec = trainer.spec
    init = spec.flatten(model.state_dict())

    def evaluate(params: torch.Tensor) -> tuple[float, float]:
        loss, acc = trainer.evaluate(params, test.x, test.y)
        return float(loss), float(acc)

    simulation = Simulation(
        provider=SequentialClients(trainer, train.x, train.y, population, seed=seed),
        population=population,
        spec=spec,
        init_params=init,
        strategy=strategy,
        settings=settings,
        evaluate=evaluate,
    )
    shown = min(population.num_clients, 1000)
    hist = part.label_histogram(train.y, train.num_classes)[:shown]
    return Federation(
        simulation=simulation,
        label_histogram=hist.tolist(),
        num_params=spec.d,
        client_ids=tuple(population.client_id(i) for i in range(population.num_clients)),
        num_classes=train.num_classes,
    )

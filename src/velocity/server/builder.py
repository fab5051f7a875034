"""Wiring a simulation from plain settings (shared by VelocityServer and the runner)."""

from __future__ import annotations

from collections.abc import Sequence
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
    attacks: Sequence[Any] = (),
    datasets: tuple[Any, Any] | None = None,
) -> Federation:
    """Load data, partition it, build model and trainer, and the round loop over them.

    ``attacks`` are :class:`velocity.attacks.AttackSpec` objects; their adversaries are
    resolved against the population and ``settings.seed``.
    """
    from velocity.attacks import AttackPlan
    from velocity.client import Trainer
    from velocity.data import load_dataset, partition
    from velocity.models import build_model
    from velocity.sim.population import client_index

    seed = settings.seed
    if datasets is not None:
        train, test = datasets
    else:
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

    def backdoor_success(params: torch.Tensor, attack: Any) -> float:
        keep = test.y != attack.target
        x = attack.apply_trigger(test.x[keep])
        y = torch.full_like(test.y[keep], attack.target)
        return float(trainer.evaluate(params, x, y)[1])

    plan = AttackPlan(
        num_clients=population.num_clients, seed=seed, index_of=client_index, specs=list(attacks)
    )
    simulation = Simulation(
        provider=SequentialClients(
            trainer, train.x, train.y, population, seed=seed, num_classes=train.num_classes
        ),
        population=population,
        spec=spec,
        init_params=init,
        strategy=strategy,
        settings=settings,
        evaluate=evaluate,
        attacks=plan,
        backdoor_evaluate=backdoor_success,
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

"""The one builder: every simulated federation's engine is wired here.

YAML experiments (:func:`velocity.experiments.runner.build_simulation`), ``VelocityServer``
(dataset and ``layer_shapes`` servers), ByzPy's ``ParameterServer`` and the robustness grid
all end in :func:`build_engine`: a base provider of simulated clients, the backend it runs
behind (``backend: {type: ...}``), the population's sampler, the round deadline as the
synchronous trigger policy, the simulated adversary as a server stage and annotator, FedProx's
``mu`` as every task's config, and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from velocity._random import derive_seed
from velocity.server.engine import Evaluator, RoundEngine, SyncRound
from velocity.sim.adversary import BackdoorEvaluator, SimulatedAdversary
from velocity.sim.backends import BackendSpec, make_backend
from velocity.sim.population import ClientPopulation
from velocity.sim.provider import SequentialClients, SimulatedClients
from velocity.sim.sampling import FractionSampler
from velocity.sim.settings import SimulationSettings
from velocity.types import ClientStateStore, ParamSpec, TaskConfig

if TYPE_CHECKING:
    from velocity.attacks import AttackPlan, AttackSpec, Backdoor
    from velocity.client import TrainConfig
    from velocity.data import ArrayDataset
    from velocity.strategies import Strategy

__all__ = ["Federation", "build_engine", "make_simulation", "task_config_for"]


@dataclass(frozen=True)
class Federation:
    """A wired engine and what reports need about it."""

    engine: RoundEngine
    adversary: SimulatedAdversary
    label_histogram: list[list[int]]
    num_params: int
    client_ids: tuple[str, ...]
    num_classes: int


def task_config_for(strategy: Strategy) -> TaskConfig:
    """Every task's config under ``strategy``: FedProx's ``mu`` reaches the clients."""
    from velocity.strategies import FedProx

    aggregator = strategy.aggregator
    if isinstance(aggregator, FedProx):
        return TaskConfig(prox_mu=aggregator.mu)
    return TaskConfig()


def build_engine(
    *,
    base: SimulatedClients,
    spec: ParamSpec,
    init_params: torch.Tensor,
    strategy: Strategy,
    settings: SimulationSettings,
    evaluate: Evaluator | None = None,
    attacks: Sequence[AttackSpec] | AttackPlan = (),
    backdoor_evaluate: BackdoorEvaluator | None = None,
    backend: BackendSpec | str = "sequential",
    client_state: ClientStateStore | None = None,
) -> RoundEngine:
    """The round engine of a simulated federation whose clients are ``base``'s."""
    from velocity.attacks import AttackPlan

    population = base.population
    seed = settings.seed
    plan = (
        attacks
        if isinstance(attacks, AttackPlan)
        else AttackPlan(
            num_clients=population.num_clients,
            seed=seed,
            index_of=population.index_of,
            specs=list(attacks),
        )
    )
    adversary = SimulatedAdversary(plan, population, backdoor_evaluate=backdoor_evaluate)
    base.configure(
        dropout_rate=settings.dropout_rate, straggler=settings.straggler, adversary=adversary
    )
    straggler = settings.straggler
    return RoundEngine(
        provider=make_backend(backend, base),
        sampler=FractionSampler(
            population,
            fraction=settings.client_fraction,
            min_clients=settings.min_clients,
            seed=seed,
        ),
        spec=spec,
        init_params=init_params,
        strategy=strategy,
        seed=seed,
        policy=SyncRound(timeout_s=None if straggler is None else straggler.deadline_s),
        pre_stages=[adversary.stage],
        evaluate=evaluate,
        eval_every=settings.eval_every,
        task_config=task_config_for(strategy),
        client_state=client_state,
        annotators=[adversary],
    )


def adversary_of(engine: RoundEngine) -> SimulatedAdversary:
    """The simulated adversary :func:`build_engine` wired into ``engine``."""
    for annotator in engine.annotators:
        if isinstance(annotator, SimulatedAdversary):
            return annotator
    raise LookupError("this engine has no simulated adversary")


def make_simulation(
    *,
    dataset: str,
    model_id: str,
    strategy: Strategy,
    num_clients: int,
    settings: SimulationSettings,
    train_config: TrainConfig,
    partitioning: str = "iid",
    alpha: float = 0.5,
    num_shards_per_client: int = 2,
    data_dir: str | None = None,
    attacks: Sequence[AttackSpec] = (),
    datasets: tuple[ArrayDataset, ArrayDataset] | None = None,
    backend: BackendSpec | str = "sequential",
) -> Federation:
    """Load data, partition it, build model and trainer, and the engine over them.

    ``attacks`` are :class:`velocity.attacks.AttackSpec` objects; their adversaries are
    resolved against the population and ``settings.seed``.
    """
    from velocity.client import Trainer
    from velocity.data import load_dataset, partition
    from velocity.models import build_model

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
    extra: dict[str, int] = {}
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

    def backdoor_success(params: torch.Tensor, attack: Backdoor) -> float:
        keep = test.y != attack.target
        x = attack.apply_trigger(test.x[keep])
        y = torch.full_like(test.y[keep], attack.target)
        return float(trainer.evaluate(params, x, y)[1])

    base = SequentialClients(
        trainer, train.x, train.y, population, seed=seed, num_classes=train.num_classes
    )
    engine = build_engine(
        base=base,
        spec=spec,
        init_params=init,
        strategy=strategy,
        settings=settings,
        evaluate=evaluate,
        attacks=attacks,
        backdoor_evaluate=backdoor_success,
        backend=backend,
    )
    shown = min(population.num_clients, 1000)
    hist = part.label_histogram(train.y, train.num_classes)[:shown]
    return Federation(
        engine=engine,
        adversary=adversary_of(engine),
        label_histogram=hist.tolist(),
        num_params=spec.d,
        client_ids=tuple(population.client_id(i) for i in range(population.num_clients)),
        num_classes=train.num_classes,
    )

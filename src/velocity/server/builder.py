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
from velocity.server.engine import Evaluator, RoundAnnotator, RoundEngine, SyncRound
from velocity.sim.adversary import BackdoorEvaluator, SimulatedAdversary
from velocity.sim.backends import BackendSpec, make_backend
from velocity.sim.population import ClientPopulation
from velocity.sim.provider import SequentialClients, SimulatedClients
from velocity.sim.sampling import FractionSampler
from velocity.sim.settings import SimulationSettings
from velocity.types import ClientStateStore, ParamSpec, Stage, TaskConfig

if TYPE_CHECKING:
    from velocity.attacks import AttackPlan, AttackSpec, Backdoor
    from velocity.client import TrainConfig
    from velocity.data import ArrayDataset
    from velocity.strategies import RoundBatch, Strategy

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
    train: ArrayDataset | None = None
    test: ArrayDataset | None = None


def task_config_for(strategy: Strategy) -> TaskConfig:
    """Every task's config under ``strategy``: FedProx's ``mu`` reaches the clients, and a
    loss-weighted rule (QFedAvg) asks each client for its ``initial_loss``."""
    from velocity.strategies import FedProx

    aggregator = strategy.aggregator
    mu = aggregator.mu if isinstance(aggregator, FedProx) else None
    options = {"initial_loss": True} if aggregator.needs_losses else {}
    return TaskConfig(prox_mu=mu, options=options)


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
    stages: Sequence[Stage[RoundBatch]] = (),
    post_stages: Sequence[Stage[RoundBatch]] = (),
    annotators: Sequence[RoundAnnotator] = (),
) -> RoundEngine:
    """The round engine of a simulated federation whose clients are ``base``'s.

    ``stages`` run after the simulated adversary and before aggregation (the audit trail's
    digests: what the server received), ``post_stages`` after aggregation (research
    metrics); ``annotators`` after the adversary's.
    """
    from velocity.attacks import AttackPlan
    from velocity.strategies import resolve_lipschitz

    lr = _client_lr(base)
    if lr is not None:
        strategy = resolve_lipschitz(strategy, lr)
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
        pre_stages=[adversary.stage, *stages],
        post_stages=post_stages,
        evaluate=evaluate,
        eval_every=settings.eval_every,
        task_config=task_config_for(strategy),
        client_state=client_state,
        annotators=[adversary, *annotators],
    )


def _client_lr(base: SimulatedClients) -> float | None:
    """The clients' SGD step size (QFedAvg's ``L = 1/lr``), when the population has one."""
    if isinstance(base, SequentialClients):
        return float(base.trainer.config.lr)
    lr = getattr(base, "lr", None)
    return float(lr) if isinstance(lr, int | float) else None


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
    stages: Sequence[Stage[RoundBatch]] = (),
    post_stages: Sequence[Stage[RoundBatch]] = (),
    client_eval_samples: int | None = None,
) -> Federation:
    """Load data, partition it, build model and trainer, and the engine over them.

    ``attacks`` are :class:`velocity.attacks.AttackSpec` objects; their adversaries are
    resolved against the population and ``settings.seed``. ``stages`` and ``post_stages``
    go to :func:`build_engine`; ``client_eval_samples`` adds a
    :class:`velocity.sim.client_eval.ClientEvaluator` with that many held-out examples per
    client.
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
    histogram = part.label_histogram(train.y, train.num_classes)
    client_ids = tuple(population.client_id(i) for i in range(population.num_clients))
    annotators: list[RoundAnnotator] = []
    if client_eval_samples is not None:
        from velocity.sim.client_eval import ClientEvaluator

        def evaluate_on(
            params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
        ) -> tuple[float, float]:
            loss, acc = trainer.evaluate(params, x, y, indices=idx)
            return float(loss), float(acc)

        annotators.append(
            ClientEvaluator(
                evaluate_on,
                test.x,
                test.y,
                client_ids=client_ids,
                histograms=histogram.tolist(),
                samples=client_eval_samples,
                seed=seed,
            )
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
        stages=stages,
        post_stages=post_stages,
        annotators=annotators,
    )
    shown = min(population.num_clients, 1000)
    hist = histogram[:shown]
    return Federation(
        engine=engine,
        adversary=adversary_of(engine),
        label_histogram=hist.tolist(),
        num_params=spec.d,
        client_ids=client_ids,
        num_classes=train.num_classes,
        train=train,
        test=test,
    )

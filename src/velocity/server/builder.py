"""The one builder: every simulated federation's engine is wired here.

YAML experiments (:func:`velocity.experiments.runner.build_simulation`), ``VelocityServer``
(dataset and ``layer_shapes`` servers), ByzPy's ``ParameterServer`` and the robustness grid
all end in :func:`build_engine`: a base provider of simulated clients, the backend it runs
behind (``backend: {type: ...}``), the population's sampler, the round deadline as the
synchronous trigger policy, the simulated adversary as a server stage and annotator, FedProx's
``mu`` as every task's config, and evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from velocity._random import derive_seed
from velocity.errors import ConfigurationError
from velocity.server.engine import (
    Callback,
    Evaluator,
    PayloadDecoder,
    RoundAnnotator,
    RoundEngine,
    SyncRound,
    TriggerPolicy,
)
from velocity.sim.adversary import BackdoorEvaluator, SimulatedAdversary
from velocity.sim.backends import BackendSpec, make_backend
from velocity.sim.population import ClientPopulation
from velocity.sim.provider import SequentialClients, SimulatedClients
from velocity.sim.sampling import FractionSampler, PoissonSampler, clients_per_round
from velocity.sim.settings import SimulationSettings
from velocity.types import (
    ClientSampler,
    ClientStateStore,
    ParamSpec,
    Stage,
    TaskConfig,
    UpdateEncoder,
    UpdateProvider,
)

if TYPE_CHECKING:
    from velocity.attacks import AttackPlan, AttackSpec, Backdoor
    from velocity.client import TrainConfig
    from velocity.compression import DownlinkCodec
    from velocity.data import ArrayDataset
    from velocity.privacy import PrivacyPlan, PrivacySettings
    from velocity.server.asynchronous import AsyncSettings
    from velocity.sim.secure import SecAggConfig
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
    privacy: PrivacyPlan | None = None


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
    client_stages: Sequence[Stage[torch.Tensor]] = (),
    encoder: UpdateEncoder | None = None,
    sum_stages: Sequence[Stage[RoundBatch]] = (),
    callbacks: Sequence[Callback] = (),
    sampler: ClientSampler | None = None,
    downlink_bytes: int | None = None,
    secure: SecAggConfig | None = None,
    asynchronous: AsyncSettings | None = None,
) -> RoundEngine:
    """The round engine of a simulated federation whose clients are ``base``'s.

    ``stages`` run after the simulated adversary and before aggregation (the audit trail's
    digests: what the server received), ``sum_stages`` after them (the sum-only stages that
    aggregate themselves: secure aggregation's unmasking, central DP), ``post_stages`` after
    aggregation (research metrics); ``annotators`` after the adversary's. ``client_stages``
    run on every honest client's row after training and ``encoder`` turns each row into the
    bytes that travel (its ``decode`` is registered with the engine). ``sampler`` replaces
    the population's fixed-fraction sampler (Poisson sampling for DP). ``asynchronous``
    replaces synchronous rounds by :class:`velocity.server.asynchronous.BufferedAsync` over
    the whole population, with its staleness weighting as a server stage.
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
    store = ClientStateStore() if client_state is None else client_state
    base.configure(
        dropout_rate=settings.dropout_rate,
        straggler=settings.delay_model,
        adversary=adversary,
        client_stages=client_stages,
        encoder=encoder,
        client_state=store,
        spec=spec,
    )
    straggler = settings.straggler
    provider: UpdateProvider = make_backend(backend, base)
    decoders: dict[str, PayloadDecoder] = (
        {} if encoder is None else {encoder.encoding: encoder.decode}
    )
    async_stages: list[Stage[RoundBatch]] = []
    policy: TriggerPolicy = SyncRound(timeout_s=None if straggler is None else straggler.deadline_s)
    if asynchronous is not None:
        _check_asynchronous(plan, secure, sum_stages, straggler is not None)
        ids = [population.client_id(i) for i in range(population.num_clients)]
        policy = asynchronous.policy(ids, seed=seed)
        async_stages.append(asynchronous.stage())
    secure_stages: list[Stage[RoundBatch]] = []
    if secure is not None:
        from velocity.sim.secure import build_secure_aggregation, check_compatible

        check_compatible(strategy, plan)
        provider, secagg_stage, secagg_decoders = build_secure_aggregation(secure, provider)
        secure_stages.append(secagg_stage)
        decoders.update(secagg_decoders)
    return RoundEngine(
        provider=provider,
        sampler=sampler
        or FractionSampler(
            population,
            fraction=settings.client_fraction,
            min_clients=settings.min_clients,
            seed=seed,
        ),
        spec=spec,
        init_params=init_params,
        strategy=strategy,
        seed=seed,
        policy=policy,
        pre_stages=[adversary.stage, *stages, *async_stages, *secure_stages, *sum_stages],
        post_stages=post_stages,
        evaluate=evaluate,
        eval_every=settings.eval_every,
        task_config=task_config_for(strategy),
        client_state=store,
        annotators=[adversary, *annotators],
        callbacks=callbacks,
        decoders=decoders,
        downlink_bytes=downlink_bytes,
    )


def _check_asynchronous(
    plan: AttackPlan, secure: SecAggConfig | None, sum_stages: Sequence[object], deadline: bool
) -> None:
    """What asynchronous FL does not combine with, each refused by name."""
    if plan.specs:
        raise ConfigurationError(
            "async_fl: simulated attacks are resolved per synchronous round and are not "
            "supported with asynchronous FL yet; remove attacks or disable async_fl"
        )
    if secure is not None:
        raise ConfigurationError(
            "async_fl: secure aggregation needs a synchronous cohort (its masks cancel only "
            "over one round's clients); disable secure_aggregation or async_fl"
        )
    if sum_stages:
        raise ConfigurationError(
            "async_fl: central DP's accounting assumes Poisson or fixed-size client sampling "
            "per round, which asynchronous dispatch is not; use privacy.mode: local or dp_sgd"
        )
    if deadline:
        raise ConfigurationError(
            "async_fl: a round deadline (simulation.straggler) does not apply to asynchronous "
            "rounds; give the client delays in async_fl instead"
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
    privacy: PrivacySettings | None = None,
    encoder_for: Callable[[ParamSpec], UpdateEncoder] | None = None,
    secure: SecAggConfig | None = None,
    num_rounds: int | None = None,
    downlink_for: Callable[[ParamSpec], DownlinkCodec] | None = None,
    asynchronous: AsyncSettings | None = None,
    device: str | torch.device = "cpu",
) -> Federation:
    """Load data, partition it, build model and trainer, and the engine over them.

    ``attacks`` are :class:`velocity.attacks.AttackSpec` objects; their adversaries are
    resolved against the population and ``settings.seed``. ``stages`` and ``post_stages``
    go to :func:`build_engine`; ``client_eval_samples`` adds a
    :class:`velocity.sim.client_eval.ClientEvaluator` with that many held-out examples per
    client. ``privacy`` is resolved by :func:`velocity.privacy.plan_privacy` against this
    federation (its stages, DP-SGD settings, sampler and annotator are wired; the plan is
    :attr:`Federation.privacy`), ``encoder_for(spec)`` makes the clients' codec, ``secure``
    wraps the clients in secure aggregation, ``asynchronous`` makes the rounds asynchronous
    (see :func:`build_engine`). ``device`` (:func:`velocity.client.resolve_device`:
    ``"cpu"``, ``"cuda"``, ``"cuda:<i>"`` or ``"auto"``) is where the clients' model and a
    copy of the data live; the engine's global model and update stack stay on the CPU
    (each update is copied into its row once, after its client's training).
    """
    from velocity.client import Trainer, resolve_device
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
    plan = None
    if privacy is not None:
        from velocity.privacy import plan_privacy

        if num_rounds is None:
            raise ConfigurationError("make_simulation: privacy needs num_rounds (the budget's)")
        sizes = [population.num_samples(i) for i in range(population.num_clients)]
        plan = plan_privacy(
            privacy,
            num_rounds=num_rounds,
            num_clients=num_clients,
            clients_per_round=clients_per_round(
                num_clients, settings.client_fraction, settings.min_clients
            ),
            client_fraction=settings.client_fraction,
            client_sizes=sizes,
            batch_size=train_config.batch_size,
            local_steps=train_config.local_steps,
            local_epochs=train_config.local_epochs,
            secure=secure is not None,
        )
        if plan.dp_sgd is not None:
            train_config = replace(
                train_config, dp_clip=plan.dp_sgd[0], dp_noise_multiplier=plan.dp_sgd[1]
            )
    extra: dict[str, int] = {}
    if model_id == "logreg":
        extra["in_features"] = int(train.x[0].numel())
    where = resolve_device(device, field="device")
    model = build_model(
        model_id, num_classes=train.num_classes, seed=derive_seed(seed, "init") % 2**31, **extra
    ).to(where)
    trainer = Trainer(model, train_config)
    spec = trainer.spec
    init = spec.flatten(model.state_dict()).cpu()
    # The clients' copy of the data on their device (the datasets themselves stay on the CPU:
    # their checksums and the partition read them there).
    train_x, train_y = train.x.to(where), train.y.to(where)
    test_x, test_y = test.x.to(where), test.y.to(where)

    def evaluate(params: torch.Tensor) -> tuple[float, float]:
        loss, acc = trainer.evaluate(params, test_x, test_y)
        return float(loss), float(acc)

    def backdoor_success(params: torch.Tensor, attack: Backdoor) -> float:
        keep = test_y != attack.target
        x = attack.apply_trigger(test_x[keep])
        y = torch.full_like(test_y[keep], attack.target)
        return float(trainer.evaluate(params, x, y)[1])

    base = SequentialClients(
        trainer, train_x, train_y, population, seed=seed, num_classes=train.num_classes
    )
    downlink = None
    if downlink_for is not None:
        if strategy.server_optimizer is not None:
            raise ConfigurationError(
                "compression.downlink: clients rebuild the model from the decoded difference, "
                "which needs a plain server step; the strategy has server optimizer "
                f"{type(strategy.server_optimizer).__name__}"
            )
        downlink = downlink_for(spec)
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
                test_x,
                test_y,
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
        post_stages=[*post_stages, *([] if downlink is None else [downlink])],
        downlink_bytes=None if downlink is None else downlink.encoded_size(),
        annotators=annotators if plan is None else [*annotators, plan],
        client_stages=() if plan is None else plan.client_stages,
        sum_stages=() if plan is None else plan.server_stages,
        sampler=(
            PoissonSampler(population, rate=settings.client_fraction, seed=seed)
            if plan is not None and plan.mode == "central" and plan.sampling.kind == "poisson"
            else None
        ),
        encoder=None if encoder_for is None else encoder_for(spec),
        secure=secure,
        asynchronous=asynchronous,
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
        privacy=plan,
    )

"""``VelocityServer``: the researcher-facing facade over the round loop."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import torch

from velocity._validation import (
    Boolean,
    Integer,
    MappingOf,
    NoneOr,
    OneOf,
    Real,
    String,
    check_value,
)
from velocity.errors import ConfigurationError
from velocity.server.builder import adversary_of, build_engine
from velocity.server.checkpoint import CheckpointStore
from velocity.server.engine import RoundEngine
from velocity.sim.quadratic import QuadraticClients
from velocity.sim.sampling import FractionSampler, clients_per_round
from velocity.sim.settings import SimulationSettings
from velocity.strategies import FedAvg, parse_strategy, to_dict
from velocity.types import ParamSpec

if TYPE_CHECKING:
    from velocity.client import TrainConfig
    from velocity.compression import Codec
    from velocity.privacy import PrivacySettings
    from velocity.sim.backends import BackendSpec
    from velocity.sim.secure import SecAggConfig
    from velocity.strategies import Strategy

__all__ = ["MAX_PARAMETERS", "VelocityServer"]

MAX_PARAMETERS: Final = 10**9
"""Largest simulated model (``layer_shapes`` total): a billion float32 parameters, 4 GB/row."""

_LAYER_SHAPES: Final = MappingOf(String(min_length=1), Integer(low=1), min_length=1)


class VelocityServer:
    """High-level orchestrator of a federated experiment (the seed's public API).

    Parameters
    ----------
    model_id : str
        A model of :mod:`velocity.models` (``"mnist-cnn"``, ``"mnist-2nn"``, ``"logreg"``, ...).
    dataset : str
        A dataset of :mod:`velocity.data` (``"mnist"``, ``"fashion_mnist"``, ...).
    strategy : Strategy, optional
        How updates are aggregated; ``FedAvg()`` when omitted. A name or dict is parsed with
        :func:`velocity.strategies.parse_strategy`. ``FedProx(mu)`` sends ``mu`` to every
        client with its task (local training with the proximal term).
    storage : str
        Where a checkpoint is written after every round (fsspec URI; ``"local://dir"`` for a
        local folder, ``"memory://dir"`` in tests). Checkpoints sit in a sub-folder named by
        a fingerprint of the constructor's settings.
    layer_shapes : dict of str to int, optional
        Parameter sizes of a model to simulate without data: aggregation-only rounds on a
        synthetic heterogeneous quadratic objective (:class:`velocity.sim.QuadraticClients`),
        so ``global_loss`` stays meaningful. ``model_id`` and ``dataset`` are then labels.
    num_clients, seed, data_dir, partitioning, alpha, client_fraction, train_config
        Keyword-only simulation settings (defaults: 10 clients, seed 0, IID partition, every
        client each round, ``TrainConfig()`` local training).
    resume : bool
        ``True`` continues from the latest checkpoint of a server built with the same
        settings (a fresh start when there is none). ``False`` (the default) starts fresh and
        refuses, with an error naming the folder, to overwrite existing checkpoints.
    backend : str or BackendSpec
        Where the simulated clients run (``velocity backends``); ``"sequential"`` by default.
    privacy : velocity.privacy.PrivacySettings, optional
        Differential privacy (``docs/privacy.md``); needs ``num_rounds``, the rounds the
        budget is planned for (the noise multiplier is calibrated for them; running more
        raises :class:`~velocity.privacy.PrivacyBudgetExceededError` in central mode).
    compression : velocity.compression codec, optional
        The clients' update codec (``docs/compression.md``); ``error_feedback`` keeps their
        residuals.
    secure_aggregation : velocity.sim.secure.SecAggConfig, optional
        SecAgg+ between the clients and the server (the rule must be a plain mean).

    Examples
    --------
    >>> from velocity import VelocityServer, Krum
    >>> server = VelocityServer("toy", "none", Krum(f=1), storage="memory://doc",
    ...                         layer_shapes={"w": 4, "b": 2}, num_clients=6)
    >>> rounds = server.run(min_clients=6, rounds=2)
    >>> [r["round"] for r in rounds], rounds[1]["num_clients"]
    ([1, 2], 6)
    >>> sorted(server.global_weights)
    ['b', 'w']
    """

    def __init__(
        self,
        model_id: str,
        dataset: str,
        strategy: Strategy | str | Mapping[str, Any] | None = None,
        storage: str = "local://checkpoints",
        layer_shapes: dict[str, int] | None = None,
        *,
        num_clients: int = 10,
        seed: int = 0,
        data_dir: str | None = None,
        partitioning: str = "iid",
        alpha: float = 0.5,
        client_fraction: float = 1.0,
        train_config: TrainConfig | None = None,
        resume: bool = False,
        backend: BackendSpec | str = "sequential",
        privacy: PrivacySettings | None = None,
        num_rounds: int | None = None,
        compression: Codec | None = None,
        error_feedback: bool = False,
        secure_aggregation: SecAggConfig | None = None,
    ) -> None:
        owner = "VelocityServer"
        check_value(owner, "model_id", model_id, String(min_length=1))
        check_value(owner, "dataset", dataset, String(min_length=1))
        if layer_shapes is None:
            from velocity.data import DATASETS
            from velocity.models import check_model_dataset

            check_value(owner, "dataset", dataset, OneOf(*DATASETS))
            check_model_dataset(model_id, dataset, owner=owner)
        else:
            layer_shapes = check_value(owner, "layer_shapes", layer_shapes, _LAYER_SHAPES)
            total = sum(layer_shapes.values())
            if total > MAX_PARAMETERS:
                raise ConfigurationError(
                    f"{owner}.layer_shapes holds {total} parameters; at most {MAX_PARAMETERS} "
                    "(each round stacks one float32 row per client)"
                )
        seed = check_value(owner, "seed", seed, Integer(low=0, high=2**63 - 1))
        num_clients = check_value(owner, "num_clients", num_clients, Integer(low=1))
        partitioning = check_value(
            owner, "partitioning", partitioning, OneOf("iid", "dirichlet", "shard", "natural")
        )
        alpha = check_value(owner, "alpha", alpha, Real(low=0, low_open=True))
        check_value(owner, "data_dir", data_dir, NoneOr(String(min_length=1)))
        if train_config is not None:
            from velocity.client import TrainConfig as _TrainConfig

            if not isinstance(train_config, _TrainConfig):
                raise ConfigurationError(
                    f"{owner}.train_config must be None or a velocity.client.TrainConfig; "
                    f"got {type(train_config).__name__}"
                )
        if not isinstance(storage, str) or not storage.strip("/ "):
            raise ConfigurationError(
                "VelocityServer.storage must be a non-empty fsspec URI such as "
                f"'local://checkpoints' or 'memory://run'; got {storage!r}"
            )
        check_value(owner, "resume", resume, Boolean())
        self.model_id, self.dataset = model_id, dataset
        self.strategy = FedAvg() if strategy is None else parse_strategy(strategy)
        settings = SimulationSettings(seed=seed, client_fraction=client_fraction)
        fingerprint = {
            "model_id": model_id,
            "dataset": dataset,
            "strategy": to_dict(self.strategy),
            "layer_shapes": layer_shapes,
            "num_clients": num_clients,
            "seed": seed,
            "partitioning": partitioning,
            "alpha": alpha,
            "client_fraction": client_fraction,
            "train_config": repr(train_config),
            "privacy": repr(privacy),
            "num_rounds": num_rounds,
            "compression": repr(compression),
            "error_feedback": bool(error_feedback),
            "secure_aggregation": repr(secure_aggregation),
        }
        key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
        self._store = CheckpointStore(f"{storage.rstrip('/')}/{key}")
        self._identity = {"fingerprint": key}
        self._quadratic: QuadraticClients | None = None
        self._private = privacy is not None
        protected = privacy is not None or compression is not None or secure_aggregation
        if layer_shapes is not None:
            if protected:
                raise ConfigurationError(
                    f"{owner}: privacy, compression and secure_aggregation need a dataset "
                    "server (model_id and dataset), not layer_shapes"
                )
            self._engine = self._quadratic_engine(layer_shapes, num_clients, settings, backend)
        else:
            from velocity.client import TrainConfig
            from velocity.compression import CodecEncoder
            from velocity.server.builder import make_simulation

            self._engine = make_simulation(
                dataset=dataset,
                model_id=model_id,
                strategy=self.strategy,
                num_clients=num_clients,
                settings=settings,
                train_config=TrainConfig() if train_config is None else train_config,
                partitioning=partitioning,
                alpha=alpha,
                data_dir=data_dir,
                backend=backend,
                privacy=privacy,
                num_rounds=num_rounds,
                encoder_for=None
                if compression is None
                else functools.partial(CodecEncoder, compression, error_feedback=error_feedback),
                secure=secure_aggregation,
            ).engine
        latest = self._store.latest()
        if latest is not None:
            if not resume:
                raise ConfigurationError(
                    f"VelocityServer: {self._store.uri!r} already holds checkpoints of a server "
                    f"with these settings (up to round {latest}); pass resume=True to continue "
                    "from them, or choose another storage= to start afresh"
                )
            self._engine.restore(*self._store.load(identity=self._identity))
        self._store.check_writable()

    def _quadratic_engine(
        self,
        layer_shapes: dict[str, int],
        num_clients: int,
        settings: SimulationSettings,
        backend: BackendSpec | str,
    ) -> RoundEngine:
        spec = ParamSpec.from_sizes(layer_shapes)
        provider = QuadraticClients(spec.d, seed=settings.seed, num_clients=num_clients)
        self._quadratic = provider

        def evaluate(params: torch.Tensor) -> tuple[float, float]:
            return provider.loss(params), float("nan")

        return build_engine(
            base=provider,
            spec=spec,
            init_params=torch.zeros(spec.d),
            strategy=self.strategy,
            settings=settings,
            evaluate=evaluate,
            backend=backend,
        )

    @property
    def engine(self) -> RoundEngine:
        """The round engine this facade drives."""
        return self._engine

    def run(self, min_clients: int = 1, rounds: int = 1) -> list[dict[str, Any]]:
        """Execute ``rounds`` rounds with at least ``min_clients`` clients selected in each.

        Returns one :meth:`velocity.types.RoundResult.to_dict` per round: ``round``,
        ``num_clients`` (clients whose updates were aggregated), ``global_loss`` (the global
        model's evaluation loss after the round: test loss, or the quadratic objective with
        ``layer_shapes``), ``attack_results`` and ``selected_client_ids``, plus
        ``global_accuracy``, ``train_loss``, ``dropped``, ``failures``, ``bytes_up``/
        ``bytes_down`` and the rest. A round's result is checkpointed before the next round
        starts; if saving fails, the error names the storage and the completed rounds stay
        in :attr:`history`.
        """
        if isinstance(min_clients, bool) or not isinstance(min_clients, int) or min_clients < 1:
            raise ConfigurationError(f"run: min_clients must be an int >= 1; got {min_clients!r}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ConfigurationError(f"run: rounds must be an int >= 0; got {rounds!r}")
        engine = self._engine
        sampler = engine.sampler
        if isinstance(sampler, FractionSampler):  # Poisson sampling (DP) has no minimum
            population = sampler.population.num_clients
            if min_clients > population:
                raise ConfigurationError(
                    f"run: min_clients={min_clients} exceeds the {population} registered clients"
                )
            changed = replace(sampler, min_clients=min_clients)
            if self._private and clients_per_round(
                population, changed.fraction, min_clients
            ) != clients_per_round(population, sampler.fraction, sampler.min_clients):
                raise ConfigurationError(
                    f"run: min_clients={min_clients} changes the clients per round that the "
                    "privacy accounting was planned for; keep min_clients at "
                    f"{sampler.min_clients} or set client_fraction at construction"
                )
            engine.sampler = changed
        plan = adversary_of(engine).plan
        out = []
        for _ in range(rounds):
            try:
                result = engine.run_round()
            except Exception:
                # An attack queued for this round that cannot run (say, mimic of an honest
                # client that does not exist) must not block the server: it is dropped.
                plan.drop_round(engine.round + 1)
                raise
            tensors, meta = engine.state()
            try:
                self._store.save(result.round, tensors, {**meta, "identity": self._identity})
            except OSError as exc:
                raise ConfigurationError(
                    f"VelocityServer.run: round {result.round} completed (see history) but its "
                    f"checkpoint could not be written to {self._store.uri!r}: {exc}"
                ) from exc
            out.append(json.loads(json.dumps(result.to_dict())))
        return out

    def simulate_attack(
        self,
        attack_type: str,
        *,
        intensity: float = 0.1,
        count: int = 1,
        fraction: float = 0.1,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue an attack for the next round (callable before or after :meth:`run`).

        ``attack_type`` is one of :data:`velocity.attacks.VALID_ATTACKS` (``model_poisoning``,
        ``sybil_nodes``, ``gaussian_noise``, ``label_flipping``) or any other attack of
        :data:`velocity.attacks.ATTACKS`. ``intensity`` sets the attack's strength parameter
        (boost, Sybil scale, noise σ, flip rate; see ``docs/robustness.md``); attacks without
        one take their settings in ``params``. ``count`` is the number of Sybil identities
        (``sybil_nodes`` only); ``fraction`` the share of the next round's participants that
        attack (at least one; ignored by ``sybil_nodes``, which adds identities). The round's
        ``attack_results`` report what happened. If the round fails because of a queued
        attack (e.g. ``mimic`` of a client index that does not exist), :meth:`run` raises and
        the attacks queued for that round are dropped.

        Raises
        ------
        ConfigurationError
            For an unknown attack or parameter (the message lists the valid ones), or a
            setting that does not apply to the attack.
        """
        from velocity.attacks import AttackSpec, SybilNodes, attack_class, parse_attack

        cls = attack_class(attack_type)
        if params is not None and not isinstance(params, Mapping):
            raise ConfigurationError(
                f"simulate_attack: params must be a mapping of {cls.name}'s parameters; "
                f"got {params!r}"
            )
        settings = dict(params or {})
        if "type" in settings:
            raise ConfigurationError(
                "simulate_attack: the attack is attack_type; params must not hold 'type'"
            )
        if not isinstance(intensity, int | float) or isinstance(intensity, bool):
            raise ConfigurationError(
                f"simulate_attack: intensity must be a number; got {intensity!r}"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigurationError(f"simulate_attack: count must be an int >= 1; got {count!r}")
        if cls.kind == "data" and self._quadratic is not None:
            raise ConfigurationError(
                f"simulate_attack: {cls.name} poisons training data; a layer_shapes server "
                "(synthetic quadratic objective) has none"
            )
        field = cls.intensity_field
        if field is not None:
            if field in settings:
                raise ConfigurationError(
                    f"simulate_attack: {cls.name}'s intensity is its {field!r}; give it once"
                )
            settings[field] = intensity
        elif intensity != 0.1:
            raise ConfigurationError(
                f"simulate_attack: {cls.name} has no intensity; set its parameters with params="
            )
        sybil = issubclass(cls, SybilNodes)
        if sybil:
            if "count" in settings:
                raise ConfigurationError(
                    "simulate_attack: give the number of sybil_nodes identities as count="
                )
            settings["count"] = count
        elif count != 1:
            raise ConfigurationError(
                f"simulate_attack: count is the number of sybil_nodes identities; {cls.name} "
                "attacks with a fraction of the round's participants"
            )
        attack = parse_attack({"type": cls.name, **settings})
        next_round = self._engine.round + 1
        spec = AttackSpec(
            attack,
            fraction=None if sybil else fraction,
            per_round=not sybil,
            start_round=next_round,
            end_round=next_round,
        )
        plan = adversary_of(self._engine).plan
        queued = sum(1 for s in plan.specs if s.start_round == s.end_round == next_round)
        plan.add(spec, key=f"queued-{next_round}-{queued}")

    @property
    def global_weights(self) -> dict[str, list[float]]:
        """Current global model weights after the last completed round."""
        return self._engine.spec.to_lists(self._engine.global_params)

    @property
    def history(self) -> list[dict[str, Any]]:
        """JSON-decoded list of all completed round summaries."""
        return [json.loads(json.dumps(r.to_dict())) for r in self._engine.results]

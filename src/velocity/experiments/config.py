"""The experiment configuration: one YAML file -> one frozen, validated :class:`ExperimentConfig`.

The schema is the FLP playground's (``docs/configuration.md`` lists every field, its default
and the values it accepts)::

    name, seed, dataset, data_dir, model_id, strategy
    training:     num_rounds, num_clients, client_fraction, min_clients, eval_every
    client:       batch_size, local_epochs | local_steps, lr, momentum, weight_decay, prox_mu,
                  optimizer, beta1, beta2, eps, keep_optimizer_state, device
    simulation:   partitioning, alpha, num_shards_per_client, dropout_rate,
                  straggler: {enabled, deadline_s, delay_distribution, delay_mean_s, delay_sigma}
    governance:   enabled, save_audit_log, save_replay_manifest, sign, signing_key
    metrics:      weight_divergence, cosine_similarity, client_eval, client_eval_samples
    privacy:      enabled, mode, epsilon, delta, max_grad_norm, noise_multiplier, clipping,
                  accountant, client_sampling, target_quantile, clip_lr, count_stddev,
                  distributed
    compression:  enabled, strategy, topk_ratio, quantization_bits, qsgd_levels,
                  error_feedback, error_feedback_memory_mb, downlink
    secure_aggregation: enabled, corrupt_fraction, dropout_rate, security_bits,
                  correctness_bits, fixed_point_bits, clip, dropout_after_masking
    async_fl:     enabled, delay_min, delay_max, delay_distribution, delay_mean, delay_shape,
                  delay_jitter, concurrency, buffer_size, staleness_threshold,
                  staleness_strategy, staleness_decay_factor, staleness_exponent, hinge_a,
                  hinge_b, mixing
    attacks:      [{type, <params>, fraction | clients, start_round, end_round}, ...]
    backend:      type (sequential | loopback | out_of_order | vectorized | auto | ray), seed,
                  spread_s, max_bytes, address, num_actors, resources_per_actor, inner,
                  num_threads
    output:       dir, save_plots, save_metrics, save_model, checkpoint_every
    tracking:     tensorboard, mlflow, dir   (optional; the ``tracking`` extra)

Every section is a pydantic model with ``extra="forbid"`` (a misspelt key is an error that
lists the accepted keys) and ``frozen=True``. Types are strict: an integer field does not take
``2.5``, ``"3"`` or ``true``; a float field takes an integer (YAML writes ``1`` for ``1.0``).
:func:`load_config` and :func:`parse_config` turn pydantic's errors into one
:class:`InvalidConfigError` naming **every** bad field by its dotted path::

    training.client_fraction: must be > 0 and <= 1; got 1.5

Examples
--------
>>> config = parse_config({"name": "demo", "dataset": "mnist", "training": {"num_rounds": 3}})
>>> config.training.num_rounds, config.client.lr, config.strategy_obj()
(3, 0.01, FedAvg(nonfinite='drop'))
>>> try:
...     parse_config({"name": "demo", "dataset": "mnist", "training": {"client_fraction": 1.5}})
... except InvalidConfigError as error:
...     print(error)
training.client_fraction: must be > 0 and <= 1; got 1.5
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic.fields import FieldInfo

from velocity.errors import ConfigurationError

if TYPE_CHECKING:
    from velocity.attacks import AttackPlan, AttackSpec
    from velocity.server.asynchronous import AsyncSettings
    from velocity.sim.sampling import DelayModel
    from velocity.strategies import Strategy

__all__ = [
    "DATASETS",
    "MODEL_IDS",
    "AsyncFLConfig",
    "BackendConfig",
    "ClientConfig",
    "CompressionConfig",
    "ExperimentConfig",
    "GovernanceConfig",
    "InvalidConfigError",
    "MetricsConfig",
    "OutputConfig",
    "PrivacyConfig",
    "SecureAggregationConfig",
    "SimulationConfig",
    "StragglerConfig",
    "TrackingConfig",
    "TrainingConfig",
    "load_config",
    "parse_config",
]

Dataset = Literal["mnist", "fashion_mnist", "cifar10", "shakespeare", "synthetic"]

DATASETS: Final[tuple[str, ...]] = typing.get_args(Dataset)
"""Every dataset name a configuration accepts."""


def _models_datasets() -> Mapping[str, tuple[str, ...]]:
    """``velocity.models.MODEL_DATASETS``: the datasets each model can be trained on (its
    input shape), one table for every entry point; imported when first needed."""
    from velocity.models import MODEL_DATASETS

    return MODEL_DATASETS


MODEL_IDS: Final[tuple[str, ...]] = (
    "mnist-cnn",
    "mnist-2nn",
    "logreg",
    "cifar-cnn",
    "char-lstm",
    "char-transformer",
)
"""Every model id a configuration accepts. Keep in sync with the model zoo."""


_TRAIN_SIZES: Final[dict[str, int]] = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}
"""Training examples of the datasets whose size is fixed (for config-time checks)."""

_NATURAL_DATASETS: Final[tuple[str, ...]] = ("shakespeare", "synthetic")
"""Datasets that come already split by client (``partitioning: natural``)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class InvalidConfigError(ConfigurationError):
    """A configuration has one or more problems; :attr:`problems` holds one line each.

    Each line starts with the dotted path of the field (``client.lr: must be > 0; got 0``).
    The message is the single problem, or a header line followed by one problem per line.
    """

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = f"{where}{self.problems[0]}"
        else:
            head = f"invalid configuration {source}" if source else "invalid configuration"
            message = "\n".join([f"{head} ({len(self.problems)} problems):", *self.problems])
        super().__init__(message)


# ---------------------------------------------------------------------- sections


class _Section(BaseModel):
    model_config = _STRICT


class TrainingConfig(_Section):
    """The federation: how many rounds, how many clients, and how many of them per round."""

    num_rounds: int = Field(default=20, ge=1)
    num_clients: int = Field(default=10, ge=1)
    client_fraction: float = Field(default=0.5, gt=0, le=1)
    min_clients: int = Field(default=1, ge=1)
    eval_every: int = Field(default=1, ge=1)

    @property
    def clients_per_round(self) -> int:
        """``min(num_clients, max(min_clients, 1, floor(client_fraction * num_clients)))``.

        McMahan et al.'s ``m = max(C·K, 1)`` with a floor of ``min_clients``; the same rule as
        :func:`velocity.sim.sampling.select_clients`.
        """
        wanted = math.floor(self.client_fraction * self.num_clients + 1e-9)
        return min(self.num_clients, max(self.min_clients, 1, wanted))


class ClientConfig(_Section):
    """Local training on each selected client (plain SGD unless momentum/weight decay are set).

    Exactly one of ``local_epochs`` / ``local_steps`` is in effect: ``local_steps`` (mini-batch
    steps per round) when set, else ``local_epochs`` (default 1). Setting both is an error.
    ``prox_mu`` is FedProx's proximal strength; with a ``FedProx`` strategy it is filled from
    the strategy's ``mu``. ``optimizer: adamw`` trains with AdamW (``beta1``, ``beta2``,
    ``eps``; ``weight_decay`` is then its decoupled decay, ``momentum`` must stay 0);
    ``keep_optimizer_state`` keeps each client's optimizer state between its rounds
    (DiLoCo's inner optimizer), see :class:`velocity.client.TrainConfig`. ``device`` is where
    the clients' model and data live (``cpu``, ``cuda``, ``cuda:<i>`` or ``auto``: the GPU
    when PyTorch sees one, else the CPU; a named GPU that is missing fails the run); the
    engine's model and update stack stay on the CPU.
    """

    batch_size: int = Field(default=32, ge=1)
    local_epochs: int | None = Field(default=None, ge=1)
    local_steps: int | None = Field(default=None, ge=1)
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    prox_mu: float = Field(default=0.0, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    keep_optimizer_state: bool = False
    device: str = "cpu"

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        from velocity.client._device import DEVICE_CHOICES, is_device_name

        if not is_device_name(device):
            raise ValueError(f"must be one of {DEVICE_CHOICES}; got {device!r}")
        return device

    @model_validator(mode="after")
    def _one_budget(self) -> ClientConfig:
        if self.local_epochs is not None and self.local_steps is not None:
            raise ValueError(
                f"set either local_epochs or local_steps, not both; got local_epochs="
                f"{self.local_epochs}, local_steps={self.local_steps}"
            )
        if self.local_epochs is None and self.local_steps is None:
            object.__setattr__(self, "local_epochs", 1)
        if self.optimizer == "adamw" and self.momentum:
            raise ValueError(
                "momentum is SGD's; AdamW keeps its own first moment (beta1), so set "
                f"momentum: 0 with optimizer: adamw; got momentum={self.momentum}"
            )
        return self


class StragglerConfig(_Section):
    """Simulated client compute time; clients slower than ``deadline_s`` miss the round.

    Each selected client's time is drawn from ``delay_distribution`` with mean
    ``delay_mean_s``: ``lognormal`` (``delay_sigma`` is the standard deviation of the log),
    ``exponential`` (``delay_sigma`` unused), ``uniform`` on ``[0, 2 * delay_mean_s]``
    (``delay_sigma`` unused). The time is virtual: the run does not sleep.
    """

    enabled: bool = False
    deadline_s: float = Field(default=10.0, gt=0)
    delay_distribution: Literal["lognormal", "exponential", "uniform"] = "lognormal"
    delay_mean_s: float = Field(default=2.0, gt=0)
    delay_sigma: float = Field(default=0.5, ge=0)


class SimulationConfig(_Section):
    """How the data is split across clients, and who fails to report."""

    partitioning: Literal["iid", "dirichlet", "shard", "natural"] = "iid"
    alpha: float = Field(default=0.5, gt=0)
    num_shards_per_client: int = Field(default=2, ge=1)
    dropout_rate: float = Field(default=0.0, ge=0, lt=1)
    straggler: StragglerConfig = Field(default_factory=StragglerConfig)


class PrivacyConfig(_Section):
    """Differential privacy (``docs/privacy.md``): DP-FedAvg, local DP or DP-SGD.

    ``epsilon``/``delta`` is the budget of the whole run; ``max_grad_norm`` the clipping
    bound (of each client's update in ``central`` and ``local`` mode, of each example's
    gradient in ``dp_sgd``). ``noise_multiplier`` is calibrated from the budget when absent;
    when given, a run whose planned rounds would exceed the budget refuses to start.
    ``accountant``: ``rdp`` (default) or ``pld``; ``client_sampling``: ``fixed`` (the
    round's ``clients_per_round`` drawn without replacement, replace-one adjacency) or
    ``poisson`` (each client with probability ``client_fraction``, add/remove-one).
    ``clipping: adaptive`` (central) tracks the ``target_quantile`` of the update norms
    (Andrew et al. 2021; ``clip_lr``, ``count_stddev``). ``distributed`` (central, with
    secure aggregation): the clients add the noise.
    """

    enabled: bool = False
    mode: Literal["central", "local", "dp_sgd"] = "central"
    epsilon: float = Field(default=1.0, gt=0)
    delta: float = Field(default=1.0e-5, gt=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    noise_multiplier: float | None = Field(default=None, gt=0)
    clipping: Literal["fixed", "adaptive"] = "fixed"
    accountant: Literal["rdp", "pld"] = "rdp"
    client_sampling: Literal["poisson", "fixed"] = "fixed"
    target_quantile: float = Field(default=0.5, ge=0, le=1)
    clip_lr: float = Field(default=0.2, gt=0)
    count_stddev: float | None = Field(default=None, gt=0)
    distributed: bool = False

    @model_validator(mode="after")
    def _modes(self) -> PrivacyConfig:
        if self.clipping == "adaptive" and self.mode != "central":
            raise ValueError(f"clipping: adaptive needs mode: central; got mode: {self.mode}")
        if self.distributed and self.mode != "central":
            raise ValueError(f"distributed: true needs mode: central; got mode: {self.mode}")
        return self


class SecureAggregationConfig(_Section):
    """Secure aggregation (SecAgg+, ``docs/privacy.md``): the server sees only the sum.

    The graph degree and threshold are derived from the threat model — ``corrupt_fraction``
    (clients colluding with the server), ``dropout_rate`` (clients that may drop during a
    round), ``security_bits`` and ``correctness_bits`` — never picked by hand.
    ``fixed_point_bits`` (default: the largest that cannot wrap) and ``clip`` (each
    coordinate is clipped to ``[-clip, clip]`` before encoding; default: privacy's
    ``max_grad_norm`` plus room for the noise, else 1.0) set the encoding.
    ``dropout_after_masking`` simulates clients that vanish after sending their masked
    input (recovered through their Shamir shares).
    """

    enabled: bool = False
    corrupt_fraction: float = Field(default=0.1, ge=0, lt=1)
    dropout_rate: float = Field(default=0.1, ge=0, lt=1)
    security_bits: int = Field(default=40, ge=1, le=256)
    correctness_bits: int = Field(default=20, ge=1, le=128)
    fixed_point_bits: int | None = Field(default=None, ge=0, le=30)
    clip: float | None = Field(default=None, gt=0)
    dropout_after_masking: float = Field(default=0.0, ge=0, lt=1)


class GovernanceConfig(_Section):
    """Governance mode: the hash-chained audit log, its signature and the replay manifest.

    With ``enabled`` the run writes ``governance/`` (``docs/governance.md``): one audit event
    per round (``save_audit_log``), ``replay_manifest.json`` (``save_replay_manifest``) and,
    with ``sign``, an Ed25519 signature of the chain's head made with the PKCS8 PEM private
    key at ``signing_key`` (``velocity audit keygen <path>`` makes one). Governance never
    changes the model: the same config with it on or off gives the same digests.
    """

    enabled: bool = False
    save_audit_log: bool = True
    save_replay_manifest: bool = True
    sign: bool = False
    signing_key: str | None = Field(default=None, min_length=1)


class MetricsConfig(_Section):
    """Research metrics (``docs/metrics.md``), each off by default and free when off.

    ``weight_divergence`` and ``cosine_similarity`` compare every aggregated update with the
    round's aggregate; ``client_eval`` evaluates the global model on every client's held-out
    split (``client_eval_samples`` test examples drawn to match the client's label
    distribution, so the training data and the model stay exactly as without it) and reports
    the accuracies' Gini coefficient and spread, on the rounds the global model is evaluated.
    """

    weight_divergence: bool = False
    cosine_similarity: bool = False
    client_eval: bool = False
    client_eval_samples: int = Field(default=200, ge=1, le=100_000)


class AsyncFLConfig(_Section):
    """Asynchronous FL on a virtual clock (FedAsync / FedBuff) with staleness-aware weights.

    ``concurrency`` clients train at once (default: ``training``'s clients per round); every
    ``buffer_size`` arrivals (default: half the clients in flight) the server aggregates one
    version, each update weighted by ``mixing · s(τ)`` where ``τ`` is its staleness in
    versions; updates more than ``staleness_threshold`` versions old are discarded.
    ``buffer_size: 1`` is FedAsync, ``> 1`` FedBuff. Client delays (virtual seconds) are
    uniform on ``[delay_min, delay_max]`` or, with ``delay_distribution: pareto``,
    heavy-tailed per client (:class:`velocity.sim.sampling.ClientSpeeds`: mean
    ``delay_mean``, tail index ``delay_shape``, per-task jitter ``delay_jitter``, plus
    ``delay_min``). ``training.num_rounds`` counts server versions.
    """

    enabled: bool = False
    delay_min: float = Field(default=0.0, ge=0)
    delay_max: float = Field(default=3.0, ge=0)
    delay_distribution: Literal["uniform", "pareto"] = "uniform"
    delay_mean: float = Field(default=1.0, gt=0)
    delay_shape: float = Field(default=1.5, gt=1)
    delay_jitter: float = Field(default=0.25, ge=0)
    concurrency: int | None = Field(default=None, ge=1)
    buffer_size: int | None = Field(default=None, ge=1)
    staleness_threshold: int | None = Field(default=3, ge=0)
    staleness_strategy: Literal[
        "uniform", "inverse_staleness", "exponential_decay", "polynomial", "hinge"
    ] = "uniform"
    staleness_decay_factor: float = Field(default=0.9, gt=0, le=1)
    staleness_exponent: float = Field(default=0.5, ge=0)
    hinge_a: float = Field(default=10.0, ge=0)
    hinge_b: int = Field(default=4, ge=0)
    mixing: float = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> AsyncFLConfig:
        if self.delay_max < self.delay_min:
            raise ValueError(
                f"delay_max must be >= delay_min; got delay_min={self.delay_min}, "
                f"delay_max={self.delay_max}"
            )
        return self

    def settings(self, clients_per_round: int) -> AsyncSettings:
        """The engine's :class:`velocity.server.asynchronous.AsyncSettings`."""
        from velocity.server.asynchronous import AsyncSettings, Staleness

        concurrency = self.concurrency or clients_per_round
        buffer = self.buffer_size or max(1, concurrency // 2)
        return AsyncSettings(
            concurrency=concurrency,
            buffer_size=buffer,
            staleness_threshold=self.staleness_threshold,
            staleness=Staleness(
                self.staleness_strategy,
                decay=self.staleness_decay_factor,
                a=self.hinge_a if self.staleness_strategy == "hinge" else self.staleness_exponent,
                b=self.hinge_b,
            ),
            mixing=self.mixing,
        )

    def delay_model(self) -> DelayModel:
        """The clients' delays."""
        from velocity.sim.sampling import ClientSpeeds, UniformDelay

        if self.delay_distribution == "pareto":
            return ClientSpeeds(
                mean_s=self.delay_mean,
                shape=self.delay_shape,
                jitter=self.delay_jitter,
                min_s=self.delay_min,
            )
        return UniformDelay(self.delay_min, self.delay_max)


class CompressionConfig(_Section):
    """Update compression (``docs/compression.md``): codecs with exact wire sizes.

    ``strategy``: ``topk`` (``topk_ratio`` of the coordinates, values + indices),
    ``quantization`` (``quantization_bits`` 16: float16, 8: int8 with a per-tensor scale) or
    ``qsgd`` (unbiased stochastic quantization to ``qsgd_levels`` levels). ``error_feedback``
    keeps each client's residual (what the codec dropped) and adds it to its next update,
    for at most ``error_feedback_memory_mb`` of residuals (least recently used clients
    forget theirs). ``downlink`` also compresses the model difference the server sends (the
    server keeps its own residual with ``error_feedback``; needs a plain server step).
    """

    enabled: bool = False
    strategy: Literal["topk", "quantization", "qsgd"] = "topk"
    topk_ratio: float = Field(default=0.1, gt=0, le=1)
    quantization_bits: Literal[8, 16] = 16
    qsgd_levels: int = Field(default=16, ge=1, le=32767)
    error_feedback: bool = False
    error_feedback_memory_mb: float = Field(default=1024.0, gt=0)
    downlink: bool = False


class BackendConfig(_Section):
    """Where the simulated clients run (``velocity backends`` lists the types).

    ``sequential`` (default): in this process, one after another; ``loopback``: every task
    and update through bytes, as over a network (``max_bytes`` bounds a frame);
    ``out_of_order``: tasks executed in a random order and delivered at random virtual
    times (``seed``, ``spread_s``); these three give the same model. ``vectorized``: dataset
    clients trained K at once with ``torch.func`` (the same updates up to float rounding);
    ``auto``: ``vectorized`` where the model and training allow it, else ``sequential``.
    ``ray``: dataset clients trained by ``num_actors`` Ray actors (the same model as
    ``sequential``), on a local Ray instance or the cluster at ``address`` (``host:port``
    of its GCS), each reserving ``resources_per_actor`` (``{GPU: 1}``: trained on CUDA),
    training with ``inner`` (``sequential``, ``vectorized`` or ``auto``) and ``num_threads``
    torch threads (default: the driver's); see :class:`velocity.sim.ray_clients.RayClients`.
    These five keys are refused with another ``type``.
    """

    type: Literal["sequential", "loopback", "out_of_order", "vectorized", "auto", "ray"] = (
        "sequential"
    )
    seed: int = Field(default=0, ge=0)
    spread_s: float = Field(default=1.0, gt=0)
    max_bytes: int | None = Field(default=None, ge=1024)
    address: str | None = Field(default=None, min_length=1)
    num_actors: int = Field(default=2, ge=1)
    resources_per_actor: dict[str, float] = Field(default_factory=lambda: {"CPU": 1.0})
    inner: Literal["sequential", "vectorized", "auto"] = "sequential"
    num_threads: int | None = Field(default=None, ge=1)

    @field_validator("resources_per_actor")
    @classmethod
    def _check_resources(cls, resources: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in resources.items() if not k or not v >= 0}
        if bad:
            raise ValueError(
                "must map resource names to amounts >= 0, e.g. {CPU: 1} or {GPU: 1}; got "
                f"{_show(bad)}"
            )
        return resources

    @model_validator(mode="after")
    def _ray_options(self) -> BackendConfig:
        if self.type == "ray":
            return self
        fields = type(self).model_fields
        used = [
            name
            for name in _RAY_OPTIONS
            if getattr(self, name) != fields[name].get_default(call_default_factory=True)
        ]
        if used:
            raise ValueError(
                f"{', '.join(used)}: only type: ray reads {'it' if len(used) == 1 else 'them'} "
                f"(its options: {', '.join(_RAY_OPTIONS)}); got type: {self.type}"
            )
        return self


_RAY_OPTIONS: Final = ("address", "num_actors", "resources_per_actor", "inner", "num_threads")
"""The ``backend`` keys only ``type: ray`` reads; :meth:`ExperimentConfig.resolved` writes
them only for it (so the hash of every other configuration is the one it had before)."""


class OutputConfig(_Section):
    """Where and what a run writes: ``<dir>/<name>/`` (see ``docs/configuration.md``)."""

    dir: str = Field(default="outputs", min_length=1)
    save_plots: bool = True
    save_metrics: bool = True
    save_model: bool = False
    checkpoint_every: int | None = Field(default=None, ge=1)


class TrackingConfig(_Section):
    """Experiment tracking: per-round metrics to TensorBoard and/or MLflow (both off).

    ``tensorboard: true`` writes event files to ``<dir>/tensorboard/<name>/``; ``mlflow:
    true`` logs a run (the resolved configuration as params, the metrics per round) to the
    local MLflow file store ``<dir>/mlruns`` under the experiment ``<name>``. ``dir`` defaults
    to ``<run dir>/tracking``. Each needs its package (``pip install 'velocityfl[tracking]'``);
    see :mod:`velocity.experiments.tracking`. Tracking does not change the run's rounds.
    """

    tensorboard: bool = False
    mlflow: bool = False
    dir: str | None = Field(default=None, min_length=1)


class ParameterServerConfig(_Section):
    """ByzPy's parameter server instead of federated rounds (``docs/byzpy.md``).

    With ``enabled: true`` the ``training.num_clients`` clients are nodes: the last
    ``byzantine`` of them run ``attack`` (an attack as in ``attacks:``; required iff
    ``byzantine``), the others hold their partition and compute one minibatch gradient
    (``client.batch_size``, worker momentum ``client.momentum``) per round at the global
    parameters; ``strategy`` (pre-aggregators and an aggregator, no server optimizer)
    combines the gradients and the server steps ``x ← x − client.lr · agg``.
    ``update_byzantines`` refreshes the Byzantine nodes' own parameters every round.
    """

    enabled: bool = False
    byzantine: int = Field(default=0, ge=0)
    attack: str | dict[str, Any] | None = None
    update_byzantines: bool = False


class P2PConfig(_Section):
    """Decentralized (peer-to-peer) training instead of a server (``docs/p2p.md``).

    With ``enabled: true`` the ``training.num_clients`` clients are the nodes of
    ``topology`` (``ring`` | ``complete`` | ``random_regular`` | ``erdos_renyi`` | ``edges``,
    its settings in ``topology_params``: ``k``, ``p``, ``seed``, ``edges``...); every round
    each node takes ``client.lr`` SGD steps on ``client.batch_size`` of its own examples
    (``simulation.partitioning``) and mixes what its in-neighbours send with ``mixing``
    (``gossip`` | ``clipped_gossip`` | ``nna`` | a kernel aggregator name, settings in
    ``mixing_params``). ``byzantine`` nodes (a count drawn from the seed, or their ids) send
    what ``attack`` crafts (an update attack, as in ``attacks:``) from the honest half-steps
    (``attack_space: model``) or updates (``update``), seeing every honest vector
    (``attack_knowledge: omniscient``) or their in-neighbours' (``neighbours``).
    ``train_samples``/``test_samples`` keep a seeded subset of each split.
    """

    enabled: bool = False
    topology: Literal["ring", "complete", "random_regular", "erdos_renyi", "edges"] = "ring"
    topology_params: dict[str, Any] = Field(default_factory=dict)
    byzantine: int | list[int] = 0
    attack: str | dict[str, Any] | None = None
    attack_space: Literal["model", "update"] = "model"
    attack_knowledge: Literal["omniscient", "neighbours"] = "omniscient"
    mixing: str = "gossip"
    mixing_params: dict[str, Any] = Field(default_factory=dict)
    train_samples: int | None = Field(default=None, ge=1)
    test_samples: int | None = Field(default=None, ge=1)


# ---------------------------------------------------------------------- the experiment

StrategySpec = str | dict[str, Any] | list[Any]

_FEDERATED_SECTIONS: tuple[str, ...] = (
    "privacy",
    "secure_aggregation",
    "compression",
    "async_fl",
    "governance",
    "tracking",
    "simulation.straggler",
    "metrics",
)
"""Sections :meth:`ExperimentConfig._federated_settings` reports as on or off."""


class ExperimentConfig(_Section):
    """One experiment. Build it with :func:`load_config` or :func:`parse_config`.

    ``strategy`` keeps the spec as written (a name, a dict with ``type``, or a list of
    stages); :meth:`strategy_obj` builds the strategy and :meth:`resolved` writes it out with
    every parameter.
    """

    name: str
    seed: int = Field(default=42, ge=0, lt=2**63)
    dataset: Dataset
    data_dir: str | None = None
    model_id: str = "mnist-cnn"
    strategy: StrategySpec = "FedAvg"
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    async_fl: AsyncFLConfig = Field(default_factory=AsyncFLConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    secure_aggregation: SecureAggregationConfig = Field(default_factory=SecureAggregationConfig)
    attacks: list[Any] = Field(default_factory=list)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    p2p: P2PConfig = Field(default_factory=P2PConfig)
    parameter_server: ParameterServerConfig = Field(default_factory=ParameterServerConfig)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(
                "must be 1-128 characters from letters, digits, '.', '_' and '-', starting "
                f"with a letter or digit (it names the output directory); got {name!r}"
            )
        return name

    @field_validator("model_id")
    @classmethod
    def _check_model(cls, model_id: str) -> str:
        if model_id not in MODEL_IDS:
            raise ValueError(
                f"unknown model {model_id!r}; known models: {', '.join(MODEL_IDS)}"
                + _did_you_mean(model_id, MODEL_IDS)
            )
        return model_id

    @field_validator("strategy", mode="plain")
    @classmethod
    def _check_strategy(cls, spec: object) -> StrategySpec:
        from velocity.strategies import parse_strategy

        if not isinstance(spec, str | dict | list):
            raise ValueError(
                "must be a strategy name, a mapping with a 'type' key, or a list of stages; "
                f"got {_show(spec)}"
            )
        parse_strategy(spec)  # raises ConfigurationError (a ValueError) with the reason
        return copy.deepcopy(spec)

    @field_validator("attacks")
    @classmethod
    def _check_attacks(cls, attacks: list[Any]) -> list[Any]:
        from velocity.attacks import AttackSpec

        problems = []
        for i, item in enumerate(attacks):
            if not isinstance(item, dict):
                problems.append(
                    f"[{i}] must be a mapping like {{type: little, fraction: 0.2}}; "
                    f"got {_show(item)}"
                )
                continue
            try:
                AttackSpec.from_dict(item)
            except ValueError as error:
                problems.append(f"[{i}] {error}")
        if problems:
            raise ValueError("; ".join(problems))
        return copy.deepcopy(attacks)

    def _check_privacy(self) -> list[str]:
        """Privacy, compression and secure aggregation against the strategy and each other."""
        problems: list[str] = []
        privacy, secure, compression = self.privacy, self.secure_aggregation, self.compression
        sum_only = (privacy.enabled and privacy.mode == "central") or secure.enabled
        if sum_only:
            from velocity.strategies import mean_based

            strategy = self.strategy_obj()
            if not mean_based(strategy):
                who = "secure_aggregation" if secure.enabled else "privacy.mode: central"
                problems.append(
                    f"strategy: {who} gives the server only a (noised) sum of the updates, so "
                    f"the rule must be a plain mean (FedAvg, FedAvgM, FedAdam, FedAdagrad, "
                    f"FedYogi, FedProx, no pre-aggregators); got {strategy!r}"
                )
        if privacy.enabled and privacy.distributed and not secure.enabled:
            problems.append(
                "privacy.distributed: true needs secure_aggregation.enabled: true (without it "
                "the server sees each client's noise share)"
            )
        if secure.enabled and privacy.enabled and privacy.clipping == "adaptive":
            problems.append(
                "privacy.clipping: adaptive needs the update norms, which secure aggregation "
                "hides; use clipping: fixed"
            )
        if secure.enabled and privacy.enabled and privacy.mode != "central":
            problems.append(
                f"secure_aggregation with privacy.mode: {privacy.mode}: use mode: central "
                "(secure aggregation replaces local noise by a noised sum)"
            )
        if compression.enabled and compression.downlink:
            optimizer = self.strategy_obj().server_optimizer
            if optimizer is not None:
                problems.append(
                    "compression.downlink: clients rebuild the model from the decoded "
                    "difference, which needs a plain server step; the strategy has server "
                    f"optimizer {type(optimizer).__name__}"
                )
        if secure.enabled and compression.enabled:
            problems.append(
                "compression: codecs and secure aggregation do not compose here (masked field "
                "elements do not compress); disable one of them"
            )
        if secure.enabled and self.training.clients_per_round < 3:
            problems.append(
                "secure_aggregation: needs at least 3 clients per round; got "
                f"{self.training.clients_per_round}"
            )
        elif secure.enabled:
            from velocity.secagg import ThreatModel, derive_parameters

            try:
                derive_parameters(
                    self.training.clients_per_round,
                    ThreatModel(
                        secure.corrupt_fraction,
                        secure.dropout_rate,
                        secure.security_bits,
                        secure.correctness_bits,
                    ),
                )
            except ConfigurationError as error:
                problems.append(f"secure_aggregation: {error}")
        if secure.enabled:
            from velocity.attacks import DataAttack

            crafting = [
                spec.attack.name
                for spec in self.attack_specs()
                if not isinstance(spec.attack, DataAttack)
            ]
            if crafting:
                problems.append(
                    "attacks: secure aggregation hides the rows that crafted-update attacks "
                    f"({', '.join(crafting)}) read and replace; use data attacks only"
                )
        return problems

    def _check_async(self) -> list[str]:
        """Asynchronous FL against the population and what it does not combine with."""
        a = self.async_fl
        if not a.enabled:
            return []
        problems: list[str] = []
        n = self.training.num_clients
        concurrency = a.concurrency or self.training.clients_per_round
        if concurrency > n:
            problems.append(
                f"async_fl.concurrency: must be <= training.num_clients ({n}); got {concurrency}"
            )
        if a.buffer_size is not None and a.buffer_size > n:
            problems.append(
                f"async_fl.buffer_size: must be <= training.num_clients ({n}), one update per "
                f"client per version; got {a.buffer_size}"
            )
        if self.simulation.straggler.enabled:
            problems.append(
                "async_fl: simulation.straggler sets a synchronous round deadline; disable it "
                "and give the client delays in async_fl (delay_distribution, delay_*)"
            )
        if self.attacks:
            problems.append(
                "async_fl: simulated attacks are resolved per synchronous round and are not "
                "supported with asynchronous FL yet; remove attacks or disable async_fl"
            )
        if self.secure_aggregation.enabled:
            problems.append(
                "async_fl: secure aggregation needs a synchronous cohort; disable "
                "secure_aggregation or async_fl"
            )
        if self.privacy.enabled and self.privacy.mode == "central":
            problems.append(
                "async_fl: central DP's accounting assumes Poisson or fixed-size client "
                "sampling per round, which asynchronous dispatch is not; use privacy.mode: "
                "local or dp_sgd"
            )
        if self.backend.type != "sequential":
            problems.append(
                f"async_fl: runs on the sequential backend; got backend.type: {self.backend.type}"
            )
        return problems

    def _federated_settings(self) -> dict[str, bool]:
        """Which settings of federated rounds this config uses: each section of
        :data:`_FEDERATED_SECTIONS` that is on, and each value that differs from its default
        (compared with the defaults, not with ``model_fields_set``: a resolved config, as
        ``with_updates`` rebuilds it, sets every field). The p2p and parameter_server checks
        refuse the ones that do not apply to them."""
        from velocity.strategies import parse_strategy

        metrics = self.metrics
        on = {
            "privacy": self.privacy.enabled,
            "secure_aggregation": self.secure_aggregation.enabled,
            "compression": self.compression.enabled,
            "async_fl": self.async_fl.enabled,
            "governance": self.governance.enabled,
            "tracking": self.tracking.tensorboard or self.tracking.mlflow,
            "simulation.straggler": self.simulation.straggler.enabled,
            "metrics": any(
                (metrics.weight_divergence, metrics.cosine_similarity, metrics.client_eval)
            ),
        }
        training_default, client_default = TrainingConfig(), ClientConfig()
        on.update(
            {
                "strategy": self.strategy_obj() != parse_strategy("FedAvg"),
                "training.client_fraction": self.training.client_fraction
                != training_default.client_fraction,
                "training.min_clients": self.training.min_clients != training_default.min_clients,
                "simulation.dropout_rate": self.simulation.dropout_rate > 0,
                "backend": self.backend.type != "sequential",
                "output.checkpoint_every": self.output.checkpoint_every is not None,
            }
        )
        for name in ("local_epochs", "local_steps", "momentum", "weight_decay", "prox_mu",
                     "optimizer", "keep_optimizer_state", "device"):  # fmt: skip
            on[f"client.{name}"] = getattr(self.client, name) != getattr(client_default, name)
        return on

    def _check_parameter_server(self) -> list[str]:
        """The ``parameter_server`` section: nodes, attack, strategy, and what a parameter
        server does not do (refused, not ignored)."""
        section = self.parameter_server
        if not section.enabled:
            return []
        problems: list[str] = []
        n = self.training.num_clients
        b = section.byzantine
        if self.p2p.enabled:
            problems.append("parameter_server: p2p is enabled too; choose one of them")
        if b >= n:
            problems.append(
                f"parameter_server.byzantine: must be < training.num_clients ({n}), leaving an "
                f"honest node; got {b}"
            )
        if b and section.attack is None:
            problems.append("parameter_server.attack: Byzantine nodes need an attack")
        if not b and section.attack is not None:
            problems.append(
                "parameter_server.attack: an attack needs parameter_server.byzantine > 0"
            )
        if section.attack is not None:
            from velocity.attacks import SybilNodes, parse_attack

            try:
                attack = parse_attack(section.attack)
            except ValueError as error:
                problems.append(f"parameter_server.attack: {error}")
            else:
                if isinstance(attack, SybilNodes):
                    problems.append(
                        "parameter_server.attack: sybil_nodes adds identities, which a fixed "
                        "node set does not have; use 'empire' on the Byzantine nodes"
                    )
        strategy = self.strategy_obj()
        if strategy.server_optimizer is not None:
            problems.append(
                f"strategy: the parameter server steps x ← x − client.lr · agg itself; "
                f"{type(strategy.server_optimizer).__name__} cannot apply (use the aggregator "
                "and pre-aggregators only)"
            )
        on = self._federated_settings()
        for name in _FEDERATED_SECTIONS:
            if name not in ("governance", "tracking") and on[name]:
                problems.append(f"parameter_server: {name} applies to federated rounds; disable it")
        if self.attacks:
            problems.append(
                "parameter_server: use parameter_server.byzantine and .attack instead of the "
                "attacks list"
            )
        # the server's own step and the nodes' minibatch settings are the PS's; momentum is
        # the nodes' worker momentum, governance and checkpoints work as in federated runs
        kept = ("strategy", "output.checkpoint_every", "client.momentum")
        explicit = {k: v for k, v in on.items() if k not in _FEDERATED_SECTIONS + kept}
        for name, set_ in explicit.items():
            if set_:
                problems.append(
                    f"parameter_server: {name} does not apply (every node sends one minibatch "
                    "gradient per round; client.lr, client.batch_size and client.momentum are "
                    "the settings); remove it"
                )
        return problems

    def _check_p2p(self) -> list[str]:
        """The ``p2p`` section: its topology, attack and mixing rule, and the sections that
        belong to server-based runs (refused, not ignored)."""
        p2p = self.p2p
        if not p2p.enabled:
            return []
        from velocity.errors import ConfigurationError as _Refused
        from velocity.p2p import MAX_NODES, DecentralizedSGD, topology_from_config

        problems: list[str] = []
        n = self.training.num_clients
        if n > MAX_NODES:
            return [f"p2p: at most {MAX_NODES} nodes (training.num_clients); got {n}"]
        topology = None
        try:
            topology = topology_from_config(p2p.topology, n, **p2p.topology_params)
        except (_Refused, TypeError, ValueError) as error:
            problems.append(f"p2p.topology: {error}")
        if isinstance(p2p.byzantine, int):
            count = p2p.byzantine
            if not 0 <= count < n:
                problems.append(
                    f"p2p.byzantine: must be >= 0 and < training.num_clients ({n}); got {count}"
                )
        else:
            bad = [b for b in p2p.byzantine if not 0 <= b < n]
            count = len(set(p2p.byzantine))
            if bad or count >= n:
                problems.append(
                    f"p2p.byzantine: node ids must be in 0..{n - 1} and leave an honest node; "
                    f"got {p2p.byzantine}"
                )
        if count and p2p.attack is None:
            problems.append("p2p.attack: Byzantine nodes need an attack (e.g. {type: little})")
        if not count and p2p.attack is not None:
            problems.append("p2p.attack: an attack needs p2p.byzantine > 0")
        if not problems and topology is not None:
            # the constructor's checks and its dry run (mixing and crafting once), no data
            try:
                DecentralizedSGD.check_setup(
                    topology,
                    byzantine=p2p.byzantine,
                    attack=p2p.attack,
                    attack_space=p2p.attack_space,
                    attack_knowledge=p2p.attack_knowledge,
                    mixing=p2p.mixing,
                    mixing_params=p2p.mixing_params,
                    seed=self.seed,
                )
            except (_Refused, TypeError, ValueError) as error:
                # its messages name DecentralizedSGD's settings, which are this section's
                problems.append(str(error).replace("DecentralizedSGD", "p2p"))
        if self.simulation.partitioning == "natural":
            problems.append("p2p: simulation.partitioning must be iid, dirichlet or shard")
        on = self._federated_settings()
        for section in _FEDERATED_SECTIONS:
            if on[section]:
                problems.append(
                    f"p2p: {section} applies to server-based runs; disable it for a "
                    "peer-to-peer run"
                )
        if self.attacks:
            problems.append("p2p: use p2p.byzantine and p2p.attack instead of the attacks list")
        explicit = {k: v for k, v in on.items() if k not in _FEDERATED_SECTIONS}
        for name, set_ in explicit.items():
            if set_:
                problems.append(
                    f"p2p: {name} does not apply to peer-to-peer runs (every node takes one "
                    "SGD step with client.lr and client.batch_size per round, then mixes); "
                    "remove it"
                )
        return problems

    @model_validator(mode="after")
    def _check_across_fields(self) -> ExperimentConfig:
        problems: list[str] = []
        allowed = _models_datasets()[self.model_id]
        if self.dataset not in allowed:
            problems.append(
                f"model_id: {self.model_id!r} cannot be trained on dataset {self.dataset!r}; "
                f"it takes {', '.join(repr(d) for d in allowed)}"
            )
        training = self.training
        if training.min_clients > training.num_clients:
            problems.append(
                f"training.min_clients: must be <= training.num_clients "
                f"({training.num_clients}); got {training.min_clients}"
            )
        if self.simulation.partitioning == "natural" and self.dataset not in _NATURAL_DATASETS:
            problems.append(
                "simulation.partitioning: 'natural' needs a dataset that is already split by "
                f"client ({', '.join(_NATURAL_DATASETS)}); got dataset {self.dataset!r}"
            )
        from velocity.sim.sampling import MAX_CLIENTS, MAX_CLIENTS_PER_ROUND

        if training.num_clients > MAX_CLIENTS:
            problems.append(
                f"training.num_clients: must be <= {MAX_CLIENTS}; got {training.num_clients}"
            )
        elif training.clients_per_round > MAX_CLIENTS_PER_ROUND:
            problems.append(
                f"training.client_fraction: {training.clients_per_round} clients per round "
                f"exceed the limit of {MAX_CLIENTS_PER_ROUND}; lower client_fraction"
            )
        size = _TRAIN_SIZES.get(self.dataset)
        if size is not None and training.num_clients > size:
            problems.append(
                f"training.num_clients: {training.num_clients} clients cannot each hold an "
                f"example of {self.dataset}'s {size} training examples"
            )
        for i, item in enumerate(self.attacks):
            start = item.get("start_round", 1) if isinstance(item, dict) else 1
            if isinstance(start, int) and start > training.num_rounds:
                problems.append(
                    f"attacks[{i}].start_round: {start} is after the last round "
                    f"({training.num_rounds}); the attack would never run"
                )
        try:
            plan = self.attack_plan()
        except ValueError as error:
            problems.append(f"attacks: {error}")
        else:
            if not problems:
                problems.extend(self._dry_run(plan))
        problems.extend(self._check_privacy())
        problems.extend(self._check_async())
        problems.extend(self._check_p2p())
        problems.extend(self._check_parameter_server())
        governance = self.governance
        if governance.sign and governance.signing_key is None:
            problems.append(
                "governance.sign: true needs governance.signing_key, the path of an Ed25519 "
                "private key (make one with `velocity audit keygen <path>`)"
            )
        if governance.sign and not governance.save_audit_log:
            problems.append(
                "governance.sign: the signature covers the audit log; set "
                "governance.save_audit_log: true"
            )
        mu = _fedprox_mu(self.strategy_obj())
        if mu is not None:
            explicit = "prox_mu" in self.client.model_fields_set
            if explicit and self.client.prox_mu != mu:
                problems.append(
                    f"client.prox_mu: {self.client.prox_mu} disagrees with the strategy's "
                    f"FedProx mu={mu}; FedProx's mu sets client.prox_mu, so set only one"
                )
            elif not explicit:
                client = self.client.model_copy(update={"prox_mu": float(mu)})
                object.__setattr__(self, "client", client)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _dry_run(self, plan: AttackPlan) -> list[str]:
        """Rounds that cannot run whatever the data: the first round and every round where
        an attack starts or ends, with every selected client answering (no dropout), run on
        zero updates through the simulated adversary and the strategy. A rule's own limit
        (``Krum needs n > 2f + 2``) or an attack that cannot be crafted (no honest client
        left for ``little``) is reported here, not rounds into a run."""
        import torch

        from velocity.sim.adversary import SimulatedAdversary
        from velocity.sim.population import UniformPopulation
        from velocity.sim.sampling import select_clients
        from velocity.strategies import RoundBatch, resolve_lipschitz
        from velocity.types import ParamSpec, StageContext

        training = self.training
        n = training.num_clients
        population = UniformPopulation(n, samples=1)
        adversary = SimulatedAdversary(plan, population)
        strategy = resolve_lipschitz(self.strategy_obj(), self.client.lr)
        needs_losses = strategy.aggregator.needs_losses
        spec = ParamSpec.from_sizes({"w": 2})
        rounds = {1}
        for attack_spec in plan.specs:
            rounds.add(attack_spec.start_round)
            if attack_spec.end_round is not None:
                rounds.add(attack_spec.end_round)
        problems: list[str] = []
        for round_ in sorted(r for r in rounds if r <= training.num_rounds):
            picked = select_clients(
                n, training.client_fraction, training.min_clients, seed=self.seed, round_=round_
            ).tolist()
            ctx = StageContext(self.seed, round_, round_ - 1, spec, torch.zeros(2))
            batch = RoundBatch(
                rows=torch.zeros(len(picked), 2),
                num_samples=[1] * len(picked),
                client_ids=[population.client_id(int(c)) for c in picked],
                losses=[1.0] * len(picked) if needs_losses else None,
            )
            try:
                planned = adversary.prepare(round_, [int(c) for c in picked])
                if planned is not None:
                    batch = adversary.craft(batch, planned, ctx)
                losses = None if batch.losses is None else torch.tensor(batch.losses)
                strategy.aggregate(
                    batch.rows, batch.weights, generator=ctx.generator("x"), losses=losses
                )
            except ValueError as error:
                problems.append(
                    f"round {round_} cannot run even with every selected client answering "
                    f"({len(batch.client_ids)} rows): {error}"
                )
        return problems

    # ------------------------------------------------------------------ derived

    def strategy_obj(self) -> Strategy:
        """The strategy object (``velocity.strategies.Strategy``) built from :attr:`strategy`."""
        from velocity.strategies import parse_strategy

        return parse_strategy(self.strategy)

    def attack_specs(self) -> list[AttackSpec]:
        """The :class:`velocity.attacks.AttackSpec` objects built from :attr:`attacks`."""
        from velocity.attacks import AttackSpec

        return [AttackSpec.from_dict(item) for item in self.attacks]

    def attack_plan(self) -> AttackPlan:
        """The :class:`velocity.attacks.AttackPlan` of this run (adversaries resolved)."""
        from velocity.attacks import AttackPlan
        from velocity.sim.population import client_index

        return AttackPlan(
            num_clients=self.training.num_clients,
            seed=self.seed,
            index_of=client_index,
            specs=self.attack_specs(),
        )

    def resolved(self) -> dict[str, Any]:
        """Every field with defaults filled, as plain JSON/YAML types.

        The strategy appears in its dict form with every parameter
        (``{"type": "FedAvg", "nonfinite": "drop"}``). Feeding the result back to
        :func:`parse_config` gives an equal configuration.
        """
        from velocity.strategies import to_dict

        data = self.model_dump(mode="json", exclude={"strategy", "attacks"})
        data["strategy"] = _plain(to_dict(self.strategy_obj()))
        data["attacks"] = [_plain(spec.to_dict()) for spec in self.attack_specs()]
        # A federated run's resolved form (and so its hash) does not change with the p2p and
        # parameter_server sections' arrival: each is written only when it is on.
        optional = {"p2p": self.p2p.enabled, "parameter_server": self.parameter_server.enabled}
        keys = [k for k in type(self).model_fields if optional.get(k, True)]
        ordered = {key: data[key] for key in keys}
        if self.client.device == "cpu":  # the default, so no existing hash changes
            ordered["client"] = {k: v for k, v in ordered["client"].items() if k != "device"}
        if self.backend.type != "ray":  # the ray options likewise, for every other backend
            ordered["backend"] = {
                k: v for k, v in ordered["backend"].items() if k not in _RAY_OPTIONS
            }
        result: dict[str, Any] = _plain(ordered)
        return result

    def config_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`resolved` (sorted keys, no spaces)."""
        text = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def trajectory_hash(self) -> str:
        """SHA-256 of what determines the model after each round: :meth:`resolved` without the
        ``output`` and ``tracking`` sections and ``training.num_rounds`` (where a run stops,
        what it writes and where it logs do not change its rounds). Checkpoints carry it, so
        resume can continue a run for more rounds but never load another run's state."""
        data = self.resolved()
        data.pop("output", None)
        data.pop("tracking", None)
        data["training"].pop("num_rounds", None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def run_dir(self) -> Path:
        """The run's output directory: ``<output.dir>/<name>`` (``~`` expanded)."""
        return Path(self.output.dir).expanduser() / self.name

    def with_updates(self, updates: Mapping[str, Any]) -> ExperimentConfig:
        """A new, re-validated configuration with dotted-path fields replaced.

        ``config.with_updates({"training.num_rounds": 5, "seed": 1})``. Replacing the
        strategy re-derives ``client.prox_mu``; replacing ``client.local_steps`` (or
        ``local_epochs``) clears the other. Raises :class:`InvalidConfigError`.
        """
        data = self.resolved()
        if "strategy" in updates and "client.prox_mu" not in updates:
            del data["client"]["prox_mu"]
        for budget, other in (("local_steps", "local_epochs"), ("local_epochs", "local_steps")):
            if f"client.{budget}" in updates and f"client.{other}" not in updates:
                data["client"][other] = None
        for dotted, value in updates.items():
            *parents, leaf = dotted.split(".")
            target = data
            for part in parents:
                child = target.get(part)
                if not isinstance(child, dict):
                    raise InvalidConfigError([f"{dotted}: no such configuration field"])
                target = child
            target[leaf] = value
        return parse_config(data, source="overrides")


def _fedprox_mu(strategy: Any) -> float | None:
    from velocity.strategies import FedProx, Pipeline

    aggregator = strategy.aggregator if isinstance(strategy, Pipeline) else strategy
    return float(aggregator.mu) if isinstance(aggregator, FedProx) else None


def _plain(value: Any) -> Any:
    """Nested mappings/sequences -> dicts/lists of JSON scalars."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# ---------------------------------------------------------------------- loading


def parse_config(data: object, *, source: str | None = None) -> ExperimentConfig:
    """Validate a mapping (a parsed YAML document) into an :class:`ExperimentConfig`.

    Raises
    ------
    InvalidConfigError
        One line per problem, each starting with the field's dotted path.
    """
    if not isinstance(data, Mapping):
        raise InvalidConfigError(
            [f"the configuration must be a mapping of top-level keys; got {_show(data)}"],
            source=source,
        )
    try:
        return ExperimentConfig.model_validate(dict(data))
    except PydanticValidationError as error:
        raise InvalidConfigError(_problems(error), source=source) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML file safely and validate it (see :func:`parse_config`).

    The loader is PyYAML's safe loader with two fixes for configuration files: a key given
    twice in one mapping is an error (plain YAML keeps the last silently), and ``1e-5``
    reads as a float (YAML 1.1 reads it as text unless written ``1.0e-5``). Hostile input is
    bounded: at most :data:`MAX_CONFIG_BYTES` are read (``/dev/zero`` is refused, not
    slurped), a document whose aliases expand beyond :data:`MAX_YAML_NODES` nodes is refused
    before it is built, and error messages show values shortened.

    Raises
    ------
    InvalidConfigError
        The file is missing or unreadable, is not valid YAML, or fails validation.
    """
    import yaml

    source = str(path)
    try:
        with Path(path).open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise InvalidConfigError([f"configuration file not found: {source}"]) from None
    except OSError as error:
        raise InvalidConfigError(
            [f"cannot read configuration file: {error}"], source=source
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidConfigError(
            [f"the file is larger than {MAX_CONFIG_BYTES} bytes; a configuration is small text"],
            source=source,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidConfigError(
            [f"not UTF-8 text (byte {error.start}): is this a YAML file?"], source=source
        ) from None
    try:
        loader = _loader()(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_expansion(node)
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InvalidConfigError([f"invalid YAML{where}: {problem}"], source=source) from None
    if data is None:
        raise InvalidConfigError(["the file is empty"], source=source)
    return parse_config(data, source=source)


MAX_CONFIG_BYTES: Final = 1 << 20
"""A configuration file larger than 1 MiB is refused unread."""

MAX_YAML_NODES: Final = 100_000
"""YAML nodes a document may expand to once its aliases are followed ("billion laughs")."""

_LOADER: Any = None


def _check_expansion(root: Any) -> None:
    """Refuse a YAML node graph whose alias-expanded size exceeds :data:`MAX_YAML_NODES`
    (counted without expanding it: each shared node's size is computed once)."""
    import yaml

    sizes: dict[int, int] = {}
    order: list[Any] = []
    stack: list[Any] = [root]
    seen: set[int] = set()
    while stack:  # post-order without recursion
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    for node in reversed(order):
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        sizes[id(node)] = total
        if total > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the document expands to more than {MAX_YAML_NODES} nodes through its "
                "aliases (&anchor / *alias); refusing to build it",
                node.start_mark,
            )


def _loader() -> Any:
    """A ``yaml.SafeLoader`` subclass: duplicate keys fail, ``1e-5`` is a float."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml

    loader: Any = type("ConfigLoader", (yaml.SafeLoader,), {})

    def construct_mapping(self: Any, node: Any) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return self.construct_mapping(node, deep=True)

    loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    _LOADER = loader
    return loader


# ---------------------------------------------------------------------- error messages


def _problems(error: PydanticValidationError) -> list[str]:
    """One ``dotted.path: message`` line per pydantic error, in the order pydantic found them."""
    lines: list[str] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        path = ".".join(str(part) for part in loc)
        message = _message(item, loc)
        if not path:
            lines.extend(message.splitlines())  # cross-field problems carry their own paths
        else:
            lines.append(f"{path}: {message}")
    return lines


def _message(item: Any, loc: tuple[Any, ...]) -> str:
    kind: str = item["type"]
    value = item.get("input")
    got = f"; got {_show(value)}"
    ctx: Mapping[str, Any] = item.get("ctx") or {}
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        return f"must be {_bounds(_field(loc), ctx)}{got}"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"must be an integer{got}"
    if kind in {"float_type", "float_parsing"}:
        return f"must be a number{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"must be true or false{got}"
    if kind == "string_type":
        return f"must be a string{got}"
    if kind == "string_too_short":
        return f"must not be empty{got}"
    if kind == "list_type":
        return f"must be a list{got}"
    if kind == "literal_error":
        return f"must be one of {_choices(_field(loc), ctx)}{got}"
    if kind == "missing":
        return "required field is missing"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        keys = _keys_of(loc)
        accepted = f" with the keys {', '.join(keys)}" if keys else ""
        return f"must be a mapping{accepted}{got}"
    if kind == "extra_forbidden":
        parent = loc[:-1]
        keys = _keys_of(parent)
        section = ".".join(str(part) for part in parent) or "the top level"
        hint = _did_you_mean(str(loc[-1]), keys)
        return f"unknown key; accepted keys of {section}: {', '.join(keys)}{hint}"
    if kind == "value_error":
        return str(ctx.get("error", item["msg"]))
    return f"{item['msg']}{got}"


def _field(loc: tuple[Any, ...]) -> FieldInfo | None:
    model: type[BaseModel] | None = ExperimentConfig
    info: FieldInfo | None = None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = _model_of(info)
    return info


def _model_of(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _keys_of(loc: tuple[Any, ...]) -> list[str]:
    """The accepted keys of the section at ``loc`` (the top level for ``()``)."""
    model: type[BaseModel] | None = ExperimentConfig
    if loc:
        info = _field(loc)
        model = _model_of(info) if info is not None else None
    return list(model.model_fields) if model is not None else []


def _bounds(info: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts: list[str] = []
    if info is not None:
        for constraint in info.metadata:
            for attr, symbol in symbols.items():
                bound = getattr(constraint, attr, None)
                if bound is not None:
                    parts.append(f"{symbol} {_number(bound)}")
    if not parts:
        parts = [f"{symbols[key]} {_number(value)}" for key, value in ctx.items() if key in symbols]
    return " and ".join(parts)


def _choices(info: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    args = typing.get_args(info.annotation) if info is not None else ()
    if args and all(isinstance(arg, str | int) for arg in args):
        return ", ".join(repr(arg) for arg in args)
    return str(ctx.get("expected", "the accepted values"))


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _show(value: object) -> str:
    """A value as a YAML writer would recognise it, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    from velocity._validation import short_repr

    text = short_repr(value)
    if isinstance(value, Mapping | list | tuple | set):
        text = f"{text} ({type(value).__name__})"
    return text if len(text) <= 80 else text[:77] + "..."


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

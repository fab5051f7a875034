"""The built-in simulation: seeded nodes that really train a linear model on their own shard."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import torch

from velocity._random import numpy_rng, torch_generator
from velocity.errors import ConfigurationError
from velocity.fedtrain._provider import UpdateProvider
from velocity.fedtrain.models import FederatedNode, GlobalState, LocalUpdate, TrainingConfig

__all__ = ["SimulatedNodes"]

MAX_SIMULATED_NODES: Final = 1024
"""Most nodes one simulation holds (every shard lives in memory)."""


class SimulatedNodes(UpdateProvider):
    """Nodes holding seeded synthetic linear-regression shards, training with AdamW.

    Node ``i`` (id ``node-000``, ``node-001``, ...) holds ``n_i`` samples, drawn between
    ``min_samples`` and ``max_samples``, of ``y = x · w* + b* + noise``: the true ``(w*, b*)``
    is shared (drawn from ``N(0, 0.1²)``), the features of each node are shifted by a
    node-specific mean (non-IID data).
    In a round a node starts from :attr:`GlobalState.model` (zeros before there is one),
    takes ``config.local_steps`` AdamW steps (``lr = config.learning_rate``, torch's
    defaults otherwise; a fresh optimizer every round, as a stateless worker) on minibatches
    of ``min(config.batch_size, n_i)`` samples drawn without replacement, and sends:

    - ``gradients``: its pseudo-gradient ``start − end`` under ``"weight"`` (``features``
      values) and ``"bias"`` (one), the DiLoCo outer gradient;
    - ``loss``: the normalised mean squared error of its end weights on its whole shard,
      ``MSE / mean(y²)``, so that ``1.0`` is the loss of the all-zeros model;
    - ``samples_used``: ``local_steps · min(batch_size, n_i)``.

    Everything is a function of ``seed``: the data (``(seed, "fedtrain", ...)``), the
    minibatches (``(seed, round, node id)``), so a run repeats exactly.

    Parameters
    ----------
    config : TrainingConfig
        ``num_nodes`` nodes (at most 1024), trained with ``learning_rate``, ``batch_size``
        and ``local_steps``.
    seed : int
        Root of every random draw.
    features : int
        Features of the regression (``"weight"`` has this many values).
    min_samples, max_samples : int
        Bounds of the shard sizes (inclusive).
    noise : float
        Standard deviation of the label noise.

    Examples
    --------
    >>> config = TrainingConfig(model_name="sim", learning_rate=1e-3, batch_size=32,
    ...                         local_steps=10, global_rounds=5, num_nodes=2)
    >>> sim = SimulatedNodes(config, seed=0)
    >>> [node.node_id for node in sim.nodes]
    ['node-000', 'node-001']
    >>> (update,) = sim.get_updates(1, GlobalState(round_id=0), sim.nodes[:1])
    >>> sorted(update.gradients), len(update.gradients["weight"]), update.samples_used
    (['bias', 'weight'], 8, 320)
    """

    def __init__(
        self,
        config: TrainingConfig,
        *,
        seed: int = 0,
        features: int = 8,
        min_samples: int = 200,
        max_samples: int = 600,
        noise: float = 0.1,
    ) -> None:
        if not isinstance(config, TrainingConfig):
            raise ConfigurationError(
                f"SimulatedNodes: config must be a TrainingConfig; got {config!r}"
            )
        if config.num_nodes > MAX_SIMULATED_NODES:
            raise ConfigurationError(
                f"SimulatedNodes: at most {MAX_SIMULATED_NODES} nodes; got num_nodes="
                f"{config.num_nodes}"
            )
        for name, value, low, high in (
            ("seed", seed, 0, 2**63 - 1),
            ("features", features, 1, 4096),
            ("min_samples", min_samples, 1, 100_000),
            ("max_samples", max_samples, min_samples, 100_000),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigurationError(
                    f"SimulatedNodes: {name} must be an int in [{low}, {high}]; got {value!r}"
                )
        if not (isinstance(noise, int | float) and 0 <= noise < float("inf")):
            raise ConfigurationError(
                f"SimulatedNodes: noise must be a finite float >= 0; got {noise!r}"
            )
        self.config = config
        self.seed = seed
        self.features = features
        truth = numpy_rng(seed, "fedtrain", "truth")
        self.true_weight = truth.normal(0.0, 0.1, size=features)
        self.true_bias = float(truth.normal(0.0, 0.1))
        sizes = numpy_rng(seed, "fedtrain", "sizes").integers(
            min_samples, max_samples, size=config.num_nodes, endpoint=True
        )
        self.nodes: list[FederatedNode] = []
        self._shards: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, size in enumerate(sizes.tolist()):
            node_id = f"node-{i:03d}"
            rng = numpy_rng(seed, "fedtrain", "shard", i)
            shift = rng.normal(0.0, 0.5, size=features)
            x = rng.normal(0.0, 1.0, size=(size, features)) + shift
            y = x @ self.true_weight + self.true_bias + rng.normal(0.0, float(noise), size=size)
            self._shards[node_id] = (
                torch.from_numpy(x.astype(np.float32)),
                torch.from_numpy(y.astype(np.float32)),
            )
            self.nodes.append(
                FederatedNode(
                    node_id=node_id,
                    address=f"sim://{node_id}",
                    capabilities={"simulated": True, "samples": size},
                )
            )

    def shard_size(self, node_id: str) -> int:
        """Samples node ``node_id`` holds."""
        return int(self._shard(node_id)[1].shape[0])

    def _shard(self, node_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        shard = self._shards.get(node_id)
        if shard is None:
            raise ValueError(f"SimulatedNodes: {node_id!r} is not one of the simulated nodes")
        return shard

    def loss(self, node_id: str, weights: dict[str, list[float]] | None) -> float:
        """The normalised MSE (``1.0``: the all-zeros model) of ``weights`` on a node's shard."""
        x, y = self._shard(node_id)
        w, b = self._start(weights)
        return float(_mse(x, y, w, b) / y.square().mean())

    def _start(self, weights: dict[str, list[float]] | None) -> tuple[torch.Tensor, torch.Tensor]:
        if weights is None:
            return torch.zeros(self.features), torch.zeros(1)
        weight, bias = weights.get("weight"), weights.get("bias")
        if weight is None or bias is None or len(weight) != self.features or len(bias) != 1:
            raise ValueError(
                f"SimulatedNodes: the model must hold 'weight' ({self.features} values) and "
                f"'bias' (1 value); got {sorted((k, len(v)) for k, v in weights.items())}"
            )
        return (
            torch.tensor(weight, dtype=torch.float32),
            torch.tensor(bias, dtype=torch.float32),
        )

    def get_updates(
        self, round_id: int, state: GlobalState, nodes: Sequence[FederatedNode]
    ) -> list[LocalUpdate]:
        """Train every node in ``nodes`` from ``state.model``; one update each."""
        start_w, start_b = self._start(state.model)
        return [self._train(node.node_id, round_id, start_w, start_b) for node in nodes]

    def _train(
        self, node_id: str, round_id: int, start_w: torch.Tensor, start_b: torch.Tensor
    ) -> LocalUpdate:
        x, y = self._shard(node_id)
        config = self.config
        params = torch.cat([start_w, start_b])
        adamw = _AdamW(params, lr=config.learning_rate)
        features = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)  # the bias as a feature
        batch = min(config.batch_size, int(y.shape[0]))
        generator = torch_generator(self.seed, round_id, node_id, "batches")
        for _ in range(config.local_steps):
            rows = torch.randperm(int(y.shape[0]), generator=generator)[:batch]
            xb, yb = features[rows], y[rows]
            # d/dp mean((xb p - yb)^2) = 2/b xb^T (xb p - yb)
            adamw.step((2.0 / batch) * (xb.T @ (xb @ params - yb)))
        w, b = params[: self.features], params[self.features :]
        return LocalUpdate(
            node_id=node_id,
            round_id=round_id,
            gradients={"weight": (start_w - w).tolist(), "bias": (start_b - b).tolist()},
            loss=float(_mse(x, y, w, b) / y.square().mean()),
            samples_used=config.local_steps * batch,
        )


class _AdamW:
    """:class:`torch.optim.AdamW` with its defaults (betas 0.9, 0.999, eps 1e-8, weight decay
    0.01) on one flat tensor, updated in place (torch.optim's first use imports the compiler
    stack, seconds of start-up for a few dozen tiny steps)."""

    def __init__(
        self,
        params: torch.Tensor,
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m = torch.zeros_like(params)
        self.v = torch.zeros_like(params)
        self.t = 0

    def step(self, grad: torch.Tensor) -> None:
        beta1, beta2 = self.betas
        self.t += 1
        self.params.mul_(1 - self.lr * self.weight_decay)
        self.m.lerp_(grad, 1 - beta1)
        self.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1**self.t)
        denom = (self.v.sqrt() / math.sqrt(1 - beta2**self.t)).add_(self.eps)
        self.params.addcdiv_(self.m, denom, value=-step_size)


def _mse(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (x @ w + b - y).square().mean()

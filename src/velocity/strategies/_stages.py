"""Strategies as server stages of the round engine.

A round's server side is a chain of stages with one shape (``init(spec) -> state``,
``apply(batch, state, ctx) -> (batch, state, metrics)``) acting on a :class:`RoundBatch`:

``[pre stages (adversary, unmask...)] -> AggregateStage(strategy) -> [post stages (central
DP noise...)] -> ServerStepStage(server optimizer)``

:class:`AggregateStage` runs the strategy's pre-aggregators and aggregator on the stacked
rows and sets ``batch.update``; :class:`ServerStepStage` applies it to the global parameters
(``x + Δ``, or the strategy's server optimizer, whose moments are the stage's state) and
sets ``batch.params``. :func:`server_chain` builds both from a strategy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from velocity.errors import ValidationError

if TYPE_CHECKING:
    from velocity.strategies._base import ServerOptimizer
    from velocity.strategies._registry import Strategy
    from velocity.types import ParamSpec, Stage, StageContext, StageState

__all__ = ["AggregateStage", "RoundBatch", "ServerStepStage", "run_server_stages", "server_chain"]


@dataclass(eq=False)
class RoundBatch:
    """The server side's view of one round while its stages run.

    ``rows`` is the ``(n, d)`` stack (row ``i`` is ``client_ids[i]``'s update, weighted by
    ``num_samples[i]``); ``update`` is the ``(d,)`` aggregate once a stage has aggregated;
    ``params`` the new global parameters once the server step ran.
    """

    rows: Tensor
    num_samples: list[int]
    client_ids: list[str]
    update: Tensor | None = None
    params: Tensor | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.client_ids)
        if self.rows.ndim != 2 or self.rows.shape[0] != n or len(self.num_samples) != n:
            raise ValidationError(
                f"RoundBatch: rows must be (n, d) with n = {n} client ids and sample counts; "
                f"got {tuple(self.rows.shape)} and {len(self.num_samples)} counts"
            )

    @property
    def weights(self) -> Tensor:
        """Sample counts as float64 weights on the rows' device."""
        return torch.tensor(
            [int(c) for c in self.num_samples], dtype=torch.float64, device=self.rows.device
        )


@dataclass(frozen=True)
class AggregateStage:
    """Pre-aggregators then the aggregator of ``strategy`` on the batch's rows.

    Randomness (``Bucketing``) comes from ``ctx.generator("aggregate")``. Metrics are the
    strategy's (``rule``, ``n``, ``n_aggregated``, ``pre_aggregators``,
    ``dropped_nonfinite``: indices into the batch's rows) plus ``dropped_nonfinite_clients``
    (the ids of those rows), ``total_samples`` and ``server_optimizer`` (class name or None).
    """

    strategy: Strategy

    @property
    def name(self) -> str:
        return "aggregate"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        counts = [int(c) for c in x.num_samples]
        weights = torch.tensor(counts, dtype=torch.float64, device=x.rows.device)
        result = self.strategy.aggregate(x.rows, weights, generator=ctx.generator("aggregate"))
        metrics: dict[str, Any] = dict(result.metrics)
        dropped = metrics.get("dropped_nonfinite", [])
        metrics["dropped_nonfinite_clients"] = [x.client_ids[int(i)] for i in dropped]
        metrics["total_samples"] = sum(counts)
        optimizer = self.strategy.server_optimizer
        metrics["server_optimizer"] = None if optimizer is None else type(optimizer).__name__
        x.update = result.update
        return x, state, metrics


@dataclass(frozen=True)
class ServerStepStage:
    """``x ← x + Δ``, or ``optimizer.step(x, Δ, state)``; the optimizer's moments are the state."""

    optimizer: ServerOptimizer | None = None

    @property
    def name(self) -> str:
        return "server_step"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        if x.update is None:
            raise ValidationError("ServerStepStage: no aggregate to apply (no stage aggregated)")
        delta = x.update.to(ctx.params.device)
        if self.optimizer is None:
            x.params = ctx.params + delta
            return x, state, {}
        params, new_state = self.optimizer.step(ctx.params, delta, state or None)
        x.params = params
        return x, dict(new_state), {}


def server_chain(
    strategy: Strategy,
    *,
    pre: Sequence[Stage[RoundBatch]] = (),
    post: Sequence[Stage[RoundBatch]] = (),
) -> list[Stage[RoundBatch]]:
    """``[*pre, AggregateStage(strategy), *post, ServerStepStage(strategy.server_optimizer)]``."""
    return [
        *pre,
        AggregateStage(strategy),
        *post,
        ServerStepStage(strategy.server_optimizer),
    ]


def run_server_stages(
    stages: Sequence[Stage[RoundBatch]],
    batch: RoundBatch,
    states: Mapping[str, StageState],
    ctx: StageContext,
) -> tuple[RoundBatch, dict[str, StageState], dict[str, Mapping[str, Any]]]:
    """Apply ``stages`` in order; return the batch, every stage's new state and its metrics.

    Nothing is written to ``states``: a stage that raises leaves the caller's state intact.
    """
    new_states: dict[str, StageState] = {}
    metrics: dict[str, Mapping[str, Any]] = {}
    for stage in stages:
        batch, state, out = stage.apply(batch, dict(states.get(stage.name, {})), ctx)
        new_states[stage.name] = state
        metrics[stage.name] = out
    return batch, new_states, metrics

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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from velocity.errors import ValidationError

if TYPE_CHECKING:
    from velocity.strategies._base import ServerOptimizer
    from velocity.strategies._registry import Strategy
    from velocity.types import ClientUpdate, ParamSpec, Stage, StageContext, StageState

__all__ = ["AggregateStage", "RoundBatch", "ServerStepStage", "run_server_stages", "server_chain"]


@dataclass(eq=False)
class RoundBatch:
    """The server side's view of one round while its stages run.

    ``rows`` is the ``(n, d)`` stack (row ``i`` is ``client_ids[i]``'s update, weighted by
    ``num_samples[i]``); ``update`` is the ``(d,)`` aggregate once a stage has aggregated;
    ``params`` the new global parameters once the server step ran. ``losses``, when set, is
    one loss per row: client ``i``'s loss of the round's global model on its own training
    data, measured before it trained (its update's ``metrics["initial_loss"]``, see
    :meth:`initial_losses`); the rules with ``needs_losses`` (:class:`QFedAvg`) weigh the
    rows by it. A stage that rewrites the rows (the simulated adversary) keeps it aligned.
    """

    rows: Tensor
    num_samples: list[int]
    client_ids: list[str]
    update: Tensor | None = None
    params: Tensor | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    losses: list[float] | None = None

    def __post_init__(self) -> None:
        n = len(self.client_ids)
        if self.rows.ndim != 2 or self.rows.shape[0] != n or len(self.num_samples) != n:
            raise ValidationError(
                f"RoundBatch: rows must be (n, d) with n = {n} client ids and sample counts; "
                f"got {tuple(self.rows.shape)} and {len(self.num_samples)} counts"
            )
        if self.losses is not None:
            if len(self.losses) != n:
                raise ValidationError(
                    f"RoundBatch: losses must hold one loss per row (n = {n}) or be None; "
                    f"got {len(self.losses)} losses"
                )
            self.losses = [float(loss) for loss in self.losses]

    @staticmethod
    def initial_losses(updates: Sequence[ClientUpdate]) -> list[float] | None:
        """Every update's ``metrics["initial_loss"]`` in order, or ``None`` when one has none.

        What the round engine puts in :attr:`losses`. Clients measure the loss when their
        task asks for it (``TaskConfig(options={"initial_loss": True})``); with no such
        request no update carries it, and the batch has no losses.
        """
        losses: list[float] = []
        for update in updates:
            loss = update.metrics.get("initial_loss")
            if loss is None:
                return None
            losses.append(float(loss))
        return losses

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
    ``dropped_nonfinite`` and ``excluded``: indices into the batch's rows, see
    :class:`AggregationResult`) plus ``dropped_nonfinite_clients`` and ``excluded_clients``
    (the ids of those rows; ``excluded_clients`` is ``None`` where ``excluded`` is),
    ``total_samples`` and ``server_optimizer`` (class name or None).

    A batch whose :attr:`RoundBatch.update` a pre-stage already set (a sum-only stage:
    secure aggregation's unmasking, central DP; it names itself in
    ``notes["aggregated_by"]``) passes through: the rule is not run again.

    An aggregator with ``needs_losses`` (:class:`QFedAvg`) gets the batch's
    :attr:`RoundBatch.losses`; a batch without them, or with a loss that is not a finite
    number >= 0, is refused with a :class:`~velocity.errors.ValidationError` saying which
    clients and how to ask for the losses.
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
        if x.update is not None:
            # A sum-only pre-stage (secure aggregation, central DP) aggregated already: the
            # rule was checked compatible when the engine was built; nothing is left for it.
            by = str(x.notes.get("aggregated_by", "a pre-stage"))
            return (
                x,
                state,
                {
                    "rule": f"{type(self.strategy.aggregator).__name__} (by {by})",
                    "aggregated_by": by,
                    "n": len(counts),
                    "n_aggregated": len(counts),
                    "total_samples": sum(counts),
                    "excluded": None,
                    "excluded_clients": None,
                    "dropped_nonfinite": [],
                    "dropped_nonfinite_clients": [],
                    "server_optimizer": _optimizer_name(self.strategy),
                },
            )
        weights = torch.tensor(counts, dtype=torch.float64, device=x.rows.device)
        generator = ctx.generator("aggregate")
        if self.strategy.aggregator.needs_losses:
            losses = _batch_losses(x, type(self.strategy.aggregator).__name__)
            result = self.strategy.aggregate(x.rows, weights, generator=generator, losses=losses)
        else:
            result = self.strategy.aggregate(x.rows, weights, generator=generator)
        metrics: dict[str, Any] = dict(result.metrics)
        dropped = metrics.get("dropped_nonfinite", [])
        metrics["dropped_nonfinite_clients"] = [x.client_ids[int(i)] for i in dropped]
        excluded = metrics.get("excluded")
        metrics["excluded_clients"] = (
            None if excluded is None else [x.client_ids[int(i)] for i in excluded]
        )
        metrics["total_samples"] = sum(counts)
        metrics["server_optimizer"] = _optimizer_name(self.strategy)
        return replace(x, update=result.update), state, metrics


def _optimizer_name(strategy: Strategy) -> str | None:
    optimizer = strategy.server_optimizer
    return None if optimizer is None else type(optimizer).__name__


def _batch_losses(x: RoundBatch, rule: str) -> Tensor:
    """The batch's losses as a float64 tensor, or a refusal naming the clients at fault."""
    if x.losses is None:
        raise ValidationError(
            f"{rule} needs every client's initial_loss (the loss of the round's global model "
            "on its training data, measured before training), but this round's updates did "
            "not all report one; clients measure it when their task asks for it with "
            "TaskConfig(options={'initial_loss': True})"
        )
    bad = [
        f"{cid!r} reported {loss!r}"
        for cid, loss in zip(x.client_ids, x.losses, strict=True)
        if not (math.isfinite(loss) and loss >= 0)
    ]
    if bad:
        raise ValidationError(
            f"{rule} needs every client's initial_loss to be a finite number >= 0; {'; '.join(bad)}"
        )
    return torch.tensor(x.losses, dtype=torch.float64)


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


def mean_based(strategy: Strategy) -> bool:
    """Whether ``strategy`` aggregates by a plain mean with no pre-aggregator (FedAvg or
    FedProx, any server optimizer): the rules a sum-only stage (secure aggregation, central
    DP) can stand in for.

    >>> from velocity.strategies import FedAdam, FedAvg, Krum, Pipeline
    >>> mean_based(FedAvg()), mean_based(Pipeline(FedAvg(), FedAdam())), mean_based(Krum(f=1))
    (True, True, False)
    """
    from velocity.strategies._averaging import FedAvg, FedProx

    aggregator = strategy.aggregator
    plain = not isinstance(aggregator, FedAvg) or aggregator.nonfinite == "drop"
    return isinstance(aggregator, FedAvg | FedProx) and plain and not strategy.pre_aggregators

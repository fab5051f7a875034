"""Fairness-driven aggregation: q-FedAvg, which weighs clients by their loss."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from velocity import kernels
from velocity.errors import ConfigurationError, ValidationError
from velocity.strategies._base import Aggregator, Stage
from velocity.strategies._constraints import NoneOr, Real
from velocity.strategies._pipeline import Pipeline

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Tensor

    from velocity.strategies._constraints import Constraint
    from velocity.strategies._registry import Strategy

__all__ = ["QFedAvg", "resolve_lipschitz"]


@dataclass(frozen=True)
class QFedAvg(Aggregator):
    """q-FedAvg: weigh every client's update by its loss to the power q (fair accuracy).

    Li, Sanjabi, Beirami & Smith 2020, "Fair Resource Allocation in Federated Learning"
    (ICLR), Algorithm 2. The step is
    ``Σ_k F_k^q Δ_k / Σ_k (q F_k^(q−1) L ‖Δ_k‖² + F_k^q)``, F_k client k's loss of the
    received global model on its own training data, measured before it trains; q = 0 is the
    unweighted mean, larger q moves the model towards the clients it serves worst. Calls
    :func:`velocity.kernels.qfedavg`. Not robust to Byzantine clients (a client may claim
    any loss). Returns no ``excluded`` rows (every row counts).

    The rule needs every client's loss: clients report it as ``metrics["initial_loss"]``
    when their task asks for it (``TaskConfig(options={"initial_loss": True})``); the round
    engine hands the losses to :class:`AggregateStage` in :attr:`RoundBatch.losses`, and
    :meth:`aggregate` takes them as ``losses=``. In a :class:`Pipeline` only row-wise
    pre-aggregators (Clip, ARC) may come first: NNM and Bucketing mix the rows, so no row
    would be one client's, and are refused.

    Parameters
    ----------
    q : float
        Fairness parameter, ``>= 0`` (the paper tries 0.1 to 15).
    lipschitz : float or None
        L, the Lipschitz constant of the local gradients, ``> 0``. ``None`` (the default)
        means the paper's ``1 / lr`` of the clients' SGD: whoever builds the engine, and so
        knows the clients' learning rate, replaces it with :func:`resolve_lipschitz`; an
        aggregation with ``None`` still in place is refused with a ``ConfigurationError``.

    Examples
    --------
    >>> import torch
    >>> rows, losses = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 4.0])
    >>> QFedAvg(q=0.0, lipschitz=10.0).aggregate(rows, losses=losses).update.tolist()
    [0.5, 0.5]
    >>> QFedAvg(q=1.0, lipschitz=1.0).aggregate(rows, losses=losses).update.tolist()[1] > 0.5
    True
    """

    q: float = 1.0
    lipschitz: float | None = None

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "q": Real(low=0),
        "lipschitz": NoneOr(Real(low=0, low_open=True)),
    }
    needs_losses: ClassVar[bool] = True

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        raise ValidationError(
            f"{type(self).__name__} needs one loss per row (aggregate(..., losses=)); got none"
        )

    def _reduce_with_losses(
        self, updates: Tensor, weights: Tensor | None, losses: Tensor
    ) -> Tensor:
        return kernels.qfedavg(updates, losses, weights, q=self.q, lipschitz=self.lipschitz)


def resolve_lipschitz(strategy: Strategy, lr: float) -> Strategy:
    """``strategy`` with ``QFedAvg(lipschitz=None)`` made ``QFedAvg(lipschitz=1 / lr)``.

    The call a builder makes once it knows the clients' learning rate (the paper's
    ``L = 1/lr``). Every other strategy, and a QFedAvg whose ``lipschitz`` is set, comes back
    as it is (the same object); inside a :class:`Pipeline` the aggregator is replaced and the
    other stages kept.

    Parameters
    ----------
    strategy : Strategy
        An aggregator or a :class:`Pipeline`.
    lr : float
        The clients' SGD learning rate, finite and > 0.

    Raises
    ------
    ConfigurationError
        ``lr`` is not a finite number > 0.

    Examples
    --------
    >>> resolve_lipschitz(QFedAvg(q=2.0), lr=0.05)
    QFedAvg(q=2.0, lipschitz=20.0)
    >>> from velocity.strategies import Krum
    >>> resolve_lipschitz(Krum(f=1), lr=0.05)
    Krum(f=1, neighbors='n-f-2')
    """
    if (
        isinstance(lr, bool)
        or not isinstance(lr, numbers.Real)
        or not (math.isfinite(float(lr)) and float(lr) > 0)
    ):
        raise ConfigurationError(f"resolve_lipschitz: lr must be a finite float > 0; got {lr!r}")
    aggregator = strategy.aggregator
    if not isinstance(aggregator, QFedAvg) or aggregator.lipschitz is not None:
        return strategy
    resolved = dataclasses.replace(aggregator, lipschitz=1.0 / float(lr))
    if isinstance(strategy, Pipeline):
        stages: list[Stage] = [resolved if s is aggregator else s for s in strategy.stages]
        return Pipeline(*stages)
    return resolved

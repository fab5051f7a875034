"""The three kinds of stage, the result type, and the one routine that runs stages in order.

A stage is a frozen dataclass holding settings only; the arithmetic lives in
:mod:`velocity.kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from velocity import kernels
from velocity.strategies._constraints import check_parameters

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import Generator, Tensor

    from velocity.strategies._constraints import Constraint

__all__ = [
    "AggregationResult",
    "Aggregator",
    "PreAggregator",
    "ServerOptimizer",
    "Stage",
    "run_stages",
]


class AggregationResult(NamedTuple):
    """What :meth:`Aggregator.aggregate` and :meth:`Pipeline.aggregate` return.

    Attributes
    ----------
    update : Tensor
        The aggregated update, shape ``(d,)``, with the input's dtype and device.
    metrics : dict[str, Any]
        ``rule`` (aggregator class name), ``n`` (rows handed in), ``n_aggregated`` (rows that
        reached the aggregator, after pre-aggregation), ``pre_aggregators`` (their class names,
        in order) and ``dropped_nonfinite`` (indices, into the rows the aggregator saw, of
        rows left out because they held NaN or ±inf; ``[]`` for rules that do not leave rows
        out).
    """

    update: Tensor
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Stage:
    """Base of every stage: a frozen dataclass validated against ``_constraints`` on construction.

    Subclasses are ``@dataclass(frozen=True)`` classes whose fields are the settings, under
    the names the user writes, each with an entry in the ``_constraints`` table.
    """

    kind: ClassVar[str]
    _constraints: ClassVar[Mapping[str, Constraint]] = {}

    def __post_init__(self) -> None:
        check_parameters(self)


@dataclass(frozen=True)
class PreAggregator(Stage):
    """A stage that maps ``(updates, weights)`` to new ``(updates', weights')``."""

    kind: ClassVar[str] = "pre-aggregator"

    def apply(
        self, updates: Tensor, weights: Tensor | None = None, *, generator: Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Run the kernel on ``updates (n, d)``; return ``(updates' (n', d), weights')``."""
        raise NotImplementedError


@dataclass(frozen=True)
class ServerOptimizer(Stage):
    """A stage that applies the aggregated update to the global parameters."""

    kind: ClassVar[str] = "server-optimizer"

    def step(
        self, params: Tensor, delta: Tensor, state: Mapping[str, Tensor] | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One server step: ``state`` is ``None`` on the first round, then the returned dict."""
        raise NotImplementedError


@dataclass(frozen=True)
class Aggregator(Stage):
    """A stage that reduces ``updates (n, d)`` to one ``(d,)`` update.

    A bare aggregator behaves like ``Pipeline(aggregator)``: it has the same
    :meth:`aggregate`, :attr:`pre_aggregators`, :attr:`aggregator` and
    :attr:`server_optimizer`.
    """

    kind: ClassVar[str] = "aggregator"

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        """Call this rule's kernel."""
        raise NotImplementedError

    def _drops_nonfinite(self) -> bool:
        """Whether the kernel leaves out rows holding NaN or ±inf (reported in metrics)."""
        return False

    @property
    def pre_aggregators(self) -> tuple[PreAggregator, ...]:
        """No pre-aggregators: ``()``."""
        return ()

    @property
    def aggregator(self) -> Aggregator:
        """The aggregator itself."""
        return self

    @property
    def server_optimizer(self) -> ServerOptimizer | None:
        """No server optimizer: ``None``."""
        return None

    def aggregate(
        self, updates: Tensor, weights: Tensor | None = None, *, generator: Generator | None = None
    ) -> AggregationResult:
        """Aggregate ``updates (n, d)`` (optional ``weights (n,)``) into one ``(d,)`` update."""
        return run_stages((), self, updates, weights, generator)


def run_stages(
    pre_aggregators: Sequence[PreAggregator],
    aggregator: Aggregator,
    updates: Tensor,
    weights: Tensor | None,
    generator: Generator | None,
) -> AggregationResult:
    """Apply ``pre_aggregators`` in order, then ``aggregator``; collect the metrics."""
    rows, row_weights = updates, weights
    for stage in pre_aggregators:
        rows, row_weights = stage.apply(rows, row_weights, generator=generator)
    update = aggregator._reduce(rows, row_weights)
    dropped: list[int] = []
    if aggregator._drops_nonfinite():
        dropped = [int(i) for i in kernels.nonfinite_rows(rows).nonzero().flatten().tolist()]
    metrics: dict[str, Any] = {
        "rule": type(aggregator).__name__,
        "n": int(updates.shape[0]),
        "n_aggregated": int(rows.shape[0]),
        "pre_aggregators": [type(stage).__name__ for stage in pre_aggregators],
        "dropped_nonfinite": dropped,
    }
    return AggregationResult(update, metrics)

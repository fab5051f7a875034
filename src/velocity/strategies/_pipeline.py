"""Explicit composition: pre-aggregators, then one aggregator, then a server optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from velocity.errors import ConfigurationError
from velocity.strategies._base import (
    AggregationResult,
    Aggregator,
    PreAggregator,
    ServerOptimizer,
    Stage,
    check_losses_allowed,
    run_stages,
)

if TYPE_CHECKING:
    from torch import Generator, Tensor

__all__ = ["Pipeline"]

_ORDER: Final = (
    "zero or more pre-aggregators, then exactly one aggregator, then at most one server optimizer"
)
_RANK: Final[dict[str, int]] = {"pre-aggregator": 0, "aggregator": 1, "server-optimizer": 2}


def _check_order(stages: tuple[object, ...]) -> tuple[Stage, ...]:
    """Return ``stages`` if they read pre-aggregator* aggregator server-optimizer?, else raise."""
    checked: list[Stage] = []
    for index, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise ConfigurationError(
                f"Pipeline stage {index} is {stage!r} ({type(stage).__name__}); a Pipeline "
                f"takes {_ORDER}"
            )
        checked.append(stage)
    kinds = [stage.kind for stage in checked]
    ranks = [_RANK[kind] for kind in kinds]
    if (
        ranks != sorted(ranks)
        or kinds.count("aggregator") != 1
        or kinds.count("server-optimizer") > 1
    ):
        got = ", ".join(f"{type(stage).__name__} ({stage.kind})" for stage in checked)
        raise ConfigurationError(f"Pipeline expects {_ORDER}; got [{got}]")
    return tuple(checked)


@dataclass(frozen=True, init=False, repr=False)
class Pipeline:
    """Stages applied in order: ``Pipeline(*pre_aggregators, aggregator, [server_optimizer])``.

    Frozen, hashable and compared by value (on :attr:`stages`), like every stage.
    :meth:`aggregate` applies the pre-aggregators in order and then the aggregator; the
    server optimizer is not applied there (it needs the global parameters and its state) but
    is exposed as :attr:`server_optimizer` for the orchestrator, which calls its ``step``.
    An aggregator that weighs rows by their clients' losses (:class:`QFedAvg`) is refused
    after a pre-aggregator that mixes rows (:class:`NNM`, :class:`Bucketing`).

    Examples
    --------
    >>> from velocity.strategies import Clip, FedAdam, Krum, NNM, Pipeline
    >>> pipeline = Pipeline(Clip(2.0), NNM(f=2), Krum(f=2), FedAdam())
    >>> pipeline.aggregator
    Krum(f=2, neighbors='n-f-2')
    >>> [type(stage).__name__ for stage in pipeline.pre_aggregators]
    ['Clip', 'NNM']
    >>> Pipeline(Krum(f=2), Clip(2.0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    velocity.errors.ConfigurationError: Pipeline expects zero or more pre-aggregators, ...
    """

    stages: tuple[Stage, ...]
    """All stages, in order."""

    kind: ClassVar[str] = "pipeline"

    def __init__(self, *stages: Stage) -> None:
        object.__setattr__(self, "stages", _check_order(stages))
        check_losses_allowed(self.pre_aggregators, self.aggregator)

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(repr(stage) for stage in self.stages)})"

    @property
    def pre_aggregators(self) -> tuple[PreAggregator, ...]:
        """The pre-aggregators, in order (possibly none)."""
        return tuple(stage for stage in self.stages if isinstance(stage, PreAggregator))

    @property
    def aggregator(self) -> Aggregator:
        """The one aggregator."""
        return next(stage for stage in self.stages if isinstance(stage, Aggregator))

    @property
    def server_optimizer(self) -> ServerOptimizer | None:
        """The server optimizer, or ``None`` (plain ``x ← x + Δ``)."""
        return next((stage for stage in self.stages if isinstance(stage, ServerOptimizer)), None)

    def aggregate(
        self,
        updates: Tensor,
        weights: Tensor | None = None,
        *,
        generator: Generator | None = None,
        losses: Tensor | None = None,
    ) -> AggregationResult:
        """Apply the pre-aggregators, then the aggregator, to ``updates (n, d)``.

        ``generator`` is handed to every pre-aggregator; :class:`Bucketing` requires one.
        ``losses (n,)`` are the rows' losses for an aggregator with ``needs_losses``
        (:class:`QFedAvg`), ignored otherwise.
        """
        return run_stages(
            self.pre_aggregators, self.aggregator, updates, weights, generator, losses
        )

"""The three kinds of stage, the result type, and the one routine that runs stages in order.

A stage is a frozen dataclass holding settings only; the arithmetic lives in
:mod:`velocity.kernels`.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from velocity.errors import ValidationError
from velocity.kernels._checks import recording_drops
from velocity.strategies._constraints import BYZANTINE, check_parameters

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from torch import Generator, Tensor

    from velocity.strategies._constraints import Constraint

StageT = TypeVar("StageT", bound="Stage")

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
        in order) and ``dropped_nonfinite`` (indices, into the rows handed in, of the rows a
        stage left out because they held NaN or ±inf — the non-finite-row policy of every
        rule, see ``docs/kernels.md``; ``[]`` when none was, and always for
        ``FedAvg(nonfinite="propagate")``). A row that only becomes non-finite after
        :class:`Bucketing` renumbered the rows (a bucket mean that overflowed) stands for no
        single input row: it is left out and counted, but not listed.
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

    @classmethod
    def _budget_field(cls) -> str | None:
        """The setting holding the Byzantine budget f (its constraint is ``BYZANTINE``), if any.

        Rows a stage drops for being non-finite count against the budgets of the stages after
        it (see :func:`run_stages`).
        """
        return next((name for name, c in cls._constraints.items() if c is BYZANTINE), None)


@dataclass(frozen=True)
class PreAggregator(Stage):
    """A stage that maps ``(updates, weights)`` to new ``(updates', weights')``."""

    kind: ClassVar[str] = "pre-aggregator"
    _renumbers: ClassVar[bool] = False
    """Whether output rows stand for other rows than the input's (True for Bucketing); else
    output row i is the i-th input row that the stage kept."""

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


def _with_upstream_drops(stage: StageT, upstream: int) -> StageT:
    """``stage`` with its Byzantine budget lowered by ``upstream`` rows dropped before it.

    A row an earlier stage dropped for being non-finite is one of the f faulty clients this
    stage tolerates too, exactly as if the stage had dropped it itself.
    """
    name = stage._budget_field()
    if not upstream or name is None:
        return stage
    f = int(getattr(stage, name))
    if upstream > f:
        raise ValidationError(
            f"{type(stage).__name__}: {upstream} non-finite rows left out by earlier stages "
            f"exceed {name}={f}"
        )
    return dataclasses.replace(stage, **{name: f - upstream})


@contextmanager
def _explained(stage: Stage, lowered: Stage, upstream: int) -> Iterator[None]:
    """Say, in a refusal of a stage whose budget was lowered, what it was lowered from."""
    try:
        yield
    except ValidationError as error:
        name = stage._budget_field()
        if lowered is stage or name is None:
            raise
        raise ValidationError(
            f"{error} ({type(stage).__name__}.{name}={getattr(stage, name)} less {upstream} "
            "non-finite rows left out by earlier stages)"
        ) from error


def run_stages(
    pre_aggregators: Sequence[PreAggregator],
    aggregator: Aggregator,
    updates: Tensor,
    weights: Tensor | None,
    generator: Generator | None,
) -> AggregationResult:
    """Apply ``pre_aggregators`` in order, then ``aggregator``; collect the metrics.

    Every kernel drops the rows holding NaN or ±inf and counts them against its own f (the
    policy in ``docs/kernels.md``); here the rows a stage dropped also count against the f of
    every later stage, and the dropped rows are reported as indices into ``updates``.
    """
    rows, row_weights = updates, weights
    origin: list[int] | None = None  # input index of every current row; None: row i is input i
    named = True  # False once a stage renumbered the rows
    dropped: list[int] = []
    upstream = 0

    def record(log: list[list[int]], rows_in: Tensor) -> None:
        nonlocal origin, upstream
        bad = sorted({i for call in log for i in call})
        upstream += len(bad)
        if not bad or not named:
            return
        dropped.extend(bad if origin is None else [origin[i] for i in bad])
        gone = set(bad)
        current = range(int(rows_in.shape[0])) if origin is None else origin
        origin = [j for i, j in enumerate(current) if i not in gone]

    for stage in pre_aggregators:
        rows_in, lowered = rows, _with_upstream_drops(stage, upstream)
        with recording_drops() as log, _explained(stage, lowered, upstream):
            rows, row_weights = lowered.apply(rows, row_weights, generator=generator)
        record(log, rows_in)
        named = named and not stage._renumbers
    lowered_aggregator = _with_upstream_drops(aggregator, upstream)
    with recording_drops() as log, _explained(aggregator, lowered_aggregator, upstream):
        update = lowered_aggregator._reduce(rows, row_weights)
    record(log, rows)
    metrics: dict[str, Any] = {
        "rule": type(aggregator).__name__,
        "n": int(updates.shape[0]),
        "n_aggregated": int(rows.shape[0]),
        "pre_aggregators": [type(stage).__name__ for stage in pre_aggregators],
        "dropped_nonfinite": sorted(dropped),
    }
    return AggregationResult(update, metrics)

"""The three kinds of stage, the result type, and the one routine that runs stages in order.

A stage is a frozen dataclass holding settings only; the arithmetic lives in
:mod:`velocity.kernels`.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

import torch

from velocity.errors import ConfigurationError, ValidationError
from velocity.kernels._checks import Selection, recording_drops, recording_selection
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
    "check_losses_allowed",
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

        ``excluded``: the rows, as indices into the rows handed in (ascending), that the
        aggregator left out *wholesale* — its result does not depend on them at all — apart
        from the non-finite ones, which are listed in ``dropped_nonfinite`` only. A list for
        the rules that compute their result from a subset of whole rows:

        - :class:`Krum`: every row but the one returned;
        - :class:`MultiKrum`, :class:`CGE`, :class:`MDA`, :class:`SMEA`, :class:`MoNNA`:
          the rows outside the averaged subset;
        - :class:`Bulyan`: the 2f rows its Krum selection did not pick (its coordinate-wise
          step then trims values, not rows, so selected rows are never listed);
        - :class:`CAF`: the rows whose filter weight is exactly 0 in the returned mean
          (``[]`` when the unfiltered mean was kept).

        ``None`` for the rules that combine every row (FedAvg, FedProx, QFedAvg,
        FedMedian, TrimmedMean, MeaMed, GeometricMedian, CenteredClipping: they trim,
        clip or reweight values, not rows), and for every rule after a pre-aggregator whose
        output rows combine several input rows (:class:`Bucketing`, :class:`NNM`): such a
        row left out is no one client left out. Clipping pre-aggregators (:class:`Clip`,
        :class:`ARC`) keep rows apart, so the indices are mapped back through them.
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
    _mixes: ClassVar[bool] = False
    """Whether an output row combines several input rows (NNM, Bucketing): a rule after the
    stage that leaves a row out leaves out no single client (``excluded`` is ``None``), and a
    per-row loss no longer belongs to the row."""

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
    needs_losses: ClassVar[bool] = False
    """Whether the rule weighs the rows by their clients' losses (:class:`QFedAvg`): its
    :meth:`aggregate` then needs ``losses`` (one per row), which :class:`AggregateStage`
    takes from :attr:`RoundBatch.losses`, and it calls :meth:`_reduce_with_losses`."""

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        """Call this rule's kernel."""
        raise NotImplementedError

    def _reduce_with_losses(
        self, updates: Tensor, weights: Tensor | None, losses: Tensor
    ) -> Tensor:
        """Call this rule's kernel with the rows' losses (rules with ``needs_losses``)."""
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
        self,
        updates: Tensor,
        weights: Tensor | None = None,
        *,
        generator: Generator | None = None,
        losses: Tensor | None = None,
    ) -> AggregationResult:
        """Aggregate ``updates (n, d)`` (optional ``weights (n,)``) into one ``(d,)`` update.

        ``losses (n,)``, the rows' losses, are needed by the rules with ``needs_losses`` and
        ignored by the others.
        """
        return run_stages((), self, updates, weights, generator, losses)


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


def check_losses_allowed(pre_aggregators: Sequence[PreAggregator], aggregator: Aggregator) -> None:
    """Refuse a rule that weighs rows by their clients' losses after a stage that mixes rows.

    After :class:`NNM` or :class:`Bucketing` a row combines several clients' updates, so no
    one client's loss belongs to it. Clipping stages keep every row its client's; rows they
    drop as non-finite leave with their losses.
    """
    if not aggregator.needs_losses:
        return
    mixing = [type(stage).__name__ for stage in pre_aggregators if stage._mixes]
    if mixing:
        rule = type(aggregator).__name__
        raise ConfigurationError(
            f"{rule} weighs every row by its client's loss, but {', '.join(mixing)} "
            f"{'mixes' if len(mixing) == 1 else 'mix'} the rows first, so no row is one "
            f"client's; use only row-wise pre-aggregators (Clip, ARC) before {rule}"
        )


def _checked_losses(aggregator: Aggregator, losses: Tensor | None, n: int) -> Tensor:
    """``losses`` if it holds one loss per input row (the kernel checks the values)."""
    rule = type(aggregator).__name__
    if losses is None:
        raise ValidationError(f"{rule} needs one loss per row (aggregate(..., losses=)); got none")
    if not isinstance(losses, torch.Tensor) or losses.shape != (n,):
        got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValidationError(
            f"{rule}: losses must be a tensor of shape ({n},), one per update row; got {got}"
        )
    return losses


def _rows_losses(losses: Tensor, origin: list[int] | None) -> Tensor:
    """The losses of the current rows (``origin``: their input rows; ``None``: all of them)."""
    if origin is None:
        return losses
    return losses.index_select(0, torch.tensor(origin, dtype=torch.long, device=losses.device))


def _excluded(
    selections: list[Selection], drops: list[list[int]], n: int, origin: list[int] | None
) -> list[int] | None:
    """The input rows a row-selecting kernel left out, non-finite ones aside; ``None`` when
    the kernel selected nothing (it combines every row)."""
    if len(selections) != 1 or selections[0].n != n:
        return None
    gone = set(selections[0].kept).union(*drops)
    local = [i for i in range(n) if i not in gone]
    return local if origin is None else sorted(origin[i] for i in local)


def run_stages(
    pre_aggregators: Sequence[PreAggregator],
    aggregator: Aggregator,
    updates: Tensor,
    weights: Tensor | None,
    generator: Generator | None,
    losses: Tensor | None = None,
) -> AggregationResult:
    """Apply ``pre_aggregators`` in order, then ``aggregator``; collect the metrics.

    Every kernel drops the rows holding NaN or ±inf and counts them against its own f (the
    policy in ``docs/kernels.md``); here the rows a stage dropped also count against the f of
    every later stage, and the dropped rows are reported as indices into ``updates``. So are
    the rows a row-selecting aggregator left out (``excluded``, see
    :class:`AggregationResult`), which the kernels note while they run: reporting reads the
    indices they chose and changes none of their arithmetic. ``losses (n,)`` reach an
    aggregator with ``needs_losses``, restricted to the rows that reach it.
    """
    given: Tensor | None = None
    if aggregator.needs_losses:
        check_losses_allowed(pre_aggregators, aggregator)
        given = _checked_losses(aggregator, losses, int(updates.shape[0]))
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
    with (
        recording_drops() as log,
        recording_selection() as selections,
        _explained(aggregator, lowered_aggregator, upstream),
    ):
        if given is not None:
            row_losses = _rows_losses(given, origin)
            update = lowered_aggregator._reduce_with_losses(rows, row_weights, row_losses)
        else:
            update = lowered_aggregator._reduce(rows, row_weights)
    mixed = any(stage._mixes or stage._renumbers for stage in pre_aggregators)
    excluded = None if mixed else _excluded(selections, log, int(rows.shape[0]), origin)
    record(log, rows)
    metrics: dict[str, Any] = {
        "rule": type(aggregator).__name__,
        "n": int(updates.shape[0]),
        "n_aggregated": int(rows.shape[0]),
        "pre_aggregators": [type(stage).__name__ for stage in pre_aggregators],
        "dropped_nonfinite": sorted(dropped),
        "excluded": excluded,
    }
    return AggregationResult(update, metrics)

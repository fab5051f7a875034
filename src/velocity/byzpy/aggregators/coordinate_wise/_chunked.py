"""Feature-chunked subtasks of the coordinate-wise rules (private).

A coordinate-wise rule computes every coordinate from that coordinate's n values alone, so
the ``(n, d)`` stack can be cut into column blocks that workers reduce independently. Rows
are dropped by the kernels' non-finite-row policy as a whole, so the policy is applied once,
to the full stack, before the cut: each block then holds finite rows only, and the
concatenated blocks are bit for bit the unchunked result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from velocity.byzpy._tensors import layout_of, stack
from velocity.byzpy.aggregators.base import Aggregator
from velocity.byzpy.engine.graph.operator import OpContext
from velocity.byzpy.engine.graph.subtask import SubTask
from velocity.kernels import meamed, median, trimmed_mean
from velocity.kernels._checks import drop_nonfinite

__all__ = ["CoordinateWiseRule", "run_rule"]


def run_rule(rule: str, block: Tensor, f: int | None) -> Tensor:
    """The kernel of ``rule`` on ``block`` (``(n, c)``), ByzPy's variant (a subtask's fn)."""
    if rule == "median":
        return median(block, even="lower")
    assert f is not None
    if rule == "trimmed_mean":
        return trimmed_mean(block, f=f)
    return meamed(block, f=f, even="lower", strict=False)


class CoordinateWiseRule(Aggregator):
    """A coordinate-wise aggregator: one kernel call, or feature chunks of ``chunk_size``."""

    supports_subtasks: bool = True
    rule: ClassVar[str]
    chunk_size: int

    def budget(self) -> int | None:
        """The rule's f (``None`` for a rule without one)."""
        return None

    def check_rows(self, n: int) -> None:
        """Raise ``ValueError`` when ``n`` vectors are too few for the rule."""

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", type(self).__name__)
        self.check_rows(x.shape[0])
        return layout.restore(run_rule(self.rule, x, self.budget()))

    def create_subtasks(
        self, inputs: Mapping[str, object], *, context: OpContext
    ) -> Iterable[SubTask]:
        """One subtask per block of ``chunk_size`` coordinates."""
        x, _ = stack(inputs.get(self.input_key), self.input_key, type(self).__name__)
        self.check_rows(x.shape[0])
        kept = drop_nonfinite(x, self.rule, self.budget())
        rows = kept.x
        return [
            SubTask(
                fn=run_rule,
                args=(self.rule, rows[:, start : start + self.chunk_size].contiguous(), kept.f),
                name=f"{self.name}[{start}:{start + self.chunk_size}]",
            )
            for start in range(0, rows.shape[1], self.chunk_size)
        ]

    def reduce_subtasks(
        self, partials: Sequence[object], inputs: Mapping[str, object], *, context: OpContext
    ) -> Any:
        """The blocks' results side by side, as one vector of the inputs' layout."""
        layout = layout_of(inputs.get(self.input_key), self.input_key, type(self).__name__)
        blocks = [p for p in partials if isinstance(p, Tensor)]
        if len(blocks) != len(partials):
            raise TypeError(f"{self.name}: every partial result must be a tensor")
        return layout.restore(torch.cat(blocks))

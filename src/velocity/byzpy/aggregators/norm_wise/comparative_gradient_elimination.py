"""ByzPy's ``ComparativeGradientElimination`` on :func:`velocity.kernels.cge`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from velocity._validation import Integer, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.aggregators.base import Aggregator
from velocity.errors import ValidationError
from velocity.kernels import cge

__all__ = ["ComparativeGradientElimination"]


class ComparativeGradientElimination(Aggregator):
    """Comparative gradient elimination (Gupta & Vaidya 2020): the mean of the ``n − f``
    vectors of smallest L2 norm.

    Parameters
    ----------
    f : int
        Largest-norm vectors dropped, ``>= 0``; a call needs ``f < n``.
    chunk_size : int, default 8192
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> agg = ComparativeGradientElimination(f=1)
    >>> round(agg.aggregate([torch.tensor([v]) for v in (1.0, -2.0, 3.0, -50.0)]).item(), 4)
    0.6667

    Notes
    -----
    Runs :func:`velocity.kernels.cge`; equal norms go to the lower index. Vectors holding NaN
    or ±inf are dropped and count against ``f`` (``docs/kernels.md``).
    """

    name: str = "comparative-gradient-elimination"

    def __init__(self, f: int, *, chunk_size: int = 8192) -> None:
        owner = "ComparativeGradientElimination"
        self.f: int = check_value(owner, "f", f, Integer(low=0))
        self.chunk_size: int = check_value(owner, "chunk_size", chunk_size, Integer(low=1))

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", "ComparativeGradientElimination")
        n = x.shape[0]
        if self.f >= n:
            raise ValidationError(
                f"ComparativeGradientElimination: f must satisfy 0 <= f < n; got f={self.f}, n={n}"
            )
        return layout.restore(cge(x, f=self.f))

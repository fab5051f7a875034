"""ByzPy's ``ARC`` on :func:`velocity.kernels.arc`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from velocity._validation import Integer, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.pre_aggregators.base import PreAggregator
from velocity.errors import ValidationError
from velocity.kernels import arc

__all__ = ["ARC"]


class ARC(PreAggregator):
    """Adaptive robust clipping (Allouah et al. 2024): the ``⌊2f(n − f)/n⌋`` largest-norm
    vectors are clipped to the norm of the largest remaining one.

    Parameters
    ----------
    f : int, default 0
        Byzantine vectors tolerated, ``>= 0``; a call needs ``f <= n``. ``f=0`` clips nothing.
    chunk_size : int, default 32
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> out = ARC(f=1).pre_aggregate([torch.tensor([v]) for v in (1.0, 2.0, 3.0, 40.0)])
    >>> [v.item() for v in out]
    [1.0, 2.0, 3.0, 3.0]

    Notes
    -----
    Runs :func:`velocity.kernels.arc` (the count in exact integer arithmetic). Vectors
    holding NaN or ±inf are dropped and count against ``f`` (``docs/kernels.md``).
    """

    name: str = "pre-agg/arc"

    def __init__(self, f: int = 0, *, chunk_size: int = 32) -> None:
        self.f: int = check_value("ARC", "f", f, Integer(low=0))
        self.chunk_size: int = check_value("ARC", "chunk_size", chunk_size, Integer(low=1))

    def pre_aggregate(self, xs: Sequence[Any]) -> list[Any]:
        x, layout = stack(xs, "xs", "ARC")
        n = x.shape[0]
        if self.f > n:
            raise ValidationError(f"ARC: f must be <= the number of vectors; got f={self.f}, n={n}")
        out, _ = arc(x, f=self.f)
        return layout.restore_rows(out)

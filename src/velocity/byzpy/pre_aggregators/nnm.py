"""ByzPy's ``NearestNeighborMixing`` on :func:`velocity.kernels.nnm`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from velocity._validation import Integer, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.pre_aggregators.base import PreAggregator
from velocity.errors import ValidationError
from velocity.kernels import nnm

__all__ = ["NearestNeighborMixing"]


class NearestNeighborMixing(PreAggregator):
    """Nearest-neighbour mixing (Allouah et al. 2023): every vector is replaced by the mean
    of its ``n − f`` nearest vectors, itself included.

    Parameters
    ----------
    f : int
        Byzantine vectors tolerated, ``>= 0``; a call needs ``f < n``.
    feature_chunk_size : int, default 8192
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> out = NearestNeighborMixing(f=1).pre_aggregate(
    ...     [torch.tensor([v]) for v in (0.0, 1.0, 2.0, 100.0)])
    >>> [round(v.item(), 3) for v in out]
    [1.0, 1.0, 1.0, 34.333]

    Notes
    -----
    Runs :func:`velocity.kernels.nnm`; equal distances go to the lower index. Vectors
    holding NaN or ±inf are dropped and count against ``f`` (``docs/kernels.md``).
    """

    name: str = "pre-agg/nnm"

    def __init__(self, f: int, *, feature_chunk_size: int = 8192) -> None:
        owner = "NearestNeighborMixing"
        self.f: int = check_value(owner, "f", f, Integer(low=0))
        self.feature_chunk_size: int = check_value(
            owner, "feature_chunk_size", feature_chunk_size, Integer(low=1)
        )

    def pre_aggregate(self, xs: Sequence[Any]) -> list[Any]:
        x, layout = stack(xs, "xs", "NearestNeighborMixing")
        n = x.shape[0]
        if self.f >= n:
            raise ValidationError(
                f"NearestNeighborMixing: f must satisfy 0 <= f < n; got f={self.f}, n={n}"
            )
        out, _ = nnm(x, f=self.f)
        return layout.restore_rows(out)

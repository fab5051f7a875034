"""ByzPy's ``Clipping`` on :func:`velocity.kernels.clip`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from velocity._validation import Integer, Real, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.pre_aggregators.base import PreAggregator
from velocity.kernels import clip

__all__ = ["Clipping"]


class Clipping(PreAggregator):
    """Static norm clipping: every vector ``x`` becomes ``x · min(1, threshold / ‖x‖)``.

    Parameters
    ----------
    threshold : float, default 2.0
        The largest norm kept, ``>= 0``.
    chunk_size : int, default 32
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> [v.tolist() for v in Clipping(threshold=1.0).pre_aggregate([torch.tensor([3.0, 4.0])])]
    [[0.6000000238418579, 0.800000011920929]]

    Notes
    -----
    Runs :func:`velocity.kernels.clip`. Vectors holding NaN or ±inf are dropped
    (``docs/kernels.md``), so fewer vectors may come back.
    """

    name: str = "pre-agg/clipping"

    def __init__(self, threshold: float = 2.0, *, chunk_size: int = 32) -> None:
        self.threshold: float = check_value("Clipping", "threshold", threshold, Real(low=0.0))
        self.chunk_size: int = check_value("Clipping", "chunk_size", chunk_size, Integer(low=1))

    def pre_aggregate(self, xs: Sequence[Any]) -> list[Any]:
        x, layout = stack(xs, "xs", "Clipping")
        out, _ = clip(x, threshold=self.threshold)
        return layout.restore_rows(out)

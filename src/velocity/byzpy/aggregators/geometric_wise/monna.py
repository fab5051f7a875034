"""ByzPy's ``MoNNA`` on :func:`velocity.kernels.monna`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from velocity._validation import Integer, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.aggregators.base import Aggregator
from velocity.errors import ValidationError
from velocity.kernels import monna

__all__ = ["MoNNA"]


class MoNNA(Aggregator):
    """MoNNA (Farhadkhani et al. 2023): the mean of the ``n − f`` vectors nearest to the
    trusted vector ``reference_index``, that vector included.

    Parameters
    ----------
    f : int
        Vectors left out, ``>= 0``; a call needs ``2f < n``.
    reference_index : int, default 0
        The trusted vector's position, ``>= 0``; a call needs it ``< n``.
    chunk_size : int, default 32
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> agg = MoNNA(f=1)
    >>> agg.aggregate([torch.tensor([v]) for v in (0.0, 1.0, 3.0, 100.0)]).tolist()
    [1.3333333730697632]

    Notes
    -----
    Runs :func:`velocity.kernels.monna`. Vectors holding NaN or ±inf are dropped and count
    against ``f``; a non-finite reference vector is refused (``docs/kernels.md``).
    """

    name: str = "monna"

    def __init__(self, f: int, *, reference_index: int = 0, chunk_size: int = 32) -> None:
        self.f: int = check_value("MoNNA", "f", f, Integer(low=0))
        self.reference_index: int = check_value(
            "MoNNA", "reference_index", reference_index, Integer(low=0)
        )
        self.chunk_size: int = check_value("MoNNA", "chunk_size", chunk_size, Integer(low=1))

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", "MoNNA")
        n = x.shape[0]
        if 2 * self.f >= n:
            raise ValidationError(f"MoNNA: f must satisfy 2f < n; got f={self.f}, n={n}")
        if self.reference_index >= n:
            raise ValidationError(
                f"MoNNA: reference_index must be between 0 and n - 1 = {n - 1}; "
                f"got {self.reference_index}"
            )
        return layout.restore(monna(x, f=self.f, reference_index=self.reference_index))

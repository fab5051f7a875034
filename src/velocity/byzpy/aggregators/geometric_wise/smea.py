"""ByzPy's ``SMEA`` on :func:`velocity.kernels.smea`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from velocity._validation import Integer, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.aggregators.base import Aggregator
from velocity.errors import ValidationError
from velocity.kernels import smea

__all__ = ["SMEA"]


class SMEA(Aggregator):
    """Smallest maximum eigenvalue averaging (Allouah et al. 2023): the mean of the ``n − f``
    vectors whose empirical covariance has the smallest largest eigenvalue, by exact search.

    Parameters
    ----------
    f : int
        Vectors left out, ``>= 0``; a call needs ``2f < n``.
    chunk_size : int, default 256
        A scheduling hint kept for ByzPy compatibility (positive int).

    Examples
    --------
    >>> import torch
    >>> pts = [torch.tensor(p) for p in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [30.0, 30.0])]
    >>> [round(v, 4) for v in SMEA(f=1).aggregate(pts).tolist()]
    [0.3333, 0.3333]

    Notes
    -----
    Runs :func:`velocity.kernels.smea` with no cap on the C(n, f) subsets (ByzPy has none).
    Vectors holding NaN or ±inf are dropped and count against ``f`` (``docs/kernels.md``).
    """

    name: str = "smea"

    def __init__(self, f: int, *, chunk_size: int = 256) -> None:
        self.f: int = check_value("SMEA", "f", f, Integer(low=0))
        self.chunk_size: int = check_value("SMEA", "chunk_size", chunk_size, Integer(low=1))

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", "SMEA")
        n = x.shape[0]
        if 2 * self.f >= n:
            raise ValidationError(f"SMEA: f must satisfy 2f < n; got f={self.f}, n={n}")
        return layout.restore(smea(x, f=self.f, max_subsets=math.comb(n, self.f)))

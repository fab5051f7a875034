"""ByzPy's ``CAF`` on :func:`velocity.kernels.caf`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from velocity._validation import Integer, check_value
from velocity.byzpy._tensors import stack
from velocity.byzpy.aggregators.base import Aggregator
from velocity.errors import ValidationError
from velocity.kernels import caf

__all__ = ["CAF"]


class CAF(Aggregator):
    """Covariance-bound agnostic filter (Allouah, Guerraoui & Stephan 2025): down-weight the
    vectors along the top direction of the weighted covariance until the weights sum to
    ``n − 2f``, and return the weighted mean seen with the smallest top eigenvalue.

    Parameters
    ----------
    f : int
        Byzantine vectors tolerated, ``>= 0``; a call needs ``2f < n``.
    chunk_size : int, default 256
        A scheduling hint kept for ByzPy compatibility (positive int).
    power_iters : int, default 3
        Power-iteration steps that approximate the top eigenvector, ``>= 1``.

    Examples
    --------
    >>> import torch
    >>> pts = [torch.tensor(p) for p in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0],
    ...                                  [60.0, -60.0])]
    >>> [round(v, 2) for v in CAF(f=1).aggregate(pts).tolist()]
    [0.5, 0.5]

    Notes
    -----
    Runs :func:`velocity.kernels.caf` in its power-iteration mode (``power_iters``), ByzPy's
    approximation of the eigenpair, from ByzPy's fixed starting direction: a standard normal
    vector from ``numpy.random.default_rng(0)`` (so results match ByzPy's; no global random
    state is touched). Vectors holding NaN or ±inf are dropped and count against ``f``
    (``docs/kernels.md``).
    """

    name: str = "caf"

    def __init__(self, f: int, *, chunk_size: int = 256, power_iters: int = 3) -> None:
        self.f: int = check_value("CAF", "f", f, Integer(low=0))
        self.chunk_size: int = check_value("CAF", "chunk_size", chunk_size, Integer(low=1))
        self.power_iters: int = check_value("CAF", "power_iters", power_iters, Integer(low=1))

    def aggregate(self, gradients: Sequence[Any]) -> Any:
        x, layout = stack(gradients, "gradients", "CAF")
        n, d = x.shape
        if 2 * self.f >= n:
            raise ValidationError(f"CAF: f must satisfy 2f < n; got f={self.f}, n={n}")
        start = torch.from_numpy(np.random.default_rng(0).normal(size=d))
        out = caf(x, f=self.f, power_iters=self.power_iters, power_start=start.to(x.dtype))
        return layout.restore(out)
